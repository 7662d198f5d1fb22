//! The appliance file: one hand-written file (JSON with comments) that says what goes into an
//! image — identity for updates, kernel additions, which system containers, the user's own
//! services with their roots from OCI images or rootfs recipes, extra files, the default
//! boot config and where the outputs go. `docs/appliance.md` documents every field.
//!
//! [`load`] reads and checks everything that can be checked without building: unknown
//! fields (with line and column), names, paths that must exist, and the service entries with
//! the manifest crate's own validation. [`Appliance::plan`] lists the container roots to
//! assemble; [`import_images`] imports the OCI-image ones and completes their service entries
//! from the image configs.

mod images;

pub use images::{find_program, import_images, ImportedServices};

use crate::jsonc;
use crate::oci::{ImageRef, OciError};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// Where a container's root is mounted from on the OS root.
pub fn container_root(name: &str) -> String {
    format!("/containers/{name}/rootfs")
}

/// What goes in `args` while a service's command is still to come from its image.
const ARGS_FROM_IMAGE: &str = "(from the image config)";

/// PATH used to find a bare `args[0]` when the service sets none (init's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Directories a container root must have: the runtime mounts over them, and the root is
/// read-only at run time.
pub const MOUNT_POINTS: &[&str] = &["/proc", "/dev", "/sys", "/tmp", "/run"];

#[derive(Debug, thiserror::Error)]
pub enum ApplianceError {
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", .problems.iter().map(|p| format!("{}: {p}", .path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// The OCI error is part of the message, not a `source`: `{:#}` would print it twice.
    #[error("{}: service {service:?}: {error}", .path.display())]
    Image {
        path: PathBuf,
        service: String,
        error: Box<OciError>,
    },
}

pub type Result<T, E = ApplianceError> = std::result::Result<T, E>;

/// The appliance file as written (paths still relative to it), plus where it was read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// `[a-z0-9][a-z0-9_.-]*`, at most 63 bytes.
    pub name: String,
    /// The image's version, compared by updates.
    pub version: String,
    /// Update bundles for another `compatible` id are refused.
    pub compatible: String,
    #[serde(default)]
    pub kernel: Kernel,
    /// Names of folders in `system-containers/`, in manifest order.
    #[serde(default)]
    pub system_containers: Vec<String>,
    #[serde(default)]
    pub services: Vec<UserService>,
    #[serde(default)]
    pub files: Vec<ExtraFile>,
    #[serde(default)]
    pub boot_config: Option<BootConfig>,
    #[serde(default)]
    pub outputs: Outputs,
    /// The appliance file itself (set by [`load`]).
    #[serde(skip)]
    pub path: PathBuf,
    /// The `system-containers/` folder used (found above the appliance file).
    #[serde(skip)]
    pub system_containers_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// More kernel config fragments (`*.config`), after those in `kernel-config/`.
    #[serde(default)]
    pub fragments: Vec<PathBuf>,
    /// Appended to the kernel command line.
    #[serde(default)]
    pub cmdline: String,
}

/// A service of the user's: an ordinary manifest entry plus `from`, where its root comes
/// from. `root` is set by the builder.
#[derive(Debug, Clone, Deserialize)]
pub struct UserService {
    pub from: RootSource,
    #[serde(flatten)]
    pub entry: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RootSource {
    /// An OCI image: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`,
    /// `docker://HOST[:PORT]/NAME[:TAG]`, or a bare path.
    Image(String),
    /// A folder with a `rootfs.json` recipe, as in `system-containers/<name>/`.
    Recipe(PathBuf),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Absolute path in the OS root.
    pub dest: String,
    /// A file next to the appliance file (relative paths are from its folder).
    #[serde(default)]
    pub src: Option<PathBuf>,
    /// Or the contents, inline.
    #[serde(default)]
    pub text: Option<String>,
    /// Octal, e.g. `"644"`; default 644 (755 for an executable `src`).
    #[serde(default)]
    pub mode: Option<String>,
}

/// The boot config the image boots with when none is handed to it (same format as the one
/// `cargo xtask run` writes; see rootfs/README.md). No secrets: public keys only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorized_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    Dhcp,
    Static {
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dns: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Output folder; default `build/<name>` beside the workspace's `system-containers/`
    /// (or the appliance file when there is none).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// One container root to assemble, with its (not yet complete) manifest entry.
#[derive(Debug, Clone)]
pub struct PlannedContainer {
    pub name: String,
    pub source: PlannedSource,
    /// The manifest entry; for an image, the fields it leaves out come from the image.
    pub entry: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedSource {
    /// A system container: `system-containers/<name>/` (service.json + rootfs.json).
    System(PathBuf),
    /// A user service with a recipe folder.
    Recipe(PathBuf),
    Image(ImageRef),
}

impl fmt::Display for PlannedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlannedSource::System(d) => write!(f, "system container {}", d.display()),
            PlannedSource::Recipe(d) => write!(f, "recipe {}", d.join("rootfs.json").display()),
            PlannedSource::Image(i) => write!(f, "image {i}"),
        }
    }
}

/// Reads and checks an appliance file; `system-containers/` is the nearest one in a folder
/// above it.
pub fn load(path: &Path) -> Result<Appliance> {
    let found = path.canonicalize().ok().and_then(|p| {
        p.ancestors()
            .skip(1)
            .map(|d| d.join("system-containers"))
            .find(|d| d.is_dir())
    });
    load_with(path, found.as_deref())
}

/// [`load`] with the `system-containers/` folder given.
pub fn load_with(path: &Path, system_containers: Option<&Path>) -> Result<Appliance> {
    let text = fs::read_to_string(path).map_err(|source| ApplianceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut appliance = parse(&text, path)?;
    appliance.path = path.to_path_buf();
    appliance.system_containers_dir = system_containers.map(Path::to_path_buf);
    let problems = appliance.problems();
    if !problems.is_empty() {
        return Err(ApplianceError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(appliance)
}

/// Parses appliance text (comments allowed); `path` is used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Appliance> {
    let syntax = |line, column, message| ApplianceError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let json = jsonc::strip_comments(text)
        .map_err(|(l, c)| syntax(l, c, "comment never closed (missing */)".into()))?;
    let mut de = serde_json::Deserializer::from_str(&json);
    let appliance: Appliance = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let inner = e.inner();
        let field = e.path().to_string();
        let msg = strip_position(&inner.to_string());
        let message = if field == "." || field.is_empty() {
            msg
        } else {
            format!("{field}: {msg}")
        };
        syntax(inner.line(), inner.column(), message)
    })?;
    de.end()
        .map_err(|e| syntax(e.line(), e.column(), strip_position(&e.to_string())))?;
    Ok(appliance)
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// Paths in the OS root that the builder writes itself, and /sbin/init: PID 1 is the UKI's
/// initramfs, and a file there would be a second init that never runs.
fn reserved(dest: &str) -> bool {
    dest == "/sbin/init"
        || dest == "/usr/bin/sysctr"
        || dest.starts_with("/etc/sysctr/")
        || dest == "/containers"
        || dest.starts_with("/containers/")
}

impl Appliance {
    /// The folder relative paths in the file are taken from.
    pub fn base(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        self.base().join(p)
    }

    /// The extra kernel config fragments, as paths to read.
    pub fn kernel_fragments(&self) -> Vec<PathBuf> {
        self.kernel
            .fragments
            .iter()
            .map(|f| self.resolve(f))
            .collect()
    }

    /// The output folder.
    pub fn output_dir(&self) -> PathBuf {
        match &self.outputs.dir {
            Some(d) => self.resolve(d),
            None => match &self.system_containers_dir {
                Some(sc) => sc.with_file_name("build").join(&self.name),
                None => self.base().join("build").join(&self.name),
            },
        }
    }

    /// Every problem found, each naming its field.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_name(&self.name) {
            p.push(format!(
                "name: {:?} must be [a-z0-9][a-z0-9_.-]*, at most 63 bytes",
                self.name
            ));
        }
        let id_ok = |s: &str, extra: &[u8]| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
        };
        if !id_ok(&self.version, b".+-_~") {
            p.push(format!(
                "version: {:?} must be non-empty [A-Za-z0-9.+-_~], e.g. \"1.2.0\"",
                self.version
            ));
        }
        if !id_ok(&self.compatible, b".-_") {
            p.push(format!(
                "compatible: {:?} must be non-empty [A-Za-z0-9._-], e.g. \"org.example.web\"",
                self.compatible
            ));
        }
        for (i, f) in self.kernel.fragments.iter().enumerate() {
            let full = self.resolve(f);
            if f.extension().is_none_or(|e| e != "config") {
                p.push(format!(
                    "kernel.fragments[{i}]: {} must end in .config",
                    f.display()
                ));
            } else if !full.is_file() {
                p.push(format!(
                    "kernel.fragments[{i}]: {} does not exist",
                    full.display()
                ));
            }
        }
        if self.kernel.cmdline.contains(['\n', '\r']) {
            p.push("kernel.cmdline: must be one line".into());
        }
        let mut seen = BTreeSet::new();
        for (i, name) in self.system_containers.iter().enumerate() {
            if !seen.insert(name.as_str()) {
                p.push(format!("system_containers[{i}]: {name:?} is listed twice"));
            }
            match &self.system_containers_dir {
                None => p.push(format!(
                    "system_containers[{i}]: no system-containers/ folder above {}",
                    self.path.display()
                )),
                Some(dir) => {
                    let d = dir.join(name);
                    if !valid_name(name)
                        || !d.join("service.json").is_file()
                        || !d.join("rootfs.json").is_file()
                    {
                        let known: Vec<String> = fs::read_dir(dir)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .filter(|e| e.path().join("service.json").is_file())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        p.push(format!(
                            "system_containers[{i}]: {name:?} is not a system container in {} (known: {})",
                            dir.display(),
                            known.join(", ")
                        ));
                    }
                }
            }
        }
        for (i, svc) in self.services.iter().enumerate() {
            let label = match svc.entry.get("name").and_then(Value::as_str) {
                Some(n) => format!("services[{i}] ({n:?})"),
                None => format!("services[{i}]"),
            };
            if svc.entry.contains_key("root") {
                p.push(format!(
                    "{label}.root: set by the builder ({}); leave it out",
                    container_root("NAME")
                ));
            }
            match &svc.from {
                RootSource::Image(s) => match ImageRef::parse(s, &self.base()) {
                    Err(e) => p.push(format!("{label}.from.image: {e}")),
                    Ok(
                        ImageRef::Layout { dir: f, .. }
                        | ImageRef::OciArchive { file: f, .. }
                        | ImageRef::DockerArchive { file: f, .. },
                    ) if !f.exists() => p.push(format!(
                        "{label}.from.image: {} does not exist",
                        f.display()
                    )),
                    // A registry is only reached when the image is imported.
                    Ok(_) => {}
                },
                RootSource::Recipe(d) => {
                    let r = self.resolve(d).join("rootfs.json");
                    if !r.is_file() {
                        p.push(format!(
                            "{label}.from.recipe: {} does not exist",
                            r.display()
                        ));
                    }
                }
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            let d = Path::new(&f.dest);
            if !d.is_absolute() || d.components().any(|c| matches!(c, Component::ParentDir)) {
                p.push(format!(
                    "files[{i}].dest: {:?} must be absolute without ..",
                    f.dest
                ));
            } else if reserved(&f.dest) {
                p.push(format!(
                    "files[{i}].dest: {:?} is written by the builder",
                    f.dest
                ));
            }
            match (&f.src, &f.text) {
                (Some(s), None) => {
                    if !self.resolve(s).is_file() {
                        p.push(format!(
                            "files[{i}].src: {} does not exist",
                            self.resolve(s).display()
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => p.push(format!("files[{i}]: give exactly one of src and text")),
            }
            if let Some(m) = &f.mode {
                if u32::from_str_radix(m, 8).map_or(true, |m| m > 0o7777) {
                    p.push(format!(
                        "files[{i}].mode: {m:?} is not an octal mode like \"644\""
                    ));
                }
            }
        }
        if p.is_empty() {
            p.extend(self.manifest_problems());
        }
        p
    }

    /// The service entries checked by the manifest crate, as one manifest: the system
    /// containers' and the user's (command placeholders where an image will give it).
    fn manifest_problems(&self) -> Vec<String> {
        let plan = match self.plan(false) {
            Ok(plan) => plan,
            Err(e) => return vec![e.to_string()],
        };
        let services: Vec<Value> = plan
            .iter()
            .map(|c| {
                let mut e = c.entry.clone();
                if matches!(c.source, PlannedSource::Image(_)) && !e.contains_key("args") {
                    e.insert("args".into(), serde_json::json!([ARGS_FROM_IMAGE]));
                }
                Value::Object(e)
            })
            .collect();
        manifest_problems(&services, &self.path)
    }

    /// The container roots to assemble, in manifest order: the system containers, then the
    /// user's services. `dev` takes a system container's `service.dev.json` where it has one.
    pub fn plan(&self, dev: bool) -> Result<Vec<PlannedContainer>> {
        let mut out = Vec::new();
        let invalid = |problems: Vec<String>| ApplianceError::Invalid {
            path: self.path.clone(),
            problems,
        };
        for name in &self.system_containers {
            let dir = self
                .system_containers_dir
                .as_ref()
                .ok_or_else(|| {
                    invalid(vec![format!(
                        "system_containers: no system-containers/ folder for {name:?}"
                    )])
                })?
                .join(name);
            let dev_file = dir.join("service.dev.json");
            let file = if dev && dev_file.is_file() {
                dev_file
            } else {
                dir.join("service.json")
            };
            let text = fs::read_to_string(&file).map_err(|source| ApplianceError::Read {
                path: file.clone(),
                source,
            })?;
            let entry: Map<String, Value> =
                serde_json::from_str(&text).map_err(|e| ApplianceError::Syntax {
                    path: file.clone(),
                    line: e.line(),
                    column: e.column(),
                    message: strip_position(&e.to_string()),
                })?;
            let entry_name = entry.get("name").and_then(Value::as_str).unwrap_or(name);
            out.push(PlannedContainer {
                name: entry_name.to_string(),
                source: PlannedSource::System(dir),
                entry,
            });
        }
        for (i, svc) in self.services.iter().enumerate() {
            let name = svc
                .entry
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("#{}", self.system_containers.len() + i));
            let mut entry = svc.entry.clone();
            entry.insert("root".into(), container_root(&name).into());
            let source = match &svc.from {
                RootSource::Image(s) => PlannedSource::Image(
                    ImageRef::parse(s, &self.base())
                        .map_err(|e| invalid(vec![format!("services[{i}].from.image: {e}")]))?,
                ),
                RootSource::Recipe(d) => PlannedSource::Recipe(self.resolve(d)),
            };
            out.push(PlannedContainer {
                name,
                source,
                entry,
            });
        }
        Ok(out)
    }
}

/// Problems the manifest crate finds in these entries, as lines naming the appliance file,
/// the service and the field.
fn manifest_problems(services: &[Value], path: &Path) -> Vec<String> {
    let text = serde_json::json!({ "version": manifest::MANIFEST_VERSION, "services": services })
        .to_string();
    let shown = path.display().to_string();
    match manifest::load_str(&text, &shown) {
        Err(e) => vec![e.to_string()],
        Ok(loaded) => loaded
            .rejected
            .iter()
            .flat_map(|r| r.problems.iter().map(|p| p.to_string()))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
