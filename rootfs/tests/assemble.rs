//! Assembling an OS root from appliance files with the real recipes of `system-containers/`
//! (busybox-static and dropbear-bin from the build host) and an OCI image service. The
//! static binaries are stand-ins and `openntpd` is a stand-in package folder, so nothing is
//! built or downloaded. Skips, saying so, without busybox-static and dropbear-bin.

use rootfs::appliance;
use rootfs::assemble::{assemble, Assembled, Host, Options};
use rootfs::oci::layout::{LayerBlob, LayoutWriter};
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

struct FakeHost {
    dir: PathBuf,
}

impl Host for FakeHost {
    fn ensure_packages(&self, names: &[&str]) -> anyhow::Result<()> {
        for n in names {
            let ok = std::process::Command::new("dpkg")
                .args(["-s", n])
                .output()?
                .status
                .success();
            anyhow::ensure!(ok, "package {n} is not installed");
        }
        Ok(())
    }

    fn downloaded_package(&self, name: &str) -> anyhow::Result<PathBuf> {
        // A package folder with the one file the time recipe takes from openntpd.
        let root = self.dir.join("debs").join(name);
        fs::create_dir_all(root.join("usr/sbin"))?;
        fs::copy("/bin/true", root.join("usr/sbin/ntpd"))?;
        Ok(root)
    }

    fn built(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(format!("built-{name}"));
        fs::copy("/bin/true", &p).ok()?;
        Some(p)
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn host_ready() -> bool {
    let ok = Path::new("/bin/busybox").exists() && Path::new("/usr/sbin/dropbear").exists();
    if !ok {
        println!("SKIPPED: busybox-static and dropbear-bin are needed (apt-get install busybox-static dropbear-bin)");
    }
    ok
}

/// An OCI layout with busybox as /bin/busybox and a config running httpd.
fn busybox_image(dir: &Path) {
    let w = LayoutWriter::create(dir).unwrap();
    let busybox = fs::read("/bin/busybox").unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", &busybox[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let run = json!({"Entrypoint": ["busybox"], "Cmd": ["httpd", "-f", "-p", "8080"], "Env": ["PATH=/bin"]});
    let desc = w.add_image(&[LayerBlob::tar(&tar)], run, "amd64").unwrap();
    w.write_index(&[desc]).unwrap();
}

/// Assembles `a` into `stage` with stand-in binaries and packages kept under `scratch`.
fn assemble_into(a: &appliance::Appliance, scratch: &Path, stage: &Path) -> Assembled {
    fs::create_dir(stage).unwrap();
    let host = FakeHost {
        dir: scratch.to_path_buf(),
    };
    assemble(a, &Options::default(), Path::new("/bin/true"), &host, stage).unwrap()
}

fn manifest_of(stage: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(stage.join("etc/sysctr/manifest.json")).unwrap())
        .unwrap()
}

#[test]
fn the_default_appliance_assembles_with_the_real_recipes() {
    if !host_ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let a = appliance::load(&workspace().join("examples/default.appliance.json")).unwrap();
    let stage = t.path().join("root");
    let done = assemble_into(&a, t.path(), &stage);
    let m = manifest_of(&stage);
    let names: Vec<&str> = m["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["logging", "network", "ssh", "time", "console"]);
    // The manifest entries are the system containers' service.json files, unchanged.
    let ssh: Value = serde_json::from_str(
        &fs::read_to_string(workspace().join("system-containers/ssh/service.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["services"][2], ssh);
    assert!(stage.join("usr/bin/sysctr").is_file());
    // PID 1 is the UKI's initramfs, not a file of the root.
    assert!(!stage.join("sbin/init").exists());
    assert!(stage
        .join("containers/ssh/rootfs/usr/sbin/dropbear")
        .is_file());
    assert!(stage.join("containers/ssh/rootfs/var/log").is_dir());
    // busybox is in four roots and stored once.
    let ino = |c: &str| {
        fs::metadata(stage.join(format!("containers/{c}/rootfs/bin/busybox")))
            .unwrap()
            .ino()
    };
    assert_eq!(ino("logging"), ino("console"));
    assert!(done.dedup.files_linked >= 3, "{:?}", done.dedup);
    assert_eq!(done.sizes.len(), 5);
}

#[test]
fn an_appliance_with_an_image_service_and_files_assembles() {
    if !host_ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    busybox_image(&t.path().join("img"));
    fs::write(t.path().join("motd"), "hello\n").unwrap();
    let file = t.path().join("web.appliance.json");
    fs::write(
        &file,
        r#"{
          "name": "web", "version": "1", "compatible": "org.example.web",
          "system_containers": ["logging", "network"],
          "services": [
            { "from": { "image": "oci:img" }, "name": "web", "depends_on": ["network"],
              "readiness": { "kind": "tcp", "port": 8080 } }
          ],
          "files": [
            { "dest": "/etc/motd", "src": "motd" },
            { "dest": "/etc/web/note", "text": "x", "mode": "600" }
          ]
        }"#,
    )
    .unwrap();
    let a = appliance::load_with(&file, Some(&workspace().join("system-containers"))).unwrap();
    let stage = t.path().join("root");
    assemble_into(&a, t.path(), &stage);
    let m = manifest_of(&stage);
    let web = &m["services"][2];
    assert_eq!(web["root"], "/containers/web/rootfs");
    assert_eq!(web["args"], json!(["busybox", "httpd", "-f", "-p", "8080"]));
    // The image's busybox and the recipes' are one inode.
    let ino = |c: &str| {
        fs::metadata(stage.join(format!("containers/{c}/rootfs/bin/busybox")))
            .unwrap()
            .ino()
    };
    assert_eq!(ino("web"), ino("logging"));
    assert_eq!(
        fs::read_to_string(stage.join("etc/motd")).unwrap(),
        "hello\n"
    );
    let mode = fs::metadata(stage.join("etc/web/note")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(stage.join("containers/web/rootfs/proc").is_dir());
}

/// The web example as a newcomer builds it: its image made by examples/web/build-image.sh
/// (umoci), the appliance assembled, and the imported root's own httpd serving the page
/// (run on the host here, on a free loopback port; the boot test runs it in the image).
#[test]
fn the_web_example_serves_its_page() {
    use std::io::{Read, Write};
    if !host_ready() {
        return;
    }
    if !Path::new("/usr/bin/umoci").exists() {
        println!(
            "SKIPPED the_web_example_serves_its_page: umoci not installed (apt-get install umoci)"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let examples = workspace().join("examples");
    let file = t.path().join("web.appliance.json");
    fs::copy(examples.join("web.appliance.json"), &file).unwrap();
    let out = std::process::Command::new("sh")
        .arg(examples.join("web/build-image.sh"))
        .arg(t.path().join("web/image"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = appliance::load_with(&file, Some(&workspace().join("system-containers"))).unwrap();
    let stage = t.path().join("root");
    assemble_into(&a, t.path(), &stage);
    let m = manifest_of(&stage);
    let web = m["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web")
        .unwrap()
        .clone();
    assert_eq!(
        web["args"],
        json!([
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/srv/www"
        ])
    );
    assert_eq!(web["user"], json!({"uid": 33, "gid": 33}));
    assert_eq!(web["readiness"]["port"], 8080);

    // The root's busybox httpd, on the host, serving the root's page.
    let root = stage.join("containers/web/rootfs");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut httpd = std::process::Command::new(root.join("bin/busybox"))
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
        .arg(root.join("srv/www"))
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let page = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "httpd did not listen");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = httpd.kill();
    let _ = httpd.wait();
    assert!(
        page.starts_with("HTTP/1.") && page.contains(" 200 "),
        "{page}"
    );
    assert!(page.contains("Hello from a sysctr appliance"), "{page}");
}
