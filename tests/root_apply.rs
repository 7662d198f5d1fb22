//! `sysctr apply` and `sysctr rm` against a real init as PID 1 in namespaces (root): the
//! plan, the applied set on the state partition (written whole, back after a restart of
//! init), each kind of change, and bad applies that change nothing.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use sysctr_tests::*;

const T: Duration = Duration::from_secs(20);

fn system() -> Vec<Value> {
    vec![sh("net", "while true; do sleep 1; done")]
}

fn start(state: &Path) -> Init {
    let s = state.display().to_string();
    let init = Init::start_with(system(), &["--state-dir", &s]);
    init.wait_state("net", "ready", T);
    init
}

fn app(name: &str, env: &str) -> Value {
    with(
        sh(name, "while true; do sleep 1; done"),
        json!({"env": [env], "depends_on": ["net"]}),
    )
}

fn set(services: Vec<Value>) -> String {
    json!({"version": 1, "services": services}).to_string()
}

/// `sysctr apply [extra] -` with `text` on stdin.
fn apply(init: &Init, text: &str, extra: &[&str]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .arg("apply")
        .args(extra)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn apply_ok(init: &Init, text: &str, extra: &[&str]) -> String {
    let out = apply(init, text, extra);
    assert!(
        out.status.success(),
        "apply failed: {}\n{}\ninit:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        init.log()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn applied_file(state: &Path) -> PathBuf {
    state.join("manifest.d/applied.json")
}

fn pid(init: &Init, name: &str) -> Option<i64> {
    init.service(name)["pid"].as_i64()
}

fn names(init: &Init) -> Vec<String> {
    init.ps()
        .into_iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bad_applies_change_nothing_running_or_on_disk() {
    let state = tempfile::tempdir().unwrap();
    let init = start(state.path());
    apply_ok(&init, &set(vec![app("web", "V=1")]), &[]);
    init.wait_state("web", "ready", T);
    let web = pid(&init, "web").unwrap();
    let net = pid(&init, "net").unwrap();
    let before = std::fs::read(applied_file(state.path())).unwrap();
    let cycle_a = with(app("a", "V=1"), json!({"depends_on": ["b"]}));
    let cycle_b = with(app("b", "V=1"), json!({"depends_on": ["a"]}));
    let bad: Vec<(String, &str)> = vec![
        (
            set(vec![
                app("web", "V=2"),
                with(app("x", "V=1"), json!({"colour": "red"})),
            ]),
            "service \"x\": colour: unknown field",
        ),
        (
            set(vec![app("web", "V=2"), cycle_a, cycle_b]),
            "dependency cycle",
        ),
        (
            set(vec![with(
                app("web", "V=2"),
                json!({"root": null, "image": "nosuch:1"}),
            )
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.remove("root");
                Value::Object(o)
            })
            .unwrap()]),
            "no image \"nosuch:1\"",
        ),
        (
            set(vec![app("web", "V=2"), app("net", "V=1")]),
            "system services cannot be replaced",
        ),
        ("{\"version\":1,".to_string(), "syntax error"),
    ];
    for (text, needle) in bad {
        let out = apply(&init, &text, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert!(err.contains("bad_request"), "{err}");
        assert!(err.contains(needle), "{text}: wanted {needle:?} in {err}");
    }
    assert_eq!(std::fs::read(applied_file(state.path())).unwrap(), before);
    assert_eq!(pid(&init, "web"), Some(web));
    assert_eq!(pid(&init, "net"), Some(net));
    assert_eq!(names(&init), ["net", "web"]);
    // rm of a system service and of an unknown one.
    let out = init.cli(&["rm", "net"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("conflict"));
    let out = init.cli(&["rm", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_service"));
    assert_eq!(pid(&init, "net"), Some(net));
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    let init = start(state.path());
    apply_ok(
        &init,
        &set(vec![
            app("keep", "V=1"),
            app("edit", "V=1"),
            app("old", "V=1"),
        ]),
        &[],
    );
    for n in ["keep", "edit", "old"] {
        init.wait_state(n, "ready", T);
    }
    let before = std::fs::read(applied_file(state.path())).unwrap();
    let pids: Vec<_> = ["keep", "edit", "old"]
        .iter()
        .map(|n| pid(&init, n))
        .collect();
    let out = apply_ok(
        &init,
        &set(vec![
            app("keep", "V=1"),
            app("edit", "V=2"),
            app("new", "V=1"),
        ]),
        &["--dry-run"],
    );
    assert_eq!(
        out,
        "+ new\n~ edit\n- old\n= keep\ndry run: 1 to add, 1 to change, 1 to remove, 1 unchanged; nothing changed\n"
    );
    assert_eq!(std::fs::read(applied_file(state.path())).unwrap(), before);
    let after: Vec<_> = ["keep", "edit", "old"]
        .iter()
        .map(|n| pid(&init, n))
        .collect();
    assert_eq!(pids, after);
    assert!(init.service("new").is_null());
}

#[test]
fn each_kind_of_change_and_the_set_comes_back_after_a_restart_of_init() {
    let state = tempfile::tempdir().unwrap();
    let init = start(state.path());
    let out = apply_ok(
        &init,
        &set(vec![
            app("keep", "V=1"),
            app("edit", "V=1"),
            app("old", "V=1"),
        ]),
        &["--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["plan"]["add"], json!(["edit", "keep", "old"]));
    for n in ["keep", "edit", "old"] {
        init.wait_state(n, "ready", T);
    }
    let (net, keep, edit) = (
        pid(&init, "net").unwrap(),
        pid(&init, "keep").unwrap(),
        pid(&init, "edit").unwrap(),
    );
    let out = apply_ok(
        &init,
        &set(vec![
            app("keep", "V=1"),
            app("edit", "V=2"),
            app("new", "V=1"),
        ]),
        &[],
    );
    assert!(
        out.contains("applied: 1 to add, 1 to change, 1 to remove, 1 unchanged"),
        "{out}"
    );
    init.wait_state("new", "ready", T);
    let e = init.wait_service("edit", T, "restarted", |s| {
        s["state"] == "ready" && s["pid"].as_i64() != Some(edit)
    });
    assert!(e["pid"].as_i64().is_some());
    wait_until(T, || init.service("old").is_null());
    assert!(init.service("old").is_null(), "old is gone from ps");
    assert_eq!(pid(&init, "keep"), Some(keep));
    assert_eq!(pid(&init, "net"), Some(net));
    let inspect: Value = serde_json::from_str(&init.cli_ok(&["inspect", "edit"])).unwrap();
    assert_eq!(inspect["manifest"]["env"], json!(["V=2"]));
    // The file on disk is the new set, whole, and nothing else is in the directory.
    let file: Value =
        serde_json::from_slice(&std::fs::read(applied_file(state.path())).unwrap()).unwrap();
    let on_disk: Vec<&str> = file["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(on_disk, ["keep", "edit", "new"]);
    let entries: Vec<String> = std::fs::read_dir(state.path().join("manifest.d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["applied.json"]);
    // rm one.
    let out = init.cli_ok(&["rm", "new"]);
    assert!(out.starts_with("- new\n"), "{out}");
    wait_until(T, || init.service("new").is_null());
    assert!(init.service("new").is_null());
    drop(init);
    // A new init on the same state partition: the applied set comes back.
    let init = start(state.path());
    init.wait_state("keep", "ready", T);
    init.wait_state("edit", "ready", T);
    let mut back = names(&init);
    back.sort();
    assert_eq!(back, ["edit", "keep", "net"]);
    let inspect: Value = serde_json::from_str(&init.cli_ok(&["inspect", "edit"])).unwrap();
    assert_eq!(inspect["manifest"]["env"], json!(["V=2"]));
}

#[test]
fn without_a_state_directory_apply_is_refused() {
    let init = Init::start(system());
    init.wait_state("net", "ready", T);
    let out = apply(&init, &set(vec![app("web", "V=1")]), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no state partition"), "{err}");
}

/// An oci-archive of the busybox test root as one layer (its config runs a shell loop).
fn busybox_archive(dir: &Path) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer.append_dir_all(".", rootfs()).unwrap();
    let layer = layer.into_inner().unwrap();
    let layout = dir.join("layout");
    let w = oci::layout::LayoutWriter::create(&layout).unwrap();
    let blob = oci::layout::LayerBlob::tar(&layer);
    let desc = w
        .add_image(&[blob], json!({"Cmd": ["/bin/sh"]}), "amd64")
        .unwrap();
    w.write_index(&[oci::layout::tagged(desc, "1")]).unwrap();
    let file = dir.join("busybox.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&file).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    file
}

fn image_app(name: &str, env: &str) -> Value {
    json!({"name": name, "image": "busybox:1", "args": ["/bin/sh", "-c", "while true; do sleep 1; done"],
           "env": [env], "stop": {"timeout_secs": 2}})
}

#[test]
fn an_imported_image_runs_an_applied_service_and_is_removed_when_unused() {
    let state = tempfile::tempdir().unwrap();
    let init = start(state.path());
    let work = tempfile::tempdir().unwrap();
    let archive = busybox_archive(work.path());
    // Over stdin, as over ssh.
    let out = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(["image", "import", "-", "busybox:1"])
        .stdin(std::fs::File::open(&archive).unwrap())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        init.log()
    );
    assert!(
        text.contains("imported busybox:1") && text.contains("1 unpacked"),
        "{text}"
    );
    // The same archive as a second name shares its layer.
    let again = init.cli_ok(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "busybox:again",
    ]);
    assert!(
        again.contains("0 unpacked, 1 already in the store"),
        "{again}"
    );
    // A broken archive is refused and changes nothing.
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar").unwrap();
    let out = init.cli(&["image", "import", junk.to_str().unwrap(), "junk:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk:1 not imported"));

    apply_ok(
        &init,
        &set(vec![image_app("boxed", "V=1"), app("plain", "V=1")]),
        &[],
    );
    init.wait_state("boxed", "ready", T);
    let plain = pid(&init, "plain").unwrap();
    let ls: Value = serde_json::from_str(&init.cli_ok(&["image", "ls", "--json"])).unwrap();
    let names: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["busybox:1", "busybox:again"]);
    assert_eq!(ls[0]["used_by"], json!(["boxed"]));
    // In use: refused.
    let out = init.cli(&["image", "rm", "busybox:1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("used by the applied service \"boxed\""));
    // Changing its env restarts only it.
    let boxed = pid(&init, "boxed").unwrap();
    apply_ok(
        &init,
        &set(vec![image_app("boxed", "V=2"), app("plain", "V=1")]),
        &[],
    );
    init.wait_service("boxed", T, "restarted", |s| {
        s["state"] == "ready" && s["pid"].as_i64() != Some(boxed)
    });
    assert_eq!(pid(&init, "plain"), Some(plain));
    init.cli_ok(&["rm", "boxed"]);
    wait_until(T, || init.service("boxed").is_null());
    let layers = state.path().join("images/layers");
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 1);
    init.cli_ok(&["image", "rm", "busybox:1"]);
    // The layer is still needed by busybox:again; removing that one collects it.
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 1);
    init.cli_ok(&["image", "rm", "busybox:again"]);
    assert_eq!(std::fs::read_dir(&layers).unwrap().count(), 0);
    assert_eq!(
        init.cli_ok(&["image", "ls"]),
        "IMAGE  ID                   LAYERS  USED BY\n"
    );
}

#[test]
fn a_writable_root_keeps_its_writes_in_the_upper_dir_on_the_state_partition() {
    let state = tempfile::tempdir().unwrap();
    let init = start(state.path());
    let rw = with(
        sh("rw", "echo hello > /written; while true; do sleep 1; done"),
        json!({"readonly_root": false}),
    );
    apply_ok(&init, &set(vec![rw]), &[]);
    init.wait_state("rw", "ready", T);
    let upper = state.path().join("overlay/rw/upper/written");
    assert!(wait_until(T, || upper.exists()), "{}", init.log());
    assert_eq!(std::fs::read_to_string(&upper).unwrap(), "hello\n");
    // The lower root is untouched.
    assert!(!rootfs().join("written").exists());
}
