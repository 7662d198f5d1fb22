//! The bench's results as data. A section records every figure it measures in [`Figures`]
//! while it writes its markdown; [`Doc`] keeps both, and rewrites `RESULTS.md` and
//! `results.json` (next to it) after every section, so an interrupted run still leaves what
//! it measured, in both forms.

use super::*;
use serde::Serialize;

/// One measured figure: a timing (median, p95 and min over `runs`, in ms) or a single value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct Figure {
    pub(super) name: String,
    pub(super) unit: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) runs: Option<usize>,
    /// The median for a timing, the value itself otherwise.
    pub(super) value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) min: Option<f64>,
}

/// The figures of one section, in the order measured.
#[derive(Debug, Default, Serialize)]
#[serde(transparent)]
pub(super) struct Figures(pub(super) Vec<Figure>);

impl Figures {
    /// Records a timing of microsecond samples' statistics, and returns its markdown row
    /// (`| what | runs | median | p95 | min |`, in ms).
    pub(super) fn row(&mut self, what: &str, s: Stats) -> String {
        self.timing(what, s);
        row(what, s)
    }

    /// Records a timing (statistics of microsecond samples), in ms.
    pub(super) fn timing(&mut self, name: &str, s: Stats) {
        self.0.push(Figure {
            name: name.to_string(),
            unit: "ms",
            runs: Some(s.n),
            value: s.median / 1000.0,
            p95: Some(s.p95 / 1000.0),
            min: Some(s.min / 1000.0),
        });
    }

    /// Records a single value.
    pub(super) fn value(&mut self, name: &str, unit: &'static str, value: f64) {
        self.0.push(Figure {
            name: name.to_string(),
            unit,
            runs: None,
            value,
            p95: None,
            min: None,
        });
    }
}

/// What a section hands back: its markdown and its figures.
#[derive(Debug, Default)]
pub(super) struct Section {
    pub(super) markdown: String,
    pub(super) figures: Figures,
}

impl Section {
    pub(super) fn new(markdown: String, figures: Figures) -> Section {
        Section { markdown, figures }
    }
}

/// A section's entry in results.json.
#[derive(Debug, Serialize)]
struct SectionRecord {
    name: String,
    /// `measured`, `failed` (with `error`) or `skipped`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    figures: Figures,
}

/// Runs one section; an error becomes a note in the results, not the end of the run.
pub(super) fn run_section(doc: &mut Doc, name: &str, f: impl FnOnce() -> Result<Section>) {
    eprintln!("xtask: bench: {name}");
    match f() {
        Ok(s) => doc.push(name, "measured", None, s),
        Err(e) => {
            let text = format!("## {name}\n\nNot measured: {e:#}\n");
            doc.push(
                name,
                "failed",
                Some(format!("{e:#}")),
                Section::new(text, Figures::default()),
            )
        }
    }
}

/// Sections of bench/RESULTS.md written by another command, kept when the bench rewrites
/// the file: `cargo xtask powercut`'s table (boot-tests/tests/powercut.rs).
const KEPT_SECTIONS: &[&str] = &["## Guest (QEMU): power cuts during an update"];

/// The [`KEPT_SECTIONS`] of `old`, each up to the next `## ` heading.
fn kept_sections(old: &str) -> String {
    let mut kept = String::new();
    for title in KEPT_SECTIONS {
        if let Some(start) = old.find(title) {
            let body = &old[start + title.len()..];
            let end = body
                .find("\n## ")
                .map_or(old.len(), |i| start + title.len() + i + 1);
            kept.push('\n');
            kept.push_str(old[start..end].trim_end());
            kept.push('\n');
        }
    }
    kept
}

/// The results document: the markdown (printed as it grows) and the JSON record.
pub(super) struct Doc {
    path: PathBuf,
    text: String,
    /// [`KEPT_SECTIONS`] of the file as it was, carried over at its end.
    kept: String,
    command: String,
    /// The [`SectionRecord`]s as JSON, so a record kept from an earlier results.json
    /// (`--only`) is carried over as it was.
    sections: Vec<Value>,
}

impl Doc {
    /// `path` is the markdown file; the JSON goes to `results.json` beside it.
    pub(super) fn new(path: &Path, header: String, command: String) -> Doc {
        print!("{header}");
        let d = Doc {
            path: path.to_path_buf(),
            text: header,
            kept: kept_sections(&fs::read_to_string(path).unwrap_or_default()),
            command,
            sections: Vec::new(),
        };
        d.save();
        d
    }

    /// Adds a section that measures nothing here (skipped, or a fixed note).
    pub(super) fn note(&mut self, name: &str, markdown: &str) {
        self.push(
            name,
            "skipped",
            None,
            Section::new(markdown.to_string(), Figures::default()),
        );
    }

    /// Free text at the end of the markdown only.
    pub(super) fn text(&mut self, markdown: &str) {
        println!("{markdown}");
        self.text.push('\n');
        self.text.push_str(markdown);
        self.save();
    }

    fn push(&mut self, name: &str, status: &'static str, error: Option<String>, s: Section) {
        let record = SectionRecord {
            name: name.to_string(),
            status,
            error,
            figures: s.figures,
        };
        self.sections
            .push(serde_json::to_value(record).expect("JSON of plain data"));
        self.text(&s.markdown);
    }

    /// A section not run this time (`--only`), kept as the earlier run left it: its
    /// markdown and its results.json entry (`record`, None when that file had none).
    pub(super) fn keep(&mut self, markdown: &str, record: Option<Value>) {
        if let Some(r) = record {
            self.sections.push(r);
        }
        if !markdown.is_empty() {
            self.text(markdown);
        }
    }

    /// This run's figures, for the comparison: only the sections run this time.
    pub(super) fn entries(&self, run: &[&str]) -> Vec<super::compare::Entry> {
        super::compare::entries(&self.json())
            .into_iter()
            .filter(|e| run.contains(&e.section.as_str()))
            .collect()
    }

    pub(super) fn json_path(&self) -> PathBuf {
        self.path.with_file_name("results.json")
    }

    fn json(&self) -> Value {
        json!({
            "command": self.command,
            "markdown": self.path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "sections": self.sections,
        })
    }

    fn save(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let json = serde_json::to_string_pretty(&self.json()).expect("JSON of plain data");
        let markdown = format!("{}{}", self.text, self.kept);
        for (path, text) in [(self.path.clone(), &markdown), (self.json_path(), &json)] {
            if let Err(e) = fs::write(&path, text) {
                eprintln!("xtask: bench: cannot write {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_power_cut_table_survives_a_bench_rewrite() {
        let old = "# sysctr benchmarks\n\n## Host: x\n\nold\n\n\
                   ## Guest (QEMU): power cuts during an update\n\n| run |\n|---|\n| 1 |\n\n\
                   ## Not measured\n\nnothing\n";
        assert_eq!(
            kept_sections(old),
            "\n## Guest (QEMU): power cuts during an update\n\n| run |\n|---|\n| 1 |\n"
        );
        // Last in the file: kept to its end.
        let last = "# b\n\n## Guest (QEMU): power cuts during an update\n\n| 2 |\n";
        assert_eq!(
            kept_sections(last),
            "\n## Guest (QEMU): power cuts during an update\n\n| 2 |\n"
        );
        assert_eq!(kept_sections("# b\n\n## Host: x\n"), "");
    }

    #[test]
    fn a_section_lands_in_both_files_and_a_failure_keeps_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("RESULTS.md");
        let mut doc = Doc::new(&md, "# head\n".into(), "cargo xtask bench --runs 3".into());
        run_section(&mut doc, "host: x", || {
            let mut f = Figures::default();
            let line = f.row("start", stats(&[1000.0, 3000.0, 2000.0]));
            f.value("RSS, 10 services", "KiB", 2048.0);
            Ok(Section::new(format!("## x\n{TABLE_HEAD}{line}"), f))
        });
        run_section(&mut doc, "guest: y", || bail!("no QEMU"));
        doc.note("guest: z", "## z\n\nSkipped.\n");
        let text = fs::read_to_string(&md).unwrap();
        assert!(text.starts_with("# head\n"), "{text}");
        assert!(
            text.contains("| start | 3 | 2.00 | 3.00 | 1.00 |"),
            "{text}"
        );
        assert!(
            text.contains("## guest: y\n\nNot measured: no QEMU"),
            "{text}"
        );
        let v: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("results.json")).unwrap())
                .unwrap();
        assert_eq!(v["command"], "cargo xtask bench --runs 3");
        let s = &v["sections"];
        assert_eq!(s[0]["status"], "measured");
        assert_eq!(
            s[0]["figures"][0],
            json!({"name": "start", "unit": "ms", "runs": 3, "value": 2.0, "p95": 3.0, "min": 1.0})
        );
        assert_eq!(
            s[0]["figures"][1],
            json!({"name": "RSS, 10 services", "unit": "KiB", "value": 2048.0})
        );
        assert_eq!(s[1]["status"], "failed");
        assert_eq!(s[1]["error"], "no QEMU");
        assert_eq!(s[1]["figures"], json!([]));
        assert_eq!(s[2]["status"], "skipped");
    }

    #[test]
    fn a_kept_section_is_carried_over_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("RESULTS.md");
        let mut doc = Doc::new(&md, "# head\n".into(), "cargo xtask bench --only b".into());
        let old = json!({"name": "a", "status": "measured", "figures": [
            {"name": "x", "unit": "ms", "value": 1.0}]});
        doc.keep("## A\n\nold text\n", Some(old.clone()));
        run_section(&mut doc, "b", || {
            let mut f = Figures::default();
            f.value("y", "KiB", 3.0);
            Ok(Section::new("## B\n\nnew\n".into(), f))
        });
        // A section the old file did not have: nothing to carry.
        doc.keep("", None);
        let text = fs::read_to_string(&md).unwrap();
        assert_eq!(text, "# head\n\n## A\n\nold text\n\n## B\n\nnew\n");
        let v: Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("results.json")).unwrap())
                .unwrap();
        assert_eq!(v["sections"].as_array().unwrap().len(), 2);
        assert_eq!(v["sections"][0], old);
        assert_eq!(v["sections"][1]["name"], "b");
        // Only the sections run are compared.
        let e = doc.entries(&["b"]);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].name.as_str(), e[0].value), ("y", 3.0));
    }
}
