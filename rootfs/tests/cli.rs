//! The `rootfs` command as a user runs it.

use rootfs::oci::layout::{tagged, LayerBlob, LayoutWriter};
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

fn rootfs(args: &[&str], cwd: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rootfs"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-layer layout at `dir` (tag `1`): /bin/app, and a fifo that is skipped.
fn image(dir: &Path) {
    let w = LayoutWriter::create(dir).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(3);
    b.append_data(&mut h, "bin/app", &b"app"[..]).unwrap();
    let mut f = tar::Header::new_gnu();
    f.set_entry_type(tar::EntryType::Fifo);
    f.set_mode(0o644);
    f.set_size(0);
    b.append_data(&mut f, "run/fifo", &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let run = json!({"Cmd": ["/bin/app", "--serve"], "Env": ["PATH=/bin"]});
    let desc = w.add_image(&[LayerBlob::tar(&tar)], run, "amd64").unwrap();
    w.write_index(&[tagged(desc, "1")]).unwrap();
}

#[test]
fn import_prints_the_defaults_and_warnings() {
    let t = tempfile::tempdir().unwrap();
    image(&t.path().join("img"));
    let (ok, stdout, stderr) = rootfs(
        &["import", "--image", "oci:img:1", "--out", "root"],
        t.path(),
    );
    assert!(ok, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["defaults"]["args"], json!(["/bin/app", "--serve"]));
    assert_eq!(v["layers"], 1);
    assert!(
        stderr.contains("warning") && stderr.contains("fifo"),
        "{stderr}"
    );
    assert_eq!(fs::read(t.path().join("root/bin/app")).unwrap(), b"app");

    // Again into the same, now full, directory: refused, nothing changed.
    let (ok, _, stderr) = rootfs(
        &["import", "--image", "oci:img:1", "--out", "root"],
        t.path(),
    );
    assert!(!ok);
    assert!(stderr.contains("not an empty directory"), "{stderr}");
}

#[test]
fn check_reports_problems_and_fails() {
    let t = tempfile::tempdir().unwrap();
    fs::write(
        t.path().join("bad.appliance.json"),
        "{ \"name\": \"x\", \"version\": \"1\", \"compatible\": \"c\",\n  \"services\": [ { \"from\": { \"image\": \"oci:missing\" }, \"name\": \"w\" } ] }",
    )
    .unwrap();
    let (ok, _, stderr) = rootfs(&["check", "bad.appliance.json"], t.path());
    assert!(!ok);
    assert!(
        stderr.contains("bad.appliance.json: services[0] (\"w\").from.image:")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
}
