//! Which slot and boot entry this boot came from, and blessing a boot-counted entry.
//!
//! The UKI's command line names its slot (`sysctr.slot=a`). systemd-boot tells the rest
//! through EFI variables (efivarfs, vendor GUID 4a67b082-…): `LoaderEntrySelected` (the entry
//! id, e.g. `sysctr-a+2-1.efi`), `LoaderBootCountPath` (set only when the entry is boot-counted:
//! its path on the ESP), `LoaderDevicePartUUID` (the ESP), `LoaderInfo`, `LoaderFirmwareInfo`,
//! and `LoaderTimeInitUSec`/`LoaderTimeExecUSec` (when the loader started and when it handed
//! over, for the boot timeline).
//!
//! Blessing follows the Boot Loader Specification's boot counting: systemd-boot renames
//! `sysctr-g1-a+3.efi` to `sysctr-g1-a+2-1.efi` before it starts it; once the health gate
//! passes ([`crate::health`]), init renames it to `sysctr-g1-a.efi` (no counter: a good
//! entry). An entry whose boots never get that far reaches `+0-3`, which systemd-boot sorts
//! last, so the other slot boots; a bad verdict of the gate marks it `+0-N` at once.

use crate::mounts;
use manifest::protocol::BootInfo;
use nix::mount::MsFlags;
use std::fs;
use std::path::{Path, PathBuf};

/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// The vendor GUID of systemd-boot's variables (the Boot Loader Interface).
const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where init mounts the ESP while it reads or renames files on it.
pub const ESP_MOUNT: &str = "/run/sysctr/esp";
/// The ESP's GPT partition name in sysctr's disk layout.
pub const ESP_PARTNAME: &str = "SYSCTR_ESP";

/// A loader variable as text: efivarfs files are 4 bytes of attributes, then the value, here
/// a NUL-terminated UTF-16LE string.
pub fn loader_var(efivars: &Path, name: &str) -> Option<String> {
    let raw = fs::read(efivars.join(format!("{name}-{LOADER_GUID}"))).ok()?;
    decode_utf16_var(&raw)
}

fn decode_utf16_var(raw: &[u8]) -> Option<String> {
    let data = raw.get(4..)?;
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The boot counter in an entry's file name: `sysctr-a+2-1.efi` → (2 left, 1 done).
pub fn parse_counter(name: &str) -> Option<(u32, u32)> {
    let stem = name
        .rsplit(['\\', '/'])
        .next()?
        .trim_end_matches(".efi")
        .trim_end_matches(".conf");
    let (_, counter) = stem.rsplit_once('+')?;
    let (left, done) = match counter.split_once('-') {
        Some((l, d)) => (l.parse().ok()?, d.parse().ok()?),
        None => (counter.parse().ok()?, 0),
    };
    Some((left, done))
}

/// The blessed name of a counted entry: the counter removed (`…/sysctr-a+2-1.efi` →
/// `sysctr-a.efi`). None for a name without a counter.
pub fn blessed_name(name: &str) -> Option<String> {
    let file = name.rsplit(['\\', '/']).next()?;
    let (stem, ext) = match file.rsplit_once('.') {
        Some((s, e)) => (s, format!(".{e}")),
        None => (file, String::new()),
    };
    let (base, counter) = stem.rsplit_once('+')?;
    parse_counter(&format!("x+{counter}"))?;
    Some(format!("{base}{ext}"))
}

/// What this boot knows about its slot and entry.
pub fn detect(cmdline: &str, efivars: &Path) -> BootInfo {
    let slot = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sysctr.slot="))
        .map(str::to_string);
    let uefi = efivars.join(format!("LoaderInfo-{LOADER_GUID}")).exists()
        || Path::new("/sys/firmware/efi").exists();
    let var = |n: &str| loader_var(efivars, n);
    let entry = var("LoaderEntrySelected");
    let count_path = var("LoaderBootCountPath");
    let counter = count_path.as_deref().and_then(parse_counter);
    BootInfo {
        slot,
        uefi,
        entry,
        boot_count_path: count_path,
        tries_left: counter.map(|c| c.0),
        tries_done: counter.map(|c| c.1),
        blessed: false,
        loader: var("LoaderInfo"),
        firmware: var("LoaderFirmwareInfo"),
        loader_init_us: var("LoaderTimeInitUSec").and_then(|s| s.parse().ok()),
        loader_exec_us: var("LoaderTimeExecUSec").and_then(|s| s.parse().ok()),
        health: None,
        previous_failure: None,
        os_version: crate::update::run::read_release(Path::new(crate::update::run::RELEASE_FILE))
            .ok()
            .map(|r| r.version),
    }
}

/// A one-line description for the console.
pub fn describe(b: &BootInfo) -> String {
    let mut s = format!(
        "slot {}, {}",
        b.slot.as_deref().unwrap_or("?"),
        if b.uefi {
            "UEFI"
        } else {
            "direct kernel (no firmware)"
        }
    );
    if let Some(e) = &b.entry {
        s.push_str(&format!(", entry {e}"));
    }
    match (b.tries_left, b.tries_done) {
        (Some(l), Some(d)) => s.push_str(&format!(
            ", trial boot of {} ({l} tries left, {d} done): blessed when every service is Ready",
            b.boot_count_path.as_deref().unwrap_or("?")
        )),
        _ if b.uefi => s.push_str(", entry not boot-counted"),
        _ => {}
    }
    s
}

/// Mounts the ESP on [`ESP_MOUNT`] (read-only unless `writable`), runs `f` with its path,
/// and unmounts it again: a FAT left mounted is one more thing a power cut can damage.
pub fn with_esp<T>(
    writable: bool,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let dev = mounts::find_partition(
        Path::new("/sys/class/block"),
        Path::new("/dev"),
        ESP_PARTNAME,
    )
    .ok_or_else(|| format!("no {ESP_PARTNAME} partition (the ESP) found"))?;
    let target = Path::new(ESP_MOUNT);
    fs::create_dir_all(target).map_err(|e| format!("create {ESP_MOUNT}: {e}"))?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !writable {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some(dev.as_path()),
        target,
        Some("vfat"),
        flags,
        Some("umask=0077,shortname=mixed,flush"),
    )
    .map_err(|e| format!("mount {} (vfat) on {ESP_MOUNT}: {e}", dev.display()))?;
    let res = f(target);
    if let Err(e) = nix::mount::umount(target) {
        crate::warn!("esp", "umount {ESP_MOUNT}: {e}");
    }
    res
}

/// Blesses the booted entry: renames its counted file on the ESP to the counter-less name and
/// syncs the directory. A boot that was not counted has nothing to bless.
pub fn bless(b: &mut BootInfo) -> Result<Option<String>, String> {
    let Some(path) = b.boot_count_path.clone() else {
        return Ok(None);
    };
    let new_name = blessed_name(&path)
        .ok_or_else(|| format!("LoaderBootCountPath {path:?} has no boot counter"))?;
    let rel: PathBuf = path.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
    let done = with_esp(true, |esp| rename_on_esp(esp, &rel, &new_name))?;
    b.blessed = true;
    b.tries_left = None;
    b.tries_done = None;
    b.entry = Some(new_name);
    b.boot_count_path = None;
    Ok(Some(done))
}

/// The name that marks a counted entry bad: no tries left (`sysctr-b+2-1.efi` →
/// `sysctr-b+0-1.efi`); systemd-boot sorts it after every other entry.
pub fn bad_name(name: &str) -> Option<String> {
    let file = name.rsplit(['\\', '/']).next()?;
    let (stem, ext) = file.rsplit_once('.')?;
    let (base, _) = stem.rsplit_once('+')?;
    let (_, done) = parse_counter(file)?;
    Some(format!("{base}+0-{done}.{ext}"))
}

/// Whether the ESP's `/EFI/Linux` holds an entry other than `booted` that is not bad (no
/// counter, or tries left): the one systemd-boot falls back to.
pub fn other_good_entry(esp: &Path, booted: &str) -> Result<Option<String>, String> {
    let booted = booted
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(booted)
        .to_lowercase();
    let dir = find_ci(esp, &["EFI", "Linux"])?;
    let mut found = None;
    for e in fs::read_dir(&dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_lowercase();
        if !name.ends_with(".efi") || name == booted {
            continue;
        }
        if parse_counter(&name).is_none_or(|(left, _)| left > 0) {
            found = Some(name);
        }
    }
    Ok(found)
}

/// A path below `root`, each component matched without case (FAT).
fn find_ci(root: &Path, comps: &[&str]) -> Result<PathBuf, String> {
    let mut cur = root.to_path_buf();
    for want in comps {
        let want = want.to_lowercase();
        let found = fs::read_dir(&cur)
            .map_err(|e| format!("read {}: {e}", cur.display()))?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().to_lowercase() == want)
            .ok_or_else(|| format!("{} has no {want}", cur.display()))?;
        cur = found.path();
    }
    Ok(cur)
}

/// Marks the booted counted entry bad so the next boot takes the other slot — only if there
/// is another good entry to fall back to (else the machine would boot the same bad entry
/// again). Returns what was done.
pub fn mark_bad(b: &mut BootInfo) -> Result<String, String> {
    let Some(path) = b.boot_count_path.clone() else {
        return Err("this boot is not boot-counted: nothing to mark".into());
    };
    let new_name = bad_name(&path).ok_or_else(|| format!("{path:?} has no boot counter"))?;
    let rel: PathBuf = path.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
    let done = with_esp(true, |esp| match other_good_entry(esp, &path)? {
        None => Err("no other good boot entry to fall back to".to_string()),
        Some(other) => {
            rename_on_esp(esp, &rel, &new_name).map(|r| format!("{r}; next boot: {other}"))
        }
    })?;
    b.boot_count_path = None;
    b.tries_left = Some(0);
    Ok(done)
}

/// Appends one line to the boot history on the state partition (`/var/lib/sysctr/boot/
/// history.jsonl`): which entry, what the health gate decided and why. A rolled-back machine
/// shows the last bad verdict (`sysctr version`, `sysctr update status`).
pub fn record(dir: &Path, b: &BootInfo, verdict: &str, reason: &str) -> Result<(), String> {
    use std::io::Write;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join("history.jsonl");
    let line = serde_json::json!({
        "slot": b.slot,
        "entry": b.entry,
        "verdict": verdict,
        "reason": reason,
        "boot_ms": crate::supervisor::boot_ms(),
    });
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    writeln!(f, "{line}")
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write {}: {e}", path.display()))
}

/// The last `bad` verdict in the boot history, as "slot b (sysctr-b+2-1.efi): reason".
pub fn last_bad(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("history.jsonl")).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["verdict"] == "bad").then(|| {
            format!(
                "slot {} ({}): {}",
                v["slot"].as_str().unwrap_or("?"),
                v["entry"].as_str().unwrap_or("?"),
                v["reason"].as_str().unwrap_or("?")
            )
        })
    })
}

/// Renames `rel` (a path on the ESP; FAT is case-insensitive, so it is matched without case)
/// to `new_name` in the same directory, then syncs the filesystem.
pub fn rename_on_esp(esp: &Path, rel: &Path, new_name: &str) -> Result<String, String> {
    let mut cur = esp.to_path_buf();
    for comp in rel.iter() {
        let want = comp.to_string_lossy().to_lowercase();
        let found = fs::read_dir(&cur)
            .map_err(|e| format!("read {}: {e}", cur.display()))?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().to_lowercase() == want)
            .ok_or_else(|| format!("{} not on the ESP", rel.display()))?;
        cur = found.path();
    }
    let dir = cur
        .parent()
        .ok_or_else(|| "entry path has no directory".to_string())?;
    let to = dir.join(new_name);
    fs::rename(&cur, &to)
        .map_err(|e| format!("rename {} to {}: {e}", cur.display(), to.display()))?;
    let f = fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    f.sync_all()
        .map_err(|e| format!("sync {}: {e}", dir.display()))?;
    nix::unistd::sync();
    Ok(format!(
        "{} → {}",
        rel.display(),
        to.strip_prefix(esp).unwrap_or(&to).display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_blessed_names() {
        assert_eq!(parse_counter("sysctr-a+3.efi"), Some((3, 0)));
        assert_eq!(
            parse_counter("\\EFI\\Linux\\sysctr-a+2-1.efi"),
            Some((2, 1))
        );
        assert_eq!(parse_counter("sysctr-b+0-3.efi"), Some((0, 3)));
        assert_eq!(parse_counter("sysctr-a.efi"), None);
        assert_eq!(parse_counter("sysctr-a+x-1.efi"), None);
        assert_eq!(
            blessed_name("\\EFI\\Linux\\sysctr-a+2-1.efi").as_deref(),
            Some("sysctr-a.efi")
        );
        assert_eq!(blessed_name("entry+1.conf").as_deref(), Some("entry.conf"));
        assert_eq!(blessed_name("sysctr-a.efi"), None);
    }

    #[test]
    fn bad_names_and_fallback_entries() {
        assert_eq!(
            bad_name("\\EFI\\Linux\\sysctr-b+2-1.efi").as_deref(),
            Some("sysctr-b+0-1.efi")
        );
        assert_eq!(bad_name("sysctr-b.efi"), None);
        let esp = tempfile::tempdir().unwrap();
        let dir = esp.path().join("EFI/Linux");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("sysctr-b+2-1.efi"), b"").unwrap();
        assert_eq!(
            other_good_entry(esp.path(), "\\EFI\\Linux\\sysctr-b+2-1.efi").unwrap(),
            None
        );
        fs::write(dir.join("sysctr-a+0-3.efi"), b"").unwrap();
        assert_eq!(
            other_good_entry(esp.path(), "sysctr-b+2-1.efi").unwrap(),
            None
        );
        fs::write(dir.join("sysctr-a.efi"), b"").unwrap();
        assert_eq!(
            other_good_entry(esp.path(), "sysctr-b+2-1.efi")
                .unwrap()
                .as_deref(),
            Some("sysctr-a.efi")
        );
    }

    #[test]
    fn history_keeps_the_last_bad_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let b = BootInfo {
            slot: Some("b".into()),
            entry: Some("sysctr-b+2-1.efi".into()),
            ..Default::default()
        };
        assert_eq!(last_bad(dir.path()), None);
        record(dir.path(), &b, "bad", "service web failed: crash loop").unwrap();
        record(dir.path(), &BootInfo::default(), "blessed", "").unwrap();
        assert_eq!(
            last_bad(dir.path()).as_deref(),
            Some("slot b (sysctr-b+2-1.efi): service web failed: crash loop")
        );
    }

    #[test]
    fn efivar_strings() {
        let mut raw = vec![6, 0, 0, 0];
        for u in "sysctr-a+2-1.efi\0".encode_utf16() {
            raw.extend(u.to_le_bytes());
        }
        assert_eq!(decode_utf16_var(&raw).as_deref(), Some("sysctr-a+2-1.efi"));
        assert_eq!(decode_utf16_var(&[6, 0, 0, 0]), None);
        assert_eq!(decode_utf16_var(&[1]), None);
    }

    #[test]
    fn detect_reads_loader_variables() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, val: &str| {
            let mut raw = vec![6, 0, 0, 0];
            for u in format!("{val}\0").encode_utf16() {
                raw.extend(u.to_le_bytes());
            }
            fs::write(dir.path().join(format!("{name}-{LOADER_GUID}")), raw).unwrap();
        };
        put("LoaderInfo", "systemd-boot 252");
        put("LoaderEntrySelected", "sysctr-a+2-1.efi");
        put("LoaderBootCountPath", "\\EFI\\Linux\\sysctr-a+2-1.efi");
        put("LoaderTimeInitUSec", "1500000");
        let b = detect("console=ttyS0 sysctr.slot=a ro", dir.path());
        assert_eq!(b.slot.as_deref(), Some("a"));
        assert!(b.uefi);
        assert_eq!(b.tries_left, Some(2));
        assert_eq!(b.tries_done, Some(1));
        assert_eq!(b.loader_init_us, Some(1_500_000));
        assert!(describe(&b).contains("2 tries left"));
    }

    #[test]
    fn rename_matches_without_case_and_keeps_the_directory() {
        let esp = tempfile::tempdir().unwrap();
        let dir = esp.path().join("EFI/Linux");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("sysctr-a+2-1.efi"), b"uki").unwrap();
        let rel: PathBuf = ["efi", "linux", "SYSCTR-A+2-1.EFI"].iter().collect();
        rename_on_esp(esp.path(), &rel, "sysctr-a.efi").unwrap();
        assert_eq!(fs::read(dir.join("sysctr-a.efi")).unwrap(), b"uki");
        assert!(!dir.join("sysctr-a+2-1.efi").exists());
        let err = rename_on_esp(esp.path(), &rel, "x.efi").unwrap_err();
        assert!(err.contains("not on the ESP"), "{err}");
    }
}
