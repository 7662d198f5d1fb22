//! This run's figures beside a committed run's (issue 18), so a regression shows in review:
//! one row per figure, matched by section and figure name, with the ratio and a mark where
//! this run is worse by more than [`THRESHOLD`]. Every figure the bench records is a time,
//! a size or a memory figure, so higher is worse for all of them.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// A figure this much worse than the committed one (10 %) is marked.
pub(super) const THRESHOLD: f64 = 0.10;

/// The heading of the comparison's section in RESULTS.md.
pub(super) const HEADING: &str = "## Compared with the committed run";

/// One figure as results.json records it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) section: String,
    pub(super) name: String,
    pub(super) unit: String,
    pub(super) value: f64,
}

/// The figures of results.json's measured sections, in file order. Entries without a
/// name, unit or numeric value are left out (a hand-edited or older file).
pub(super) fn entries(results: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    for s in results["sections"].as_array().into_iter().flatten() {
        let Some(section) = s["name"].as_str() else {
            continue;
        };
        for f in s["figures"].as_array().into_iter().flatten() {
            if let (Some(name), Some(unit), Some(value)) =
                (f["name"].as_str(), f["unit"].as_str(), f["value"].as_f64())
            {
                out.push(Entry {
                    section: section.to_string(),
                    name: name.to_string(),
                    unit: unit.to_string(),
                    value,
                });
            }
        }
    }
    out
}

/// The run compared with: its figures and where they came from.
pub(super) struct Baseline {
    /// e.g. "committed bench/results.json (HEAD 0197791)".
    pub(super) label: String,
    pub(super) results: Value,
}

impl Baseline {
    /// The committed results.json beside `markdown` (`git show HEAD:<path>`), or else the
    /// file as it is before this run overwrites it (`before`); None when there is neither.
    /// The reason there is none is printed.
    pub(super) fn load(json_path: &Path, before: Option<Value>) -> Option<Baseline> {
        let root = crate::util::workspace_root();
        let shown = json_path.strip_prefix(&root).unwrap_or(json_path);
        if let Some(b) = committed(json_path, shown) {
            return Some(b);
        }
        match before {
            Some(results) => Some(Baseline {
                label: format!(
                    "{} as it was before this run (not committed)",
                    shown.display()
                ),
                results,
            }),
            None => {
                eprintln!(
                    "xtask: bench: no committed {} and no file there: nothing to compare with",
                    json_path.display()
                );
                None
            }
        }
    }
}

/// `shown`: the path as the label names it (relative to the workspace where it is inside).
fn committed(json_path: &Path, shown: &Path) -> Option<Baseline> {
    let dir = json_path.parent()?;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let file = json_path.file_name()?.to_str()?;
    // `HEAD:./FILE` is relative to the directory git runs in.
    let text = git(&["show", &format!("HEAD:./{file}")])?;
    let results: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "xtask: bench: the committed {} is not JSON ({e}): not compared with",
                json_path.display()
            );
            return None;
        }
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    Some(Baseline {
        label: format!("committed {} (HEAD {})", shown.display(), head.trim()),
        results,
    })
}

/// How one figure compares.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// this / committed; `worse`/`better` when beyond the threshold.
    Ratio(f64),
    /// The committed value is 0: no ratio.
    NoRatio,
    UnitsDiffer,
    /// In the committed run, not measured in this one.
    OnlyCommitted,
    /// New in this run.
    OnlyThisRun,
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) section: String,
    pub(super) name: String,
    pub(super) committed: Option<(f64, String)>,
    pub(super) this: Option<(f64, String)>,
    pub(super) verdict: Verdict,
}

impl Row {
    pub(super) fn worse(&self) -> bool {
        matches!(self.verdict, Verdict::Ratio(r) if r > 1.0 + THRESHOLD)
    }
}

/// The figures of `this` run beside those of `committed`, for the `sections` this run
/// measured (the others are not compared: with `--only` they are the committed ones). A
/// figure is matched by section and name; a name repeated in a section is matched in order.
/// Rows follow this run's order; figures of the committed run missing from this one follow
/// their section's rows.
pub(super) fn compare(committed: &[Entry], this: &[Entry], sections: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut used = vec![false; committed.len()];
    for section in sections {
        for e in this.iter().filter(|e| e.section == *section) {
            let found = committed
                .iter()
                .enumerate()
                .find(|(i, c)| !used[*i] && c.section == e.section && c.name == e.name);
            let (c, verdict) = match found {
                Some((i, c)) => {
                    used[i] = true;
                    let v = if c.unit != e.unit {
                        Verdict::UnitsDiffer
                    } else if c.value == 0.0 {
                        Verdict::NoRatio
                    } else {
                        Verdict::Ratio(e.value / c.value)
                    };
                    (Some((c.value, c.unit.clone())), v)
                }
                None => (None, Verdict::OnlyThisRun),
            };
            rows.push(Row {
                section: e.section.clone(),
                name: e.name.clone(),
                committed: c,
                this: Some((e.value, e.unit.clone())),
                verdict,
            });
        }
        for (i, c) in committed.iter().enumerate() {
            if !used[i] && c.section == *section {
                used[i] = true;
                rows.push(Row {
                    section: c.section.clone(),
                    name: c.name.clone(),
                    committed: Some((c.value, c.unit.clone())),
                    this: None,
                    verdict: Verdict::OnlyCommitted,
                });
            }
        }
    }
    rows
}

fn value(v: &Option<(f64, String)>) -> String {
    match v {
        None => "—".into(),
        Some((v, unit)) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0} {unit}"),
        Some((v, unit)) if v.abs() >= 100.0 => format!("{v:.1} {unit}"),
        Some((v, unit)) => format!("{v:.2} {unit}"),
    }
}

/// The comparison as a markdown section.
pub(super) fn render(rows: &[Row], label: &str) -> String {
    let pct = THRESHOLD * 100.0;
    let mut s = format!(
        "{HEADING}\n\nThis run beside {label}, by section and figure name (timings: the \
         median). Every figure is a time, a size or memory: higher is worse; **worse** marks \
         a figure more than {pct:.0} % above the committed one.\n\n"
    );
    if rows.is_empty() {
        s.push_str("No figure of this run's sections in either run.\n");
        return s;
    }
    let worse: Vec<&Row> = rows.iter().filter(|r| r.worse()).collect();
    let _ = writeln!(
        s,
        "{} figures, {} worse by more than {pct:.0} %{}.\n",
        rows.len(),
        worse.len(),
        if worse.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                worse
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.section))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        }
    );
    s.push_str(
        "| section | figure | committed | this run | ratio | |\n|---|---|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (ratio, mark) = match &r.verdict {
            Verdict::Ratio(x) => (
                format!("{x:.2}×"),
                if r.worse() {
                    format!("**worse** ({:+.0} %)", (x - 1.0) * 100.0)
                } else if *x < 1.0 - THRESHOLD {
                    format!("better ({:+.0} %)", (x - 1.0) * 100.0)
                } else {
                    String::new()
                },
            ),
            Verdict::NoRatio => ("—".into(), "committed value 0".into()),
            Verdict::UnitsDiffer => ("—".into(), "units differ".into()),
            Verdict::OnlyCommitted => ("—".into(), "not in this run".into()),
            Verdict::OnlyThisRun => ("—".into(), "new".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {ratio} | {mark} |",
            r.section,
            r.name.replace('|', "\\|"),
            value(&r.committed),
            value(&r.this),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(section: &str, name: &str, unit: &str, value: f64) -> Entry {
        Entry {
            section: section.into(),
            name: name.into(),
            unit: unit.into(),
            value,
        }
    }

    #[test]
    fn figures_match_by_section_and_name_and_the_rest_is_said() {
        let committed = [
            e("host: a", "start", "ms", 2.0),
            e("host: a", "restart", "ms", 4.0),
            e("host: a", "gone", "ms", 1.0),
            // Same name, another section: not matched with host: a's.
            e("host: b", "start", "ms", 100.0),
            e("host: a", "size", "KiB", 1000.0),
            e("host: a", "zero", "ms", 0.0),
            // A section this run did not measure: not compared.
            e("guest: c", "boot", "s", 9.0),
        ];
        let this = [
            e("host: a", "start", "ms", 2.5),
            e("host: a", "restart", "ms", 3.0),
            e("host: a", "size", "MiB", 1.0),
            e("host: a", "new", "ms", 7.0),
            e("host: a", "zero", "ms", 1.0),
            e("host: b", "start", "ms", 105.0),
        ];
        let rows = compare(&committed, &this, &["host: a", "host: b"]);
        let got: Vec<(&str, &str, &Verdict)> = rows
            .iter()
            .map(|r| (r.section.as_str(), r.name.as_str(), &r.verdict))
            .collect();
        assert_eq!(
            got,
            [
                ("host: a", "start", &Verdict::Ratio(1.25)),
                ("host: a", "restart", &Verdict::Ratio(0.75)),
                ("host: a", "size", &Verdict::UnitsDiffer),
                ("host: a", "new", &Verdict::OnlyThisRun),
                ("host: a", "zero", &Verdict::NoRatio),
                ("host: a", "gone", &Verdict::OnlyCommitted),
                ("host: b", "start", &Verdict::Ratio(1.05)),
            ]
        );
        assert!(rows[0].worse());
        assert!(!rows[1].worse() && !rows[6].worse());
        assert_eq!(rows[5].this, None);
        assert_eq!(rows[3].committed, None);

        let md = render(&rows, "committed bench/results.json (HEAD abc)");
        assert!(md.starts_with(HEADING), "{md}");
        assert!(
            md.contains("7 figures, 1 worse by more than 10 %: start (host: a)."),
            "{md}"
        );
        assert!(
            md.contains("| host: a | start | 2 ms | 2.50 ms | 1.25× | **worse** (+25 %) |"),
            "{md}"
        );
        assert!(
            md.contains("| host: a | restart | 4 ms | 3 ms | 0.75× | better (-25 %) |"),
            "{md}"
        );
        assert!(
            md.contains("| host: a | size | 1000 KiB | 1 MiB | — | units differ |"),
            "{md}"
        );
        assert!(
            md.contains("| host: a | gone | 1 ms | — | — | not in this run |"),
            "{md}"
        );
        assert!(
            md.contains("| host: a | new | — | 7 ms | — | new |"),
            "{md}"
        );
        assert!(
            md.contains("| host: b | start | 100 ms | 105 ms | 1.05× |  |"),
            "{md}"
        );
    }

    #[test]
    fn a_repeated_name_is_matched_in_order_and_only_once() {
        let committed = [e("s", "x", "ms", 1.0), e("s", "x", "ms", 10.0)];
        let this = [
            e("s", "x", "ms", 1.0),
            e("s", "x", "ms", 20.0),
            e("s", "x", "ms", 3.0),
        ];
        let v: Vec<Verdict> = compare(&committed, &this, &["s"])
            .into_iter()
            .map(|r| r.verdict)
            .collect();
        assert_eq!(
            v,
            [
                Verdict::Ratio(1.0),
                Verdict::Ratio(2.0),
                Verdict::OnlyThisRun
            ]
        );
    }

    #[test]
    fn entries_come_from_results_json_and_skip_malformed_figures() {
        let results = json!({"sections": [
            {"name": "host: a", "status": "measured", "figures": [
                {"name": "start", "unit": "ms", "runs": 3, "value": 2.0, "p95": 3.0},
                {"name": "no unit", "value": 1.0},
                {"name": "text", "unit": "ms", "value": "fast"}
            ]},
            {"name": "guest: b", "status": "failed", "error": "no QEMU", "figures": []},
            {"status": "measured", "figures": [{"name": "x", "unit": "ms", "value": 1.0}]}
        ]});
        assert_eq!(entries(&results), [e("host: a", "start", "ms", 2.0)]);
        assert!(entries(&json!({"command": "old"})).is_empty());
        assert!(render(&[], "x").contains("No figure"));
    }

    #[test]
    fn the_committed_file_is_read_from_git_head_not_the_work_tree() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .current_dir(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::create_dir(dir.path().join("bench")).unwrap();
        let json_path = dir.path().join("bench/results.json");
        // Nothing committed: the file as it was is the baseline, and without it none.
        assert!(Baseline::load(&json_path, None).is_none());
        let before = Baseline::load(&json_path, Some(json!({"sections": []}))).unwrap();
        assert!(before.label.contains("not committed"), "{}", before.label);
        let committed = json!({"sections": [{"name": "s", "figures": [
            {"name": "x", "unit": "ms", "value": 5.0}]}]});
        std::fs::write(&json_path, committed.to_string()).unwrap();
        git(&["add", "bench/results.json"]);
        git(&["commit", "-q", "-m", "r"]);
        // The work tree's copy changes (as a run overwrites it): HEAD's is compared with.
        std::fs::write(&json_path, "{}").unwrap();
        let b = Baseline::load(&json_path, Some(json!({}))).unwrap();
        assert!(b.label.starts_with("committed "), "{}", b.label);
        assert_eq!(entries(&b.results), [e("s", "x", "ms", 5.0)]);
    }
}
