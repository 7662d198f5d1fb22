//! What one boot test works on: the image under test (from the environment `cargo xtask
//! boot-test` sets) and a scratch directory with a copy of its disk and a fresh ssh key,
//! removed when the test passes (kept for a look when it fails); one VM at a time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// The image under test.
pub struct ImagePaths {
    pub kernel: PathBuf,
    pub disk: PathBuf,
}

impl ImagePaths {
    /// From SYSCTR_KERNEL and SYSCTR_DISK; panics with instructions when unset.
    pub fn from_env() -> ImagePaths {
        Self::from_vars("SYSCTR_KERNEL", "SYSCTR_DISK")
    }

    /// The development image (root shell on the console): SYSCTR_DEV_KERNEL, SYSCTR_DEV_DISK.
    pub fn dev_from_env() -> ImagePaths {
        Self::from_vars("SYSCTR_DEV_KERNEL", "SYSCTR_DEV_DISK")
    }

    /// The OCI appliance (services from an image layout, a `docker save` tar and a
    /// registry): SYSCTR_APPLIANCE_KERNEL, SYSCTR_APPLIANCE_DISK.
    pub fn appliance_from_env() -> ImagePaths {
        Self::from_vars("SYSCTR_APPLIANCE_KERNEL", "SYSCTR_APPLIANCE_DISK")
    }

    fn from_vars(kernel: &str, disk: &str) -> ImagePaths {
        let get = |var: &str| -> PathBuf {
            let v = std::env::var_os(var).unwrap_or_else(|| {
                panic!(
                    "{var} is not set: the boot tests need the image; run them with \
                     `cargo xtask boot-test` (or set {kernel} and {disk})"
                )
            });
            let p = PathBuf::from(v);
            assert!(p.exists(), "{var}={} does not exist", p.display());
            p
        };
        ImagePaths {
            kernel: get(kernel),
            disk: get(disk),
        }
    }
}

/// One VM at a time: TCG guests on a small machine time out when they run side by side, and
/// `cargo test` runs tests in parallel unless told otherwise.
static ONE_VM_AT_A_TIME: Mutex<()> = Mutex::new(());

/// This test's turn on the machine: while it is held no other test boots a VM.
pub struct Turn {
    _held: MutexGuard<'static, ()>,
}

impl Turn {
    /// Waits for the other tests' VMs to be gone.
    pub fn take() -> Turn {
        Turn {
            _held: ONE_VM_AT_A_TIME
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }
}

/// A scratch directory for one test: the disk copy, key, boot config, monitor socket.
/// Holding it also holds the one-VM-at-a-time lock, unless it was made [`Scratch::beside`]
/// others under one [`Turn`].
pub struct Scratch {
    pub dir: PathBuf,
    pub key: PathBuf,
    pub disk: PathBuf,
    _turn: Option<Turn>,
}

impl Scratch {
    /// A fresh copy of the image's disk and a fresh ssh key pair.
    pub fn new(name: &str, image: &ImagePaths) -> Scratch {
        let turn = Turn::take();
        let mut scratch = Self::create(name, image);
        scratch._turn = Some(turn);
        scratch
    }

    /// A scratch directory for one of several VMs that a test runs side by side during its
    /// `turn` (a run the caller sized for the machine: nothing else boots meanwhile).
    pub fn beside(_turn: &Turn, name: &str, image: &ImagePaths) -> Scratch {
        Self::create(name, image)
    }

    fn create(name: &str, image: &ImagePaths) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sysctr-boot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let disk = dir.join("disk.img");
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(&image.disk)
            .arg(&disk)
            .status()
            .expect("cp");
        assert!(st.success(), "copying the disk failed");
        let key = dir.join("id_ed25519");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "boot-test", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen (apt-get install openssh-client)");
        assert!(st.success(), "ssh-keygen failed");
        Scratch {
            dir,
            key,
            disk,
            _turn: None,
        }
    }

    /// A copy of the disk's state partition (ext4, partition 4) as `state.img` in the
    /// scratch dir, for e2fsck and debugfs on the host.
    pub fn state_partition(&self) -> PathBuf {
        let part = self.dir.join("state.img");
        let st = Command::new("dd")
            .arg(format!("if={}", self.disk.display()))
            .arg(format!("of={}", part.display()))
            .arg("bs=1M")
            .arg(format!("skip={}", rootfs::disk::STATE_START >> 20))
            .arg(format!("count={}", rootfs::disk::STATE_SIZE >> 20))
            .arg("status=none")
            .status()
            .expect("dd");
        assert!(st.success(), "dd the state partition");
        part
    }

    /// Writes a (changed) copy of the state partition from [`Scratch::state_partition`]
    /// back into the disk.
    pub fn put_state_partition(&self, part: &Path) {
        let st = Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", self.disk.display()))
            .arg("bs=1M")
            .arg(format!("seek={}", rootfs::disk::STATE_START >> 20))
            .args(["conv=notrunc", "status=none"])
            .status()
            .expect("dd");
        assert!(st.success(), "dd the state partition back");
    }

    pub fn public_key(&self) -> String {
        std::fs::read_to_string(self.key.with_extension("pub"))
            .expect("public key")
            .trim()
            .to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
