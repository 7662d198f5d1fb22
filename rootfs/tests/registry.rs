//! Pulls from a real registry: Debian's `docker-registry` on a free loopback port, with
//! images pushed to it by Debian's `skopeo` from an OCI layout this test builds (a
//! busybox-static layer). Runs without root. Skips, saying so, when the packages are not
//! installed (`apt-get install docker-registry skopeo busybox-static`).

use harness::registry::{Registry, DOCKER_REGISTRY};
use rootfs::oci::layout::{tagged, LayerBlob, LayoutWriter};
use rootfs::oci::{import, ImageRef};
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::process::Command;

const SKOPEO: &str = "/usr/bin/skopeo";
const BUSYBOX: &str = "/bin/busybox";

/// A layer tar: busybox-static as /bin/busybox, /bin/sh → busybox, and one marker file.
fn layer(marker: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir.clone(), "bin", &[][..]).unwrap();
    b.append_data(&mut dir, "etc", &[][..]).unwrap();
    let busybox = fs::read(BUSYBOX).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_mode(0o777);
    l.set_size(0);
    b.append_link(&mut l, "bin/sh", "busybox").unwrap();
    let mut m = tar::Header::new_gnu();
    m.set_mode(0o644);
    m.set_size(marker.len() as u64);
    b.append_data(&mut m, "etc/arch", marker.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

/// Writes one image and returns its manifest descriptor.
fn image(w: &LayoutWriter, arch: &str) -> Value {
    let run = json!({"Entrypoint": ["/bin/busybox"], "Cmd": ["httpd", "-f", "-p", "8080"],
                     "Env": ["PATH=/bin"], "WorkingDir": "/etc"});
    w.add_image(&[LayerBlob::gzip(&layer(arch)).unwrap()], run, arch)
        .unwrap()
}

/// Layout with tag `web` (one amd64 image) and tag `multi` (an index: arm64 and amd64).
fn build_layout(dir: &Path) {
    let w = LayoutWriter::create(dir).unwrap();
    let web = tagged(image(&w, "amd64"), "web");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [image(&w, "arm64"), image(&w, "amd64")]
    }))
    .unwrap();
    let id = w.put_blob(&index).unwrap();
    let multi = tagged(
        json!({"mediaType": "application/vnd.oci.image.index.v1+json",
               "digest": id.to_string(), "size": index.len()}),
        "multi",
    );
    w.write_index(&[web, multi]).unwrap();
}

/// `format`: skopeo's `--format` (`oci`, or `v2s2` for docker's schema 2 media types).
fn skopeo_copy(from: &str, to: &str, all: bool, format: &str) {
    let mut cmd = Command::new(SKOPEO);
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    cmd.args(["--format", format]);
    if all {
        cmd.arg("--all");
    }
    let out = cmd.arg(from).arg(to).output().expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pull_from_a_loopback_registry_pushed_by_skopeo() {
    let missing: Vec<&str> = [DOCKER_REGISTRY, SKOPEO, BUSYBOX]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        println!(
            "SKIPPED pull_from_a_loopback_registry_pushed_by_skopeo: {missing:?} not installed (apt-get install docker-registry skopeo busybox-static)"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let registry = Registry::start(t.path()).expect("start docker-registry");
    let addr = &registry.addr;
    let layout = t.path().join("layout");
    build_layout(&layout);
    let src = |tag: &str| format!("oci:{}:{tag}", layout.display());
    for (format, tag) in [("oci", "1"), ("v2s2", "v2s2")] {
        // v2s2: docker schema 2 (a manifest list, docker manifest and layer media types).
        let to = |name: &str| format!("docker://{addr}/test/{name}:{tag}");
        skopeo_copy(&src("web"), &to("web"), false, format);
        skopeo_copy(&src("multi"), &to("multi"), true, format);
    }

    // A single image (skopeo pushes it as an OCI manifest).
    let out = t.path().join("web");
    let image = ImageRef::parse(&format!("docker://{addr}/test/web:1"), t.path()).unwrap();
    let imported = import(&image, &out).unwrap();
    assert_eq!(
        fs::read(out.join("bin/busybox")).unwrap(),
        fs::read(BUSYBOX).unwrap()
    );
    assert_eq!(fs::read_to_string(out.join("etc/arch")).unwrap(), "amd64");
    assert_eq!(
        imported.defaults.args,
        ["/bin/busybox", "httpd", "-f", "-p", "8080"]
    );
    assert_eq!(imported.defaults.cwd.as_deref(), Some("/etc"));
    assert_eq!(imported.image, format!("docker://{addr}/test/web:1"));
    // The pull's temporary layout is gone.
    assert!(!t.path().join(".web.pull").exists());

    // The index: linux/amd64 is picked.
    let out = t.path().join("multi");
    let image = ImageRef::parse(&format!("docker://{addr}/test/multi:1"), t.path()).unwrap();
    import(&image, &out).unwrap();
    assert_eq!(fs::read_to_string(out.join("etc/arch")).unwrap(), "amd64");

    // Docker schema 2, single and as a manifest list.
    for name in ["web", "multi"] {
        let out = t.path().join(format!("{name}-v2s2"));
        let r = format!("docker://{addr}/test/{name}:v2s2");
        let imported = import(&ImageRef::parse(&r, t.path()).unwrap(), &out).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("etc/arch")).unwrap(),
            "amd64",
            "{r}"
        );
        assert_eq!(imported.defaults.cwd.as_deref(), Some("/etc"), "{r}");
    }

    // By digest, as printed by the first import.
    let digest = imported.manifest_digest.unwrap();
    let out = t.path().join("by-digest");
    let image = ImageRef::parse(&format!("docker://{addr}/test/web@{digest}"), t.path()).unwrap();
    import(&image, &out).unwrap();
    assert!(out.join("bin/busybox").is_file());

    // A missing tag is an error naming the reference.
    let image = ImageRef::parse(&format!("docker://{addr}/test/web:2"), t.path()).unwrap();
    let err = import(&image, &t.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404") && err.contains(&format!("docker://{addr}/test/web:2")),
        "{err}"
    );
    assert!(!t.path().join("none").exists());
}
