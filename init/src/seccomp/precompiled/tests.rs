use super::*;

const MANIFEST: &str = r#"{"version":1,"services":[
  {"name":"a","root":"/containers/a","args":["/bin/a"]},
  {"name":"b","root":"/containers/b","args":["/bin/b"]},
  {"name":"clock","root":"/containers/c","args":["/bin/c"],"capabilities":["CAP_SYS_TIME"]},
  {"name":"engine","root":"/containers/e","args":["/bin/e"],"privileged":true}
]}"#;

fn write_manifest(dir: &Path) -> PathBuf {
    let path = dir.join("manifest.json");
    fs::write(&path, MANIFEST).unwrap();
    path
}

fn services() -> Vec<Service> {
    manifest::load_str(MANIFEST, "m.json")
        .unwrap()
        .manifest
        .services
}

/// A program of one instruction that allows everything: not what the compiler makes of
/// any profile, so a start that gets it got the file.
fn allow_all() -> Vec<u8> {
    let mut raw = 0x06u16.to_ne_bytes().to_vec();
    raw.extend_from_slice(&[0, 0]);
    raw.extend_from_slice(&0x7fff_0000u32.to_ne_bytes());
    raw
}

#[test]
fn one_program_per_distinct_profile_the_same_as_compiled_at_boot() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let files = precompile(std::slice::from_ref(&manifest)).unwrap();
    // a and b share the default profile, clock has its own, the privileged engine none.
    assert_eq!(files.len(), 2, "{files:?}");
    let seccomp = dir_for(&manifest);
    assert_eq!(seccomp, dir.path().join("seccomp"));
    for svc in &services()[..3] {
        let text = profile_text(svc).unwrap().unwrap();
        let loaded = load(&seccomp, &text).unwrap().expect("precompiled");
        let compiled = bpf::compile(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(loaded.to_bytes(), compiled.to_bytes(), "{}", svc.name);
    }
    assert_eq!(profile_text(&services()[3]).unwrap(), None);
    // Precompiling again (an alternative manifest beside it) is idempotent.
    assert_eq!(precompile(&[manifest]).unwrap().len(), 2);
}

#[test]
fn the_key_is_the_profile_as_the_runtime_reads_it_from_the_stored_spec() {
    // PID 1 keeps a service's spec as JSON text and the runtime serializes the profile it
    // parses back from it: that text must be the one the image builder hashed.
    for svc in &services()[..3] {
        let ctx = crate::spec::Context {
            cgroups_path: "/sysctr/x".into(),
            notify_socket: None,
            run_dir: Path::new("/run/sysctr"),
        };
        let spec = crate::spec::generate(svc, &ctx).unwrap();
        let stored = serde_json::to_string(&spec).unwrap();
        let back: oci_spec::runtime::Spec = serde_json::from_str(&stored).unwrap();
        let profile = back.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let key = serde_json::to_string(&profile).unwrap();
        assert_eq!(Some(key), profile_text(svc).unwrap(), "{}", svc.name);
    }
}

#[test]
fn a_file_not_trusted_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let text = profile_text(&services()[0]).unwrap().unwrap();
    assert!(load(dir.path(), &text).unwrap().is_none(), "no file: none");
    let file = file_for(dir.path(), &text);
    let refused = |want: &str| {
        let e = load(dir.path(), &text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
    };

    fs::write(&file, &allow_all()[..7]).unwrap();
    refused("7 bytes is not a whole number of instructions");
    fs::write(&file, b"").unwrap();
    refused("0 bytes");
    let mut jump = allow_all();
    jump[0] = 0x05; // BPF_JMP: a program that does not end in a return
    fs::write(&file, &jump).unwrap();
    refused("the last instruction is not a return");
    fs::write(&file, allow_all().repeat(bpf::MAX_INSTRUCTIONS + 1)).unwrap();
    refused("more than 32768");

    fs::write(&file, allow_all()).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
    refused("writable by others (mode 664)");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        load(dir.path(), &text).unwrap().unwrap().to_bytes(),
        allow_all()
    );

    // Not followed: a symlink, and not read: a directory or a FIFO (which would block).
    fs::remove_file(&file).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    fs::write(&elsewhere, allow_all()).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    assert!(load(dir.path(), &text).is_err());
    fs::remove_file(&file).unwrap();
    fs::create_dir(&file).unwrap();
    refused("not a regular file");
    fs::remove_dir(&file).unwrap();
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    refused("not a regular file");
}

#[test]
fn a_bad_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = precompile(&[dir.path().join("missing.json")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
    let path = dir.path().join("m.json");
    fs::write(&path, r#"{"version":1,"services":[{"name":"x"}]}"#).unwrap();
    let e = precompile(&[path]).unwrap_err().to_string();
    assert!(
        e.contains("m.json") && e.contains("service x rejected"),
        "{e}"
    );
}

#[test]
fn the_runtime_takes_the_precompiled_program_and_compiles_when_it_is_damaged() {
    let run = tempfile::tempdir().unwrap();
    let programs = tempfile::tempdir().unwrap();
    let ctx = crate::spec::Context {
        cgroups_path: "/sysctr/a".into(),
        notify_socket: None,
        run_dir: run.path(),
    };
    let spec = crate::spec::generate(&services()[0], &ctx).unwrap();
    let text = profile_text(&services()[0]).unwrap().unwrap();
    let file = file_for(programs.path(), &text);

    fs::write(&file, allow_all()).unwrap();
    let rt = crate::runtime::Runtime::new(run.path(), std::time::Duration::from_secs(5), true)
        .with_precompiled(programs.path().to_path_buf());
    assert_eq!(rt.program_for("a", &spec).unwrap().to_bytes(), allow_all());

    fs::write(&file, &allow_all()[..5]).unwrap();
    let rt = crate::runtime::Runtime::new(run.path(), std::time::Duration::from_secs(5), true)
        .with_precompiled(programs.path().to_path_buf());
    let compiled = rt.program_for("a", &spec).unwrap();
    assert!(compiled.instructions().len() > 300, "{compiled:?}");
}
