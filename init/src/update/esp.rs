//! The ESP side of an install. Each slot's UKI is a Boot Loader Spec type #2 entry in
//! `EFI/Linux/`, named as the image build names the factory one (`rootfs::disk::Slot::
//! uki_name`): `sysctr-g<generation>-<slot>[+<left>[-<done>]].efi`. systemd-boot boots the
//! entry whose name sorts highest among those with tries left, so an install gives its entry
//! the next generation: it is tried first, and falls back to the other slot when its tries
//! run out or the health gate marks it bad. There is no `default` in `loader.conf` (an
//! explicit default is honoured even with no tries left), so activating an entry is one
//! rename — atomic on FAT, no NVRAM writes. Blessing and marking bad are `bootslot`'s.

use super::slot::{expect_end, hash_payload, skip_padding};
use super::{io_err, UpdateError, Verified};
use manifest::bundle::pe;
use manifest::protocol_update::{Phase, Progress, Slot, SlotState, SlotStatus};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::Path;

pub const ENTRIES_DIR: &str = "EFI/Linux";
/// Tries a new entry gets: systemd-boot counts them down, the health gate blesses it.
pub const TRIES: u32 = 3;

/// One `sysctr-g*` entry found in `EFI/Linux/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub generation: u32,
    pub slot: Slot,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    /// As found on the ESP (FAT keeps case but matches without it).
    pub file_name: String,
}

impl Entry {
    pub fn state(&self) -> SlotState {
        match self.tries_left {
            None => SlotState::Good,
            Some(0) => SlotState::Bad,
            Some(_) => SlotState::Trial,
        }
    }

    /// Whether systemd-boot would still boot it.
    pub fn bootable(&self) -> bool {
        self.tries_left != Some(0)
    }
}

/// `sysctr-g4-b+3.efi`: generation 4, slot b, 3 tries.
pub fn entry_file_name(generation: u32, slot: Slot, tries: Option<u32>) -> String {
    match tries {
        Some(t) => format!("sysctr-g{generation}-{slot}+{t}.efi"),
        None => format!("sysctr-g{generation}-{slot}.efi"),
    }
}

/// Parses `sysctr-g<N>-<slot>[+<left>[-<done>]].efi` (any case); `None` for other files.
pub fn parse_entry(file_name: &str) -> Option<Entry> {
    let lower = file_name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".efi")?;
    let (base, counter) = match stem.split_once('+') {
        Some((b, c)) => (b, Some(c)),
        None => (stem, None),
    };
    let (generation, slot) = base.strip_prefix("sysctr-g")?.split_once('-')?;
    if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let generation = generation.parse().ok()?;
    let slot = match slot {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (tries_left, tries_done) = match counter {
        None => (None, None),
        Some(c) => match c.split_once('-') {
            Some((l, d)) => (Some(number(l)?), Some(number(d)?)),
            None => (Some(number(c)?), None),
        },
    };
    Some(Entry {
        generation,
        slot,
        tries_left,
        tries_done,
        file_name: file_name.to_string(),
    })
}

/// The `EFI/Linux` directory as it is spelled on the ESP (FAT matches without case).
fn entries_dir(esp: &Path) -> Result<Option<std::path::PathBuf>, UpdateError> {
    let mut cur = esp.to_path_buf();
    for want in ["efi", "linux"] {
        let read = match fs::read_dir(&cur) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("listing", &cur)(e)),
        };
        let found = read
            .flatten()
            .find(|e| e.file_name().to_string_lossy().to_ascii_lowercase() == want);
        match found {
            Some(e) => cur = e.path(),
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

/// Every `sysctr-g*` entry on the ESP, highest generation first (the order systemd-boot
/// tries them in); none when the directory is absent.
pub fn entries(esp: &Path) -> Result<Vec<Entry>, UpdateError> {
    let Some(dir) = entries_dir(esp)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
        let item = item.map_err(io_err("listing", &dir))?;
        if let Some(e) = item.file_name().to_str().and_then(parse_entry) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| {
        b.generation
            .cmp(&a.generation)
            .then(a.file_name.cmp(&b.file_name))
    });
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// One more than the highest generation on the ESP.
pub fn next_generation(esp: &Path) -> Result<u32, UpdateError> {
    Ok(entries(esp)?
        .iter()
        .map(|e| e.generation)
        .max()
        .unwrap_or(0)
        + 1)
}

fn tmp_name(slot: Slot) -> String {
    // Not `*.efi`: systemd-boot never offers a half-written UKI.
    format!(".sysctr-{slot}.efi.tmp")
}

/// Before a slot is rewritten: its entries (its root is about to change) and any
/// half-written UKI are removed, so only the other slot's entry can boot meanwhile.
pub fn retire_slot(esp: &Path, slot: Slot) -> Result<(), UpdateError> {
    let Some(dir) = entries_dir(esp)? else {
        return Ok(());
    };
    let mut removed = false;
    for e in entries(esp)?.into_iter().filter(|e| e.slot == slot) {
        let p = dir.join(&e.file_name);
        fs::remove_file(&p).map_err(io_err("removing the old entry", &p))?;
        removed = true;
    }
    let tmp = dir.join(tmp_name(slot));
    match fs::remove_file(&tmp) {
        Ok(()) => removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &tmp)(e)),
    }
    if removed {
        sync_dir(&dir)?;
    }
    Ok(())
}

/// Reads the UKI payloads (the reader is right after the root payload): the target slot's
/// is written under a temporary name, the other one is only checked. Each sha256 must match
/// and the bundle must end there; then the UKI is synced and renamed to the next
/// generation's boot-counted entry, which systemd-boot tries first. Returns the entry's path
/// relative to the ESP.
pub fn install_uki(
    reader: &mut impl Read,
    esp: &Path,
    slot: Slot,
    verified: &Verified,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, UpdateError> {
    let m = &verified.manifest;
    let dir = match entries_dir(esp)? {
        Some(d) => d,
        None => {
            let d = esp.join(ENTRIES_DIR);
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
            d
        }
    };
    let tmp = dir.join(tmp_name(slot));
    let target = m.uki(slot);
    progress(Progress {
        phase: Phase::WritingUki,
        done: 0,
        total: target.size,
    });
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        for i in 1..m.payloads.len() {
            skip_padding(reader, verified, i)?;
            let p = &m.payloads[i];
            let mine = p.name == target.name;
            let sink = if mine { Some(&mut f) } else { None };
            let (sha, n) = hash_payload(reader, sink, verified, i, &tmp)?;
            if sha != p.sha256 {
                return Err(UpdateError::PayloadDigest {
                    payload: p.name.clone(),
                    expected: p.sha256.clone(),
                    actual: sha,
                    written: true,
                });
            }
            if mine {
                progress(Progress {
                    phase: Phase::WritingUki,
                    done: n,
                    total: target.size,
                });
            }
        }
        expect_end(reader, verified)?;
        f.sync_all().map_err(io_err("syncing", &tmp))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    progress(super::step(Phase::Activating));
    let name = entry_file_name(next_generation(esp)?, slot, Some(TRIES));
    let fin = dir.join(&name);
    fs::rename(&tmp, &fin).map_err(io_err("renaming into place", &fin))?;
    sync_dir(&dir)?;
    Ok(format!("{ENTRIES_DIR}/{name}"))
}

/// `sysctr rollback`: `slot`'s entry takes the next generation (keeping its counter), so
/// systemd-boot boots it first next time. Returns the new file name, or `None` when the
/// slot has no entry. The caller checks that the slot is good.
pub fn prefer(esp: &Path, slot: Slot) -> Result<Option<String>, UpdateError> {
    let all = entries(esp)?;
    let Some(e) = all.iter().find(|e| e.slot == slot) else {
        return Ok(None);
    };
    let Some(dir) = entries_dir(esp)? else {
        return Ok(None);
    };
    if all.first().map(|f| &f.file_name) == Some(&e.file_name) {
        return Ok(Some(e.file_name.clone()));
    }
    let counter = match (e.tries_left, e.tries_done) {
        (Some(l), Some(d)) => format!("+{l}-{d}"),
        (Some(l), None) => format!("+{l}"),
        _ => String::new(),
    };
    let gen = all.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
    let name = format!("sysctr-g{gen}-{slot}{counter}.efi");
    let to = dir.join(&name);
    fs::rename(dir.join(&e.file_name), &to).map_err(io_err("renaming", &to))?;
    sync_dir(&dir)?;
    Ok(Some(name))
}

/// The version a UKI boots: `SYSCTR_VERSION` in its `.osrel` section.
pub fn uki_version(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let osrel = pe::section(&mut f, ".osrel").ok()??;
    pe::os_release_value(&String::from_utf8_lossy(&osrel), "SYSCTR_VERSION")
}

/// Both slots as the ESP describes them; `next_boot` marks the entry systemd-boot boots next
/// (the highest generation with tries left).
pub fn slot_status(esp: &Path) -> Result<Vec<SlotStatus>, UpdateError> {
    let all = entries(esp)?;
    let dir = entries_dir(esp)?;
    let next = all.iter().find(|e| e.bootable()).map(|e| e.slot);
    Ok([Slot::A, Slot::B]
        .into_iter()
        .map(|slot| {
            let e = all.iter().find(|e| e.slot == slot);
            SlotStatus {
                slot,
                version: e
                    .zip(dir.as_ref())
                    .and_then(|(e, d)| uki_version(&d.join(&e.file_name))),
                state: e.map_or(SlotState::Empty, Entry::state),
                tries_left: e.and_then(|e| e.tries_left),
                tries_done: e.and_then(|e| e.tries_done),
                next_boot: next == Some(slot),
            }
        })
        .collect())
}
