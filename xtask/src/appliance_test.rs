//! The OCI appliance of the boot tests (`boot-tests/tests/appliance.rs`): one image whose
//! three web servers come from the three kinds of OCI source an appliance file names — an
//! OCI image layout, a `docker save` tar and a registry.
//!
//! Everything is made here, offline: the layout by the web example's own script
//! (`examples/web/build-image.sh`, Debian's umoci and busybox-static), the `docker save` tar
//! by `skopeo copy` from that layout, and the registry is Debian's `docker-registry` on a
//! free loopback port, the image pushed to it by skopeo. The registry runs only while the
//! image is built (the build pulls from it) and is stopped however the build ends.

use crate::image;
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{Context, Result};
use harness::registry::Registry;
use rootfs::assemble::make_writable;
use std::fs;
use std::process::Command;

/// umoci builds the layout, skopeo converts and pushes it, docker-registry serves it.
pub const PACKAGES: &[&str] = &["umoci", "skopeo", "docker-registry", "busybox-static"];

/// The services of the appliance and the port each one's httpd listens on (the boot test
/// reads the same table from its own copy: keep them in step).
pub const SERVICES: &[(&str, u16)] = &[
    ("web-layout", 8080),
    ("web-docker-save", 8081),
    ("web-registry", 8082),
];

/// Builds the images, the appliance file (in `build/appliance-test/`) and the appliance's
/// disk image (in `build/image-appliance-test/`).
pub fn build() -> Result<image::Image> {
    ensure_debian_packages(PACKAGES)?;
    let root = workspace_root();
    let dir = root.join("build").join("appliance-test");
    if dir.exists() {
        make_writable(&dir)?;
        fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;

    eprintln!("xtask: appliance test: the web example's OCI image layout (umoci)");
    let layout = dir.join("web-layout");
    run(Command::new("sh")
        .arg(root.join("examples/web/build-image.sh"))
        .arg(&layout))?;
    let source = format!("oci:{}:1.0", layout.display());

    eprintln!("xtask: appliance test: the same image as a `docker save` tar (skopeo)");
    let archive = dir.join("web-docker-save.tar");
    skopeo_copy(
        &source,
        &format!("docker-archive:{}:test/web:1.0", archive.display()),
    )?;

    eprintln!("xtask: appliance test: docker-registry on loopback, the image pushed by skopeo");
    let registry = Registry::start(&dir.join("registry"))?;
    skopeo_copy(&source, &format!("docker://{}/test/web:1.0", registry.addr))?;

    // The layout's service takes its whole command line, working directory and user from the
    // image config (busybox httpd on 8080 as `www`); the other two replace the command line
    // to listen on their own port (the machine's network: the boot test fetches the pages
    // from the ssh container).
    let service = |name: &str, image: String, port: u16| {
        let mut s = serde_json::json!({
            "from": { "image": image },
            "name": name,
            "namespaces": { "network": "host" },
            "resources": { "memory_max": "32M", "pids_max": 32 },
            "readiness": { "kind": "tcp", "port": port, "timeout_secs": 90 },
            "annotations": { "org.sysctr.test": format!("root from {}", name.trim_start_matches("web-")) },
        });
        if port != 8080 {
            s["args"] = serde_json::json!([
                "/bin/busybox",
                "httpd",
                "-f",
                "-p",
                port.to_string(),
                "-h",
                "/srv/www"
            ]);
        }
        s
    };
    let images = [
        "oci:web-layout:1.0".to_string(),
        "docker-archive:web-docker-save.tar:test/web:1.0".to_string(),
        format!("docker://{}/test/web:1.0", registry.addr),
    ];
    let services: Vec<serde_json::Value> = SERVICES
        .iter()
        .zip(images)
        .map(|((name, port), image)| service(name, image, *port))
        .collect();
    let appliance = serde_json::json!({
        "name": "oci-test",
        "version": "0.1.0",
        "compatible": "org.sysctr.test.oci",
        "system_containers": image::default_containers()?,
        "services": services,
    });
    let file = dir.join("oci-test.appliance.json");
    fs::write(&file, serde_json::to_string_pretty(&appliance)? + "\n")?;

    let img = image::build(&image::Options {
        appliance: Some(file),
        out: Some(root.join("build").join("image-appliance-test")),
        ..Default::default()
    });
    drop(registry);
    img
}

fn skopeo_copy(from: &str, to: &str) -> Result<()> {
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg("--dest-tls-verify=false")
        .arg(from)
        .arg(to))
    .with_context(|| format!("skopeo copy {from} {to}"))
}
