//! The bootable disk: a GPT with an EFI System Partition, two root slots and the state
//! partition; per slot a Unified Kernel Image (kernel + that slot's command line with its
//! dm-verity root hash + os-release) started by systemd-boot with boot counting.
//!
//! ```text
//! LBA 0..2047      protective MBR, GPT header and entries
//! p1  ESP          FAT, /EFI/BOOT/BOOTX64.EFI (systemd-boot), /loader/loader.conf,
//!                  /EFI/Linux/sysctr-g1-a+3.efi (slot A's UKI, 3 tries), /sysctr/config.json
//! p2  root A       squashfs, then its dm-verity hash tree
//! p3  root B       empty until the first update
//! p4  state        ext4 SYSCTR_STATE, mounted on /var
//! ```
//!
//! Same inputs give the same bytes: fixed disk, partition and filesystem identifiers, FAT
//! made with `--invariant`, every timestamp `SOURCE_DATE_EPOCH`.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const MIB: u64 = 1 << 20;
/// The EFI System Partition: two UKIs (~4 MB each) and the loader, with room for an update
/// to write the other slot's UKI before the old one is removed.
pub const ESP_START: u64 = MIB;
pub const ESP_SIZE: u64 = 32 * MIB;
/// Each root slot: squashfs plus its hash tree.
pub const ROOT_SIZE: u64 = 64 * MIB;
pub const ROOT_A_START: u64 = ESP_START + ESP_SIZE;
pub const ROOT_B_START: u64 = ROOT_A_START + ROOT_SIZE;
pub const STATE_START: u64 = ROOT_B_START + ROOT_SIZE;
pub const STATE_SIZE: u64 = 64 * MIB;
/// The last MiB holds the backup GPT.
pub const DISK_SIZE: u64 = STATE_START + STATE_SIZE + MIB;

/// Fixed identifiers, so the same inputs give the same bytes (`5359534354520` is "SYSCTR").
pub const DISK_GUID: &str = "53595343-5452-4000-8000-000000000000";
pub const STATE_PART_GUID: &str = "53595343-5452-4000-8000-000000000002";
pub const STATE_FS_UUID: &str = "53595343-5452-4000-8000-000000000003";
pub const ESP_PART_GUID: &str = "53595343-5452-4000-8000-000000000006";
/// The ESP's FAT volume id (`mkfs.fat -i`).
pub const ESP_VOLUME_ID: &str = "53595343";

/// Partition type GUIDs of the Discoverable Partitions Specification (sgdisk codes): the ESP
/// (ef00), a root partition for x86-64 (8304), /var (8310).
pub const TYPE_ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
pub const TYPE_ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
pub const TYPE_VAR: &str = "4D21B016-B534-45C2-A9FB-5C16E091FD2D";

/// GPT partition names init looks for (`PARTNAME=` in sysfs).
pub const ESP_NAME: &str = "SYSCTR_ESP";
pub const STATE_NAME: &str = "SYSCTR_STATE";

/// dm-verity salt and hash-tree UUID, fixed for reproducibility (the salt only has to be
/// unique per image family, not secret).
pub const VERITY_SALT: &str = "73797363747220726f6f7420766572697479000000000000000000000000002a";
pub const VERITY_UUID: &str = "53595343-5452-4000-8000-000000000004";
/// dm-verity data and hash block size.
pub const VERITY_BLOCK: u64 = 4096;

/// Tries systemd-boot gives a new entry before it falls back to the next one.
pub const BOOT_TRIES: u32 = 3;
/// The factory image's install generation (see [`Slot::uki_name`]).
pub const FIRST_GENERATION: u32 = 1;

/// Debian's systemd-boot and its UKI stub (package systemd-boot-efi).
pub const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
pub const UKI_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Host tools this module runs, by Debian package.
pub const DISK_PACKAGES: &[&str] = &[
    "gdisk",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "systemd-boot-efi",
    "binutils",
    "xz-utils",
    "cpio",
    "e2fsprogs",
];

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }
    /// The slot's GPT partition number.
    pub fn partition(self) -> u32 {
        match self {
            Slot::A => 2,
            Slot::B => 3,
        }
    }
    pub fn start(self) -> u64 {
        match self {
            Slot::A => ROOT_A_START,
            Slot::B => ROOT_B_START,
        }
    }
    /// The slot partition's unique GUID; the UKI's command line names its root by it, so the
    /// same UKI boots from virtio, NVMe, SATA or USB.
    pub fn part_guid(self) -> &'static str {
        match self {
            Slot::A => "53595343-5452-4000-8000-000000000001",
            Slot::B => "53595343-5452-4000-8000-000000000005",
        }
    }
    pub fn part_name(self) -> &'static str {
        match self {
            Slot::A => "SYSCTR_ROOT_A",
            Slot::B => "SYSCTR_ROOT_B",
        }
    }
    /// The UKI's file name on the ESP: install generation `gen`, this slot, and `tries` boot
    /// attempts left (BLS boot counting), e.g. `sysctr-g1-a+3.efi`. systemd-boot boots the
    /// entry whose name sorts highest (version order, so `g10` > `g9`) among those with tries
    /// left: every install takes the next generation, so the newest install is tried first —
    /// an upgrade or an allowed downgrade alike — and a bad one falls back to the other.
    pub fn uki_name(self, gen: u32, tries: Option<u32>) -> String {
        match tries {
            Some(t) => format!("sysctr-g{gen}-{}+{t}.efi", self.letter()),
            None => format!("sysctr-g{gen}-{}.efi", self.letter()),
        }
    }
}

/// A root filesystem image with its dm-verity hash tree appended at `data_bytes`.
#[derive(Debug, Clone)]
pub struct VerityRoot {
    /// Bytes of filesystem data (a multiple of [`VERITY_BLOCK`]); the tree starts here.
    pub data_bytes: u64,
    pub root_hash: String,
}

impl VerityRoot {
    pub fn data_blocks(&self) -> u64 {
        self.data_bytes / VERITY_BLOCK
    }

    /// The `dm-mod.create=` table mapping `slot`'s partition through dm-verity.
    pub fn dm_table(&self, slot: Slot) -> String {
        let dev = format!("PARTUUID={}", slot.part_guid());
        let blocks = self.data_blocks();
        format!(
            "0 {sectors} verity 1 {dev} {dev} {VERITY_BLOCK} {VERITY_BLOCK} {blocks} {blocks} sha256 {hash} {VERITY_SALT}",
            sectors = self.data_bytes / 512,
            hash = self.root_hash,
        )
    }

    /// The kernel command line that boots `slot` with this root: verified block by block,
    /// and a kernel that cannot mount it reboots after 5 s so boot counting can fall back.
    pub fn cmdline(&self, slot: Slot, extra: &str) -> String {
        let mut line = format!(
            "console=tty0 console=ttyS0 panic=5 sysctr.slot={slot} dm-mod.waitfor=PARTUUID={guid} dm-mod.create=\"sysctr-root,,,ro,{table}\" root=/dev/dm-0 rootfstype=squashfs ro",
            slot = slot.letter(),
            guid = slot.part_guid(),
            table = self.dm_table(slot),
        );
        if !extra.trim().is_empty() {
            line.push(' ');
            line.push_str(extra.trim());
        }
        line
    }
}

/// Pads `image` to whole verity blocks and appends its hash tree (`veritysetup format`),
/// returning where the tree starts and the root hash. `image` then holds data + tree, as
/// written to a slot.
pub fn append_verity(image: &Path) -> Result<VerityRoot> {
    let len = fs::metadata(image)?.len();
    let data_bytes = len.div_ceil(VERITY_BLOCK) * VERITY_BLOCK;
    fs::OpenOptions::new()
        .write(true)
        .open(image)?
        .set_len(data_bytes)?;
    let tree = image.with_extension("verity-tmp");
    let _ = fs::remove_file(&tree);
    let out = Command::new("veritysetup")
        .args(["format", "--no-superblock", "--hash", "sha256"])
        .arg(format!("--data-block-size={VERITY_BLOCK}"))
        .arg(format!("--hash-block-size={VERITY_BLOCK}"))
        .arg(format!("--salt={VERITY_SALT}"))
        .arg(format!("--uuid={VERITY_UUID}"))
        .arg(image)
        .arg(&tree)
        .output()
        .context("cannot run veritysetup (apt-get install cryptsetup-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "veritysetup format {} failed: {}{}",
            image.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root_hash = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .with_context(|| format!("veritysetup printed no root hash:\n{text}"))?;
    let tree_bytes = fs::read(&tree)?;
    fs::remove_file(&tree)?;
    let mut f = fs::OpenOptions::new().append(true).open(image)?;
    f.write_all(&tree_bytes)?;
    let total = fs::metadata(image)?.len();
    if total > ROOT_SIZE {
        bail!(
            "{}: root filesystem plus hash tree ({total} bytes) do not fit a {ROOT_SIZE}-byte slot",
            image.display()
        );
    }
    Ok(VerityRoot {
        data_bytes,
        root_hash,
    })
}

/// What goes into a UKI's `.osrel` section: systemd-boot shows PRETTY_NAME. There is
/// deliberately no VERSION_ID/IMAGE_VERSION: systemd-boot would order entries by them before
/// their names, and the install generation in the name ([`Slot::uki_name`]) must decide, so
/// that an allowed downgrade is booted too. The version is in SYSCTR_VERSION.
pub fn os_release(name: &str, version: &str, slot: Slot) -> String {
    format!(
        "ID=sysctr\nNAME=\"sysctr\"\nPRETTY_NAME=\"{name} {version} (slot {s})\"\nSYSCTR_VERSION={version}\nSYSCTR_SLOT={s}\n",
        s = slot.letter()
    )
}

/// Assembles a UKI: systemd's EFI stub with the os-release, command line, kernel and (when
/// given) initramfs as PE sections placed after the stub's own image.
pub fn make_uki(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    osrel: &str,
    out: &Path,
) -> Result<()> {
    let dir = out.parent().context("UKI path has no parent")?;
    let osrel_file = dir.join(".osrel.tmp");
    let cmdline_file = dir.join(".cmdline.tmp");
    fs::write(&osrel_file, osrel)?;
    fs::write(&cmdline_file, cmdline)?;
    let stub_end = pe_size_of_image(Path::new(UKI_STUB))?;
    let align = |x: u64| x.div_ceil(0x10000) * 0x10000;
    let osrel_at = align(stub_end);
    let cmdline_at = align(osrel_at + osrel.len() as u64);
    let linux_at = align(cmdline_at + cmdline.len() as u64);
    let initrd_at = align(linux_at + fs::metadata(kernel)?.len());
    let _ = fs::remove_file(out);
    let mut objcopy = Command::new("objcopy");
    if let Some(initrd) = initrd {
        objcopy
            .arg("--add-section")
            .arg(format!(".initrd={}", initrd.display()))
            .arg(format!("--change-section-vma=.initrd={initrd_at:#x}"));
    }
    let status = objcopy
        .arg("--add-section")
        .arg(format!(".osrel={}", osrel_file.display()))
        .arg(format!("--change-section-vma=.osrel={osrel_at:#x}"))
        .arg("--add-section")
        .arg(format!(".cmdline={}", cmdline_file.display()))
        .arg(format!("--change-section-vma=.cmdline={cmdline_at:#x}"))
        .arg("--add-section")
        .arg(format!(".linux={}", kernel.display()))
        .arg(format!("--change-section-vma=.linux={linux_at:#x}"))
        .arg(UKI_STUB)
        .arg(out)
        .status()
        .context("cannot run objcopy (apt-get install binutils)")?;
    let _ = fs::remove_file(&osrel_file);
    let _ = fs::remove_file(&cmdline_file);
    if !status.success() {
        bail!("objcopy could not assemble the UKI {}", out.display());
    }
    Ok(())
}

/// SizeOfImage of a PE binary, from `objdump -p`.
fn pe_size_of_image(pe: &Path) -> Result<u64> {
    let out = Command::new("objdump")
        .arg("-p")
        .arg(pe)
        .output()
        .with_context(|| format!("cannot run objdump on {}", pe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("SizeOfImage"))
        .map(str::trim)
        .with_context(|| {
            format!(
                "{}: no SizeOfImage (is systemd-boot-efi installed?)",
                pe.display()
            )
        })?;
    u64::from_str_radix(hex, 16).with_context(|| format!("{}: SizeOfImage {hex}", pe.display()))
}

/// A file to put on the ESP: its path there (`/EFI/BOOT/BOOTX64.EFI`) and its contents.
pub struct EspFile {
    pub dest: String,
    pub src: PathBuf,
}

/// systemd-boot's configuration: no menu unless a key is held, no command-line editor (the
/// command line with the root hash is inside the UKI anyway), only our entries.
pub const LOADER_CONF: &str =
    "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n";

/// A FAT image of `size` bytes holding `files`.
pub fn make_esp(out: &Path, size: u64, files: &[EspFile], epoch: u64) -> Result<()> {
    let _ = fs::remove_file(out);
    let status = Command::new("mkfs.fat")
        .args(["--invariant", "-i", ESP_VOLUME_ID, "-n", "SYSCTR_ESP", "-C"])
        .arg(out)
        .arg((size / 1024).to_string())
        .stdout(Stdio::null())
        .status()
        .context("cannot run mkfs.fat (apt-get install dosfstools)")?;
    if !status.success() {
        bail!("mkfs.fat {} failed", out.display());
    }
    let mtools = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let st = Command::new(args[0])
            .args(&args[1..])
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .status()
            .with_context(|| format!("cannot run {:?} (apt-get install mtools)", args[0]))?;
        if !st.success() {
            bail!("{args:?} failed");
        }
        Ok(())
    };
    let img = out.as_os_str();
    let mut made = std::collections::BTreeSet::new();
    for f in files {
        let dest = Path::new(&f.dest);
        let mut dir = PathBuf::from("/");
        for c in dest
            .parent()
            .into_iter()
            .flat_map(|p| p.components().skip(1))
        {
            dir.push(c);
            if made.insert(dir.clone()) {
                let d = format!("::{}", dir.display());
                mtools(&["mmd".as_ref(), "-i".as_ref(), img, d.as_ref()])?;
            }
        }
        // mcopy -m keeps the source's mtime: set it to the epoch first, on a copy.
        let staged = out.with_extension("staged");
        fs::copy(&f.src, &staged)
            .with_context(|| format!("cannot read {} for the ESP", f.src.display()))?;
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
        fs::File::options()
            .write(true)
            .open(&staged)?
            .set_modified(t)?;
        let d = format!("::{}", f.dest);
        mtools(&[
            "mcopy".as_ref(),
            "-m".as_ref(),
            "-i".as_ref(),
            img,
            staged.as_os_str(),
            d.as_ref(),
        ])?;
        fs::remove_file(&staged)?;
    }
    Ok(())
}

/// An empty ext4 labelled SYSCTR_STATE, reproducible (fixed UUID, hash seed and time).
pub fn make_state_fs(path: &Path, epoch: u64) -> Result<()> {
    let _ = fs::remove_file(path);
    fs::File::create(path)?.set_len(STATE_SIZE)?;
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", STATE_NAME, "-U", STATE_FS_UUID])
        .arg("-E")
        .arg(format!("hash_seed={STATE_FS_UUID},root_owner=0:0"))
        .arg(path)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .status()
        .context("cannot run mkfs.ext4 (apt-get install e2fsprogs)")?;
    if !st.success() {
        bail!("mkfs.ext4 {} failed", path.display());
    }
    Ok(())
}

/// The whole disk: GPT with the four partitions, the ESP, slot A's root (data + tree) and the
/// state filesystem written in place; slot B left zero (sparse).
pub fn make_disk(disk: &Path, esp: &Path, root_a: &Path, state: &Path) -> Result<()> {
    for (what, f, max) in [
        ("ESP", esp, ESP_SIZE),
        ("root slot A", root_a, ROOT_SIZE),
        ("state", state, STATE_SIZE),
    ] {
        let len = fs::metadata(f)
            .with_context(|| format!("{}", f.display()))?
            .len();
        if len > max {
            bail!(
                "{what} image {} is {len} bytes, more than its {max}-byte partition",
                f.display()
            );
        }
    }
    let _ = fs::remove_file(disk);
    fs::File::create(disk)?.set_len(DISK_SIZE)?;
    let s = |bytes: u64| bytes / 512;
    let mut cmd = Command::new("sgdisk");
    cmd.arg(format!("--disk-guid={DISK_GUID}"));
    let parts: [(u32, u64, u64, &str, &str, &str); 4] = [
        (1, ESP_START, ESP_SIZE, TYPE_ESP, ESP_NAME, ESP_PART_GUID),
        (
            2,
            ROOT_A_START,
            ROOT_SIZE,
            TYPE_ROOT_X86_64,
            Slot::A.part_name(),
            Slot::A.part_guid(),
        ),
        (
            3,
            ROOT_B_START,
            ROOT_SIZE,
            TYPE_ROOT_X86_64,
            Slot::B.part_name(),
            Slot::B.part_guid(),
        ),
        (
            4,
            STATE_START,
            STATE_SIZE,
            TYPE_VAR,
            STATE_NAME,
            STATE_PART_GUID,
        ),
    ];
    for (n, start, size, ty, name, guid) in parts {
        cmd.arg(format!("--new={n}:{}:{}", s(start), s(start + size) - 1))
            .arg(format!("--typecode={n}:{ty}"))
            .arg(format!("--change-name={n}:{name}"))
            .arg(format!("--partition-guid={n}:{guid}"));
    }
    let out = cmd
        .arg(disk)
        .output()
        .context("cannot run sgdisk (apt-get install gdisk)")?;
    if !out.status.success() {
        bail!(
            "sgdisk {} failed: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    write_at(disk, ESP_START, esp)?;
    write_at(disk, ROOT_A_START, root_a)?;
    write_at(disk, STATE_START, state)?;
    Ok(())
}

/// `disk.img.xz` beside the disk, for downloads.
pub fn compress(disk: &Path) -> Result<PathBuf> {
    let out = disk.with_extension("img.xz");
    let _ = fs::remove_file(&out);
    let st = Command::new("xz")
        .args(["-k", "-f", "-T2", "-6"])
        .arg(disk)
        .status()
        .context("cannot run xz (apt-get install xz-utils)")?;
    if !st.success() {
        bail!("xz {} failed", disk.display());
    }
    Ok(out)
}

/// Copies `src` into `disk` at byte `offset`.
pub fn write_at(disk: &Path, offset: u64, src: &Path) -> Result<()> {
    write_bytes_at(disk, offset, &fs::read(src)?)
}

/// Writes `data` into `disk` at byte `offset`.
pub fn write_bytes_at(disk: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(test)]
mod tests;
