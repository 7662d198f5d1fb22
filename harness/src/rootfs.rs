//! The root filesystem test and benchmark containers run from: busybox-static with a link
//! per applet, and an /etc/passwd that knows root and nobody.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Where Debian's busybox-static puts the binary.
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Fills `root` (created if missing) with busybox, its applets in /bin, the usual empty
/// mount points plus `extra_dirs`, and /etc/passwd; `root` ends up mode 0755 so that
/// containers under any uid can walk it.
pub fn busybox(root: &Path, extra_dirs: &[&str]) -> io::Result<()> {
    for d in ["bin", "proc", "dev", "sys", "tmp", "run", "etc"]
        .iter()
        .chain(extra_dirs)
    {
        fs::create_dir_all(root.join(d))?;
    }
    let busybox = BUSYBOX
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "busybox-static is needed (apt-get install busybox-static)",
            )
        })?;
    fs::copy(busybox, root.join("bin/busybox"))?;
    let list = Command::new(root.join("bin/busybox"))
        .arg("--list")
        .output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        match symlink("busybox", root.join("bin").join(applet)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_has_busybox_applets_and_passwd_or_says_busybox_is_missing() {
        let dir =
            std::env::temp_dir().join(format!("sysctr-harness-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        match super::busybox(&dir, &["data"]) {
            Ok(()) => {
                assert!(dir.join("bin/sh").exists(), "no /bin/sh applet");
                assert!(dir.join("data").is_dir());
                let passwd = std::fs::read_to_string(dir.join("etc/passwd")).unwrap();
                assert!(passwd.contains("nobody:x:65534"));
            }
            Err(e) => assert!(e.to_string().contains("busybox-static"), "{e}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
