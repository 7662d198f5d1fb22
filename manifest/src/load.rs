//! Reading a manifest file into the services that can run and the ones that cannot.
//!
//! A syntax error (with line and column) or a wrong format version rejects the file.
//! Anything wrong inside one service rejects only that service: it is returned in
//! [`Loaded::rejected`] with every problem found, and PID 1 shows it as Failed while the
//! other services boot.

use crate::schema::{Kind, Manifest, Service, MANIFEST_VERSION};
use crate::validate::{validate_with, Problem};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: syntax error: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", .problems.iter().map(|p| p.describe(.path)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// A service entry that cannot run, with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry's name, or `#N` (its index) when it has none.
    pub name: String,
    pub kind: Kind,
    pub problems: Vec<Problem>,
}

impl Rejected {
    /// One line per problem, each naming file, service and field.
    pub fn describe(&self, file: &str) -> String {
        self.problems
            .iter()
            .map(|p| p.describe(file))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The outcome of loading: the runnable services (in file order) and the rejected ones.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: String,
    pub manifest: Manifest,
    pub rejected: Vec<Rejected>,
}

/// A manifest file larger than this is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let io = |source| LoadError::Io {
        path: shown.clone(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(LoadError::Invalid {
            path: shown,
            problems: vec![Problem::new(
                "",
                "(file)",
                format!("larger than the maximum of {MAX_FILE_BYTES} bytes"),
            )],
        });
    }
    load_str(&text, &shown)
}

/// Parses and validates manifest text; `path` is used only in messages.
pub fn load_str(text: &str, path: &str) -> Result<Loaded, LoadError> {
    load_str_beside(text, path, &BTreeSet::new())
}

/// [`load_str`] for a file whose services may also depend on `outside` (the image's
/// manifest, for the applied set).
pub fn load_str_beside(
    text: &str,
    path: &str,
    outside: &BTreeSet<String>,
) -> Result<Loaded, LoadError> {
    let value: Value = serde_json::from_str(text).map_err(|e| LoadError::Syntax {
        path: path.to_string(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let invalid = |field: &str, message: String| LoadError::Invalid {
        path: path.to_string(),
        problems: vec![Problem::new("", field, message)],
    };
    let Value::Object(top) = value else {
        return Err(invalid(
            "(top level)",
            "must be an object with \"version\" and \"services\"".into(),
        ));
    };
    let mut top_problems = Vec::new();
    for key in top.keys() {
        if key != "version" && key != "services" {
            top_problems.push(Problem::new(
                "",
                key.clone(),
                "unknown field (expected \"version\" or \"services\")",
            ));
        }
    }
    match top.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(MANIFEST_VERSION) => {}
        Some(v) => top_problems.push(Problem::new(
            "",
            "version",
            format!("version {v} is not supported (this build reads version {MANIFEST_VERSION})"),
        )),
        None => top_problems.push(Problem::new(
            "",
            "version",
            format!("missing (use {MANIFEST_VERSION})"),
        )),
    }
    let entries = match top.get("services") {
        Some(Value::Array(a)) if a.len() > crate::validate::limits::SERVICES => {
            top_problems.push(Problem::new(
                "",
                "services",
                format!(
                    "{} entries is above the maximum of {}",
                    a.len(),
                    crate::validate::limits::SERVICES
                ),
            ));
            Vec::new()
        }
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            top_problems.push(Problem::new("", "services", "must be a list"));
            Vec::new()
        }
        None => {
            top_problems.push(Problem::new("", "services", "missing"));
            Vec::new()
        }
    };
    if !top_problems.is_empty() {
        return Err(LoadError::Invalid {
            path: path.to_string(),
            problems: top_problems,
        });
    }

    let mut services = Vec::new();
    let mut rejected = Vec::new();
    let mut unparsed_names = outside.clone();
    let mut early: Vec<Problem> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{index}"));
        let kind = match entry.get("kind").and_then(Value::as_str) {
            Some("onboot") => Kind::Onboot,
            _ => Kind::Service,
        };
        match deserialize_entry(entry, &name) {
            Ok(svc) => services.push(svc),
            // Parsed once its bad values were taken out: it takes part in the checks
            // between services (dependencies, cycles), and is rejected in any case.
            Err((Some(svc), problems)) if svc.name == name => {
                early.extend(problems);
                services.push(svc);
            }
            Err((_, problems)) => {
                unparsed_names.insert(name.clone());
                rejected.push(Rejected {
                    problems,
                    name,
                    kind,
                });
            }
        }
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        services,
    };
    let reported: BTreeSet<(String, String)> = early
        .iter()
        .map(|p| (p.service.clone(), p.field.clone()))
        .collect();
    let mut problems = early;
    problems.extend(
        validate_with(&manifest, &unparsed_names)
            .into_iter()
            .filter(|p| !reported.contains(&(p.service.clone(), p.field.clone()))),
    );
    let bad: BTreeSet<&str> = problems.iter().map(|p| p.service.as_str()).collect();
    let (good, broken): (Vec<Service>, Vec<Service>) = manifest
        .services
        .iter()
        .cloned()
        .partition(|s| !bad.contains(s.name.as_str()));
    // A duplicated name rejects every entry by that name: which one was meant is a guess.
    let mut broken_names = BTreeSet::new();
    for svc in broken {
        if broken_names.insert(svc.name.clone()) {
            rejected.push(Rejected {
                problems: problems
                    .iter()
                    .filter(|p| p.service == svc.name)
                    .cloned()
                    .collect(),
                name: svc.name,
                kind: svc.kind,
            });
        }
    }
    Ok(Loaded {
        path: path.to_string(),
        manifest: Manifest {
            version: MANIFEST_VERSION,
            services: good,
        },
        rejected,
    })
}

/// How many values of one entry are reported before the rest of it is given up on.
const MAX_PROBLEMS_PER_ENTRY: usize = 32;

/// A service entry that did not parse: what could be read of it once its bad values were
/// taken out (if anything), and the problems.
type Unparsed = (Option<Service>, Vec<Problem>);

/// Deserializes one service entry. serde stops at the first bad value; to report every
/// problem at once, the bad value is taken out of the entry and the entry is read again,
/// until it parses (the rest of it is then checked with the other services) or a problem
/// cannot be taken out (a missing required field).
// The Err carries the partly parsed entry back to the one caller, once per entry at load.
#[allow(clippy::result_large_err)]
fn deserialize_entry(mut entry: Value, name: &str) -> Result<Service, Unparsed> {
    let mut problems = Vec::new();
    // Array elements already taken out, per array path, by their original index.
    let mut removed: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    loop {
        match serde_path_to_error::deserialize::<_, Service>(entry.clone()) {
            Ok(svc) if problems.is_empty() => return Ok(svc),
            Ok(svc) => return Err((Some(svc), problems)),
            Err(err) => {
                let segments: Vec<serde_path_to_error::Segment> =
                    err.path().iter().cloned().collect();
                let (mut field, message) = describe_serde(&err);
                let taken = take_out(&mut entry, &segments, &mut removed);
                if let Some(original) = taken.as_ref().filter(|t| t.contains('[')) {
                    field = original.clone();
                }
                if problems.iter().any(|p| p.field == field) {
                    // A value taken out is now missing: nothing new to say.
                    return Err((None, problems));
                }
                problems.push(Problem::new(name, field, message));
                if taken.is_none() || problems.len() >= MAX_PROBLEMS_PER_ENTRY {
                    return Err((None, problems));
                }
            }
        }
    }
}

/// Removes the value at `path` from `entry`; returns the path with array indexes as they
/// were in the file, or `None` when there is nothing there to remove.
fn take_out(
    entry: &mut Value,
    path: &[serde_path_to_error::Segment],
    removed: &mut std::collections::BTreeMap<String, Vec<usize>>,
) -> Option<String> {
    use serde_path_to_error::Segment;
    let (last, parents) = path.split_last()?;
    let mut shown = String::new();
    let mut node = entry;
    for seg in parents {
        match seg {
            Segment::Map { key } => {
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(key);
                node = node.get_mut(key.as_str())?;
            }
            Segment::Seq { index } => {
                let orig = original_index(removed.get(&shown), *index);
                node = node.get_mut(*index)?;
                shown.push_str(&format!("[{orig}]"));
            }
            _ => return None,
        }
    }
    match last {
        Segment::Map { key } => {
            node.as_object_mut()?.remove(key.as_str())?;
            if !shown.is_empty() {
                shown.push('.');
            }
            shown.push_str(key);
        }
        Segment::Seq { index } => {
            let list = node.as_array_mut()?;
            if *index >= list.len() {
                return None;
            }
            list.remove(*index);
            let gone = removed.entry(shown.clone()).or_default();
            let orig = original_index(Some(gone), *index);
            gone.push(orig);
            gone.sort_unstable();
            shown.push_str(&format!("[{orig}]"));
        }
        _ => return None,
    }
    Some(shown)
}

/// The index in the file of what is now element `index`, given the original indexes of the
/// elements already removed from that array.
fn original_index(removed: Option<&Vec<usize>>, index: usize) -> usize {
    let mut orig = index;
    for r in removed.map(Vec::as_slice).unwrap_or_default() {
        if *r <= orig {
            orig += 1;
        }
    }
    orig
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// The field path and message of a per-service deserialization error. For an unknown or
/// missing field the field is named inside the message; it is moved into the path.
fn describe_serde(err: &serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    let mut path = err.path().to_string();
    if path == "." {
        path.clear();
    }
    let msg = strip_position(&err.inner().to_string());
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some(end) = rest.find('`') {
                let field = &rest[..end];
                // serde_path_to_error's path may already end in the unknown field.
                let full = if path.is_empty() || path == field {
                    field.to_string()
                } else if path.ends_with(&format!(".{field}")) {
                    path.clone()
                } else {
                    format!("{path}.{field}")
                };
                let what = if prefix.starts_with("unknown") {
                    format!("unknown field{}", &rest[end + 1..])
                } else {
                    "required field is missing".to_string()
                };
                return (full, what);
            }
        }
    }
    if path.is_empty() {
        path = "(entry)".into();
    }
    (path, msg)
}
