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
use anyhow::{bail, Context, Result};
use rootfs::assemble::make_writable;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Debian's docker-registry serving `dir/storage` on a free loopback port; killed on drop.
struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(dir: &Path) -> Result<Registry> {
        fs::create_dir_all(dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = dir.join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("cannot start docker-registry (apt-get install docker-registry)")?;
        let registry = Registry { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !registry.answers() {
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer on {} within 30 s: {}",
                    registry.addr,
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    /// `GET /v2/` answers 200: the registry is up.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let mut answer = String::new();
        s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && (answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
