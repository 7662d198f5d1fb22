use super::*;
use crate::oci::layout::{tagged, LayerBlob, LayoutWriter};
use serde_json::json;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

fn load_err(text: &str) -> String {
    let t = tempfile::tempdir().unwrap();
    let p = write(t.path(), "a.appliance.json", text);
    load_with(&p, Some(&workspace().join("system-containers")))
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn the_default_example_is_todays_image() {
    let a = load(&workspace().join("examples/default.appliance.json")).unwrap();
    let plan = a.plan(false).unwrap();
    let names: Vec<&str> = plan.iter().map(|c| c.name.as_str()).collect();
    // The same system containers, in the same order, as CONTAINERS in xtask/src/image.rs.
    assert_eq!(names, ["logging", "network", "ssh", "time", "console"]);
    assert!(plan
        .iter()
        .all(|c| matches!(c.source, PlannedSource::System(_))));
    // dev takes console's service.dev.json.
    let dev = a.plan(true).unwrap();
    assert_eq!(dev[4].entry["args"], json!(["/usr/libexec/dev-console"]));
    assert_eq!(a.output_dir(), workspace().join("build/sysctr"));
}

#[test]
fn unknown_fields_are_errors_with_line_and_field() {
    let err = load_err(
        "{\n  \"name\": \"a\", \"version\": \"1\", \"compatible\": \"x\",\n  \"kernal\": {}\n}",
    );
    assert!(err.contains("a.appliance.json:3:"), "{err}");
    assert!(err.contains("unknown field `kernal`"), "{err}");

    let err = load_err(
        "{ \"name\": \"a\", \"version\": \"1\", \"compatible\": \"x\",\n  \"kernel\": {\n    \"cmdlines\": \"\" } }",
    );
    assert!(
        err.contains(":3:") && err.contains("kernel") && err.contains("cmdlines"),
        "{err}"
    );

    let err = load_err(
        "{ \"name\": \"a\", \"version\": \"1\", \"compatible\": \"x\",\n \"services\": [{\"from\": {\"imag\": \"x\"}, \"name\": \"w\"}] }",
    );
    assert!(
        err.contains(":2:") && err.contains("services[0].from") && err.contains("imag"),
        "{err}"
    );

    let err = load_err("{ \"name\": \"a\", \"version\": \"1\", \"compatible\": \"x\", \"boot_config\": {\"hostnme\": \"h\"} }");
    assert!(
        err.contains("boot_config") && err.contains("hostnme"),
        "{err}"
    );

    let err = load_err("{ \"name\": \"a\" /* never closed");
    assert!(
        err.contains("a.appliance.json:1:") && err.contains("never closed"),
        "{err}"
    );
}

#[test]
fn every_semantic_problem_is_reported_by_field() {
    let err = load_err(
        r#"{
        "name": "Bad Name", "version": "1 0", "compatible": "",
        "kernel": { "fragments": ["missing.config", "x.txt"] },
        "system_containers": ["logging", "nosuch", "logging"],
        "services": [
          { "from": { "image": "oci:nothere" }, "name": "w", "root": "/x" },
          { "from": { "recipe": "norecipe" }, "name": "r", "args": ["/bin/sh"] }
        ],
        "files": [
          { "dest": "etc/x", "text": "" },
          { "dest": "/sbin/init", "text": "" },
          { "dest": "/etc/y", "src": "nofile" },
          { "dest": "/etc/z", "text": "", "src": "both" },
          { "dest": "/etc/m", "text": "", "mode": "999" }
        ]
    }"#,
    );
    for want in [
        "name: \"Bad Name\"",
        "version: \"1 0\"",
        "compatible: \"\"",
        "kernel.fragments[0]:",
        "kernel.fragments[1]: x.txt must end in .config",
        "system_containers[1]: \"nosuch\" is not a system container",
        "known: console, docker, logging, network, ssh, ssh-node, time",
        "system_containers[2]: \"logging\" is listed twice",
        "services[0] (\"w\").root: set by the builder",
        "services[0] (\"w\").from.image:",
        "services[1] (\"r\").from.recipe:",
        "files[0].dest: \"etc/x\" must be absolute",
        "files[1].dest: \"/sbin/init\" is written by the builder",
        "files[2].src:",
        "files[3]: give exactly one of src and text",
        "files[4].mode: \"999\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(
        err.lines().all(|l| l.contains("a.appliance.json: ")),
        "{err}"
    );
}

/// An OCI layout `img` (tag 1) in `dir` with busybox-like /bin/httpd.
fn web_image(dir: &Path, entrypoint: &str) {
    let w = LayoutWriter::create(&dir.join("img")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(4);
    b.append_data(&mut h, "bin/httpd", &b"ELF!"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(0);
    b.append_data(&mut h, "srv/index.html", &b""[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let run = json!({"Entrypoint": [entrypoint], "Cmd": ["-f"], "Env": ["PATH=/bin"], "WorkingDir": "/srv"});
    let desc = w.add_image(&[LayerBlob::tar(&tar)], run, "amd64").unwrap();
    w.write_index(&[tagged(desc, "1")]).unwrap();
}

/// Loads [`WEB`] from `dir` and imports its image services into `dir/c`.
fn import_web(dir: &Path) -> Result<ImportedServices> {
    let p = write(dir, "web.appliance.json", WEB);
    let a = load_with(&p, Some(&workspace().join("system-containers"))).unwrap();
    let plan = a.plan(false).unwrap();
    import_images(&a, &plan, &dir.join("c"))
}

const WEB: &str = r#"{
  // comments are fine
  "name": "web", "version": "1.0.0", "compatible": "org.example.web",
  "system_containers": ["logging", "network"],
  "services": [
    { "from": { "image": "oci:img:1" }, "name": "web", "depends_on": ["network"],
      "env": ["MODE=test"],
      "mounts": [{ "source": "/var/lib/web", "destination": "/var/lib/web", "options": ["rw"] }],
      "readiness": { "kind": "tcp", "port": 8080 } }
  ]
}"#;

#[test]
fn image_services_are_imported_and_completed_from_the_config() {
    let t = tempfile::tempdir().unwrap();
    web_image(t.path(), "/bin/httpd");
    let p = write(t.path(), "web.appliance.json", WEB);
    let a = load_with(&p, Some(&workspace().join("system-containers"))).unwrap();
    let plan = a.plan(false).unwrap();
    assert_eq!(plan.len(), 3);
    assert_eq!(plan[2].entry["root"], "/containers/web/rootfs");
    assert!(!plan[2].entry.contains_key("args"));
    let containers = t.path().join("out/containers");
    let done = import_images(&a, &plan, &containers).unwrap();
    let web = &done.services[2];
    assert_eq!(web["args"], json!(["/bin/httpd", "-f"]));
    assert_eq!(web["env"], json!(["PATH=/bin", "MODE=test"]));
    assert_eq!(web["cwd"], "/srv");
    let root = containers.join("web/rootfs");
    for d in ["proc", "dev", "sys", "tmp", "run", "var/lib/web"] {
        assert!(root.join(d).is_dir(), "{d}");
    }
    assert_eq!(done.imported.len(), 1);
    // The system services' entries pass through unchanged.
    assert_eq!(done.services[0]["name"], "logging");
}

#[test]
fn a_program_not_in_the_image_fails_naming_service_and_field() {
    let t = tempfile::tempdir().unwrap();
    web_image(t.path(), "/usr/sbin/nginx");
    let err = import_web(t.path()).unwrap_err().to_string();
    assert!(
        err.contains("web.appliance.json")
            && err.contains(
                "service \"web\": args[0]: program \"/usr/sbin/nginx\" is not in its root"
            ),
        "{err}"
    );
}

#[test]
fn a_bad_image_fails_naming_service_and_blob() {
    let t = tempfile::tempdir().unwrap();
    web_image(t.path(), "/bin/httpd");
    // Corrupt every blob but keep the files there.
    for e in fs::read_dir(t.path().join("img/blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let mut d = fs::read(&p).unwrap();
        if d.len() > 1000 {
            d[600] ^= 1;
            fs::write(&p, d).unwrap();
        }
    }
    let err = import_web(t.path()).unwrap_err().to_string();
    assert!(
        err.contains("service \"web\"") && err.contains("blob sha256:"),
        "{err}"
    );
}

#[test]
fn manifest_validation_covers_user_services() {
    let t = tempfile::tempdir().unwrap();
    web_image(t.path(), "/bin/httpd");
    let text = r#"{
      "name": "web", "version": "1", "compatible": "x",
      "system_containers": ["logging"],
      "services": [
        { "from": { "image": "oci:img:1" }, "name": "a", "depends_on": ["b"],
          "resources": { "memory_max": "lots" } },
        { "from": { "image": "oci:img:1" }, "name": "b", "depends_on": ["a"] },
        { "from": { "image": "oci:img:1" }, "name": "c", "restart": { "policy": "sometimes" } }
      ]
    }"#;
    let p = write(t.path(), "x.appliance.json", text);
    let err = load_with(&p, Some(&workspace().join("system-containers")))
        .unwrap_err()
        .to_string();
    for want in [
        "service \"a\": resources.memory_max",
        "dependency cycle",
        "service \"c\": restart.policy",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn the_web_example_checks_once_its_image_exists() {
    let a = load(&workspace().join("examples/web.appliance.json"));
    match a {
        Ok(a) => {
            let plan = a.plan(false).unwrap();
            assert_eq!(plan.last().unwrap().name, "web");
            assert_eq!(
                a.boot_config.as_ref().unwrap().hostname.as_deref(),
                Some("web")
            );
        }
        // Not built in this checkout (examples/web/build-image.sh): the only complaint.
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("from.image") && msg.contains("does not exist"),
                "{msg}"
            );
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }
}

#[test]
fn registry_references_are_checked_when_loaded_and_reached_only_on_import() {
    let ok = r#"{ "name": "a", "version": "1", "compatible": "x",
      "services": [ { "from": { "image": "docker://127.0.0.1:5000/web:1" }, "name": "w" } ] }"#;
    let t = tempfile::tempdir().unwrap();
    let p = write(t.path(), "a.appliance.json", ok);
    let a = load_with(&p, None).unwrap();
    assert!(matches!(
        a.plan(false).unwrap()[0].source,
        PlannedSource::Image(ImageRef::Registry(_))
    ));
    let err = load_err(&ok.replace(
        "docker://127.0.0.1:5000/web:1",
        "docker://127.0.0.1:5000/Web",
    ));
    assert!(
        err.contains("services[0] (\"w\").from.image: registry reference")
            && err.contains("lowercase"),
        "{err}"
    );
}
