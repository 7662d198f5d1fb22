//! Changing a running system without a reboot (issue 14), on the real image: an OCI image
//! imported over ssh into the store on the state partition, a service applied that runs
//! from it, a change of its env that restarts only it, the applied set back after a
//! reboot, and its removal. One boot and one reboot (CI budget).

use std::path::{Path, PathBuf};
use std::time::Duration;
use sysctr_boot_tests::*;

const SYSTEM: &[&str] = &["network", "logging", "ssh", "time", "console"];

/// An uncompressed oci-archive (`image:1` inside) of one layer: the host's static busybox
/// with the mount points a read-only container root needs.
fn busybox_archive(dir: &Path) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static on the host");
    let mut layer = tar::Builder::new(Vec::new());
    let add_dir = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, name, &[][..]).unwrap();
    };
    for d in ["bin", "proc", "dev", "sys", "tmp", "run", "etc"] {
        add_dir(&mut layer, d);
    }
    let data = std::fs::read(busybox).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(data.len() as u64);
    layer.append_data(&mut h, "bin/busybox", &data[..]).unwrap();
    for applet in ["sh", "sleep", "echo"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        layer
            .append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let layout = dir.join("busybox-layout");
    let _ = std::fs::remove_dir_all(&layout);
    let w = rootfs::oci::layout::LayoutWriter::create(&layout).unwrap();
    let blob = rootfs::oci::layout::LayerBlob::tar(&layer);
    let desc = w
        .add_image(&[blob], serde_json::json!({"Cmd": ["/bin/sh"]}), "amd64")
        .unwrap();
    w.write_index(&[rootfs::oci::layout::tagged(desc, "1")])
        .unwrap();
    let file = dir.join("busybox.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&file).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    file
}

fn applied_set(dir: &Path, env: &str) -> PathBuf {
    let text = serde_json::json!({"version": 1, "services": [{
        "name": "boxed",
        "image": "busybox:1",
        "args": ["/bin/sh", "-c", "echo boxed up; while true; do sleep 1; done"],
        "env": [env],
        "depends_on": ["network"],
        "stop": {"timeout_secs": 2}
    }]});
    let file = dir.join(format!("applied-{env}.json"));
    std::fs::write(&file, text.to_string()).unwrap();
    file
}

fn pids(ps: &[serde_json::Value], names: &[&str]) -> Vec<(String, Option<i64>)> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                service(ps, n).and_then(|s| s["pid"].as_i64()),
            )
        })
        .collect()
}

fn ready(ps: &[serde_json::Value], name: &str) -> bool {
    service(ps, name).is_some_and(|s| s["state"] == "ready")
}

#[test]
fn import_apply_change_reboot_remove() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("apply", &image);
    let archive = busybox_archive(&scratch.dir);
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.wait_ps("every system service Ready", BOOT_TIMEOUT, system_ready);

    let long = Duration::from_secs(300);
    let (code, out, err) = vm.ssh_input("sysctr image import - busybox:1", &archive, long);
    assert_eq!(
        code,
        Some(0),
        "import failed: {out}\n{err}\n{}",
        vm.tail(40)
    );
    assert!(out.contains("imported busybox:1"), "{out}");

    // A bad apply (a system service's name) changes nothing.
    let bad = scratch.dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"version":1,"services":[{"name":"ssh","image":"busybox:1","args":["/bin/sh"]}]}"#,
    )
    .unwrap();
    let (code, _, err) = vm.ssh_input("sysctr apply -", &bad, long);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("system services cannot be replaced"), "{err}");

    let (code, out, err) = vm.ssh_input("sysctr apply -", &applied_set(&scratch.dir, "V=1"), long);
    assert_eq!(code, Some(0), "apply failed: {out}\n{err}\n{}", vm.tail(40));
    assert!(out.contains("+ boxed"), "{out}");
    let ps = vm.wait_ps("boxed Ready", BOOT_TIMEOUT, |ps| ready(ps, "boxed"));
    let system_before = pids(&ps, SYSTEM);
    let boxed_before = service(&ps, "boxed").unwrap()["pid"].as_i64();
    assert!(vm.ssh("sysctr logs boxed").contains("boxed up"));

    // Its env changes: it alone restarts.
    let (code, out, err) = vm.ssh_input("sysctr apply -", &applied_set(&scratch.dir, "V=2"), long);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("~ boxed"), "{out}");
    let ps = vm.wait_ps("boxed restarted and Ready", BOOT_TIMEOUT, |ps| {
        ready(ps, "boxed") && service(ps, "boxed").unwrap()["pid"].as_i64() != boxed_before
    });
    assert_eq!(
        pids(&ps, SYSTEM),
        system_before,
        "a system service restarted"
    );
    assert!(vm.ssh("sysctr inspect boxed").contains("V=2"));

    // Reboot: the applied set (and the image) come back from the state partition.
    let _ = vm.ssh_raw("sysctr reboot", Duration::from_secs(20));
    vm.wait_for("reboot: Restarting system", Duration::from_secs(120));
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.wait_ps("boxed Ready after the reboot", BOOT_TIMEOUT, |ps| {
        ready(ps, "boxed")
    });
    assert!(vm.ssh("sysctr inspect boxed").contains("V=2"));
    assert!(vm.ssh("sysctr image ls").contains("busybox:1"));

    // Remove it, then its image.
    let out = vm.ssh("sysctr rm boxed");
    assert!(out.contains("- boxed"), "{out}");
    vm.wait_ps("boxed gone", BOOT_TIMEOUT, |ps| {
        service(ps, "boxed").is_none()
    });
    let out = vm.ssh("sysctr image rm busybox:1");
    assert!(out.contains("busybox:1 removed"), "{out}");
    assert!(!vm.ssh("sysctr image ls").contains("busybox:1"));
    let _ = vm.ssh_raw("sysctr poweroff", Duration::from_secs(20));
    vm.wait_exit(Duration::from_secs(120));
}
