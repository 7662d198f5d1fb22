//! The ESP side of an install: each slot's UKI is a Boot Loader Spec type #2 entry in
//! `EFI/Linux/`, named `sysctr-<slot>-<version>[+<left>[-<done>]].efi` — systemd-boot's boot
//! counting lives in the file name, so a trial, a blessing and a failure are renames, atomic
//! on FAT and without NVRAM writes. `loader/loader.conf`'s `default sysctr-<slot>-*` picks
//! the slot; it is replaced whole (temp file, fsync, rename, fsync of the directory).

use super::slot::{expect_end, hash_uki};
use super::{io_err, UpdateError, Verified};
use manifest::bundle;
use manifest::protocol_update::{Phase, Progress, Slot, SlotState, SlotStatus};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const ENTRIES_DIR: &str = "EFI/Linux";
pub const LOADER_CONF: &str = "loader/loader.conf";
/// Tries a new entry gets: systemd-boot counts them down, the health gate blesses it.
pub const TRIES: u32 = 3;

/// One `sysctr-*` entry found in `EFI/Linux/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub slot: Slot,
    pub version: String,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
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
}

/// `sysctr-b-1.2.0+3.efi` for a new entry.
pub fn entry_file_name(slot: Slot, version: &str, tries: u32) -> String {
    format!("sysctr-{slot}-{version}+{tries}.efi")
}

/// Parses `sysctr-<slot>-<version>[+<left>[-<done>]].efi`; `None` for other files.
pub fn parse_entry(file_name: &str) -> Option<Entry> {
    let stem = file_name.strip_suffix(".efi")?;
    let (base, counter) = match stem.rsplit_once('+') {
        Some((b, c)) => (b, Some(c)),
        None => (stem, None),
    };
    let rest = base.strip_prefix("sysctr-")?;
    let (slot, version) = rest.split_once('-')?;
    let slot = match slot {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return None,
    };
    bundle::check_version(version).ok()?;
    let (tries_left, tries_done) = match counter {
        None => (None, None),
        Some(c) => {
            let (left, done) = match c.split_once('-') {
                Some((l, d)) => (l, Some(d.parse().ok()?)),
                None => (c, None),
            };
            (Some(left.parse().ok()?), done)
        }
    };
    Some(Entry {
        slot,
        version: version.to_string(),
        tries_left,
        tries_done,
        file_name: file_name.to_string(),
    })
}

/// Every `sysctr-*` entry on the ESP, sorted by file name; none when the directory is absent.
pub fn entries(esp: &Path) -> Result<Vec<Entry>, UpdateError> {
    let dir = esp.join(ENTRIES_DIR);
    let read = match fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &dir)(e)),
    };
    let mut out = Vec::new();
    for item in read {
        let item = item.map_err(io_err("listing", &dir))?;
        if let Some(e) = item.file_name().to_str().and_then(parse_entry) {
            out.push(e);
        }
    }
    out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// Replaces `path` atomically: a temp file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), UpdateError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = path.with_extension("conf.tmp");
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    sync_dir(dir)
}

/// The slot `loader.conf`'s `default` line names, if it is one of ours.
pub fn default_slot(esp: &Path) -> Result<Option<Slot>, UpdateError> {
    let path = esp.join(LOADER_CONF);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    Ok(text.lines().find_map(|l| {
        let value = default_value(l)?;
        match value {
            "sysctr-a-*" => Some(Slot::A),
            "sysctr-b-*" => Some(Slot::B),
            _ => None,
        }
    }))
}

fn default_value(line: &str) -> Option<&str> {
    let l = line.trim_start();
    let rest = l.strip_prefix("default")?;
    rest.starts_with(char::is_whitespace).then(|| rest.trim())
}

/// Points `loader.conf`'s `default` at `slot`, keeping every other line.
pub fn set_default(esp: &Path, slot: Slot) -> Result<(), UpdateError> {
    let path = esp.join(LOADER_CONF);
    let old = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let line = format!("default sysctr-{slot}-*");
    let mut out = String::new();
    let mut replaced = false;
    for l in old.lines() {
        if default_value(l).is_some() {
            if !replaced {
                out.push_str(&line);
                out.push('\n');
                replaced = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(&line);
        out.push('\n');
    }
    if out == old {
        return Ok(());
    }
    write_atomic(&path, out.as_bytes())
}

fn tmp_name(slot: Slot) -> String {
    // Not `*.efi`: systemd-boot never offers a half-written UKI.
    format!(".sysctr-{slot}.efi.tmp")
}

/// Before a slot is rewritten: the loader default moves to the other slot if it named this
/// one, then this slot's entries (and any half-written UKI) are removed.
pub fn retire_slot(esp: &Path, slot: Slot) -> Result<(), UpdateError> {
    if default_slot(esp)? == Some(slot) {
        set_default(esp, slot.other())?;
    }
    let dir = esp.join(ENTRIES_DIR);
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

/// Reads the UKI payload (the reader is right after the root payload), writes it under a
/// temporary name, checks its sha256 and that the bundle ends there, then renames it to a
/// boot-counted entry and makes that slot the default. Returns the entry's path relative to
/// the ESP.
pub fn install_uki(
    reader: &mut impl Read,
    esp: &Path,
    slot: Slot,
    verified: &Verified,
    progress: &mut dyn FnMut(Progress),
) -> Result<String, UpdateError> {
    let m = &verified.manifest;
    let root_end = verified.payload_start + m.root().size;
    bundle::read_padding(
        reader,
        m.uki().offset - m.root().size,
        "root payload",
        root_end,
    )?;
    let dir = esp.join(ENTRIES_DIR);
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let tmp = dir.join(tmp_name(slot));
    let total = m.uki().size;
    progress(Progress {
        phase: Phase::WritingUki,
        done: 0,
        total,
    });
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        let (sha, n) = hash_uki(reader, Some(&mut f), verified, &tmp)?;
        if sha != m.uki().sha256 {
            return Err(UpdateError::PayloadDigest {
                payload: bundle::UKI.into(),
                expected: m.uki().sha256.clone(),
                actual: sha,
                written: true,
            });
        }
        progress(Progress {
            phase: Phase::WritingUki,
            done: n,
            total,
        });
        expect_end(reader, verified)?;
        f.sync_all().map_err(io_err("syncing", &tmp))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    progress(super::step(Phase::Activating));
    let name = entry_file_name(slot, &m.version, TRIES);
    let fin = dir.join(&name);
    fs::rename(&tmp, &fin).map_err(io_err("renaming into place", &fin))?;
    sync_dir(&dir)?;
    set_default(esp, slot)?;
    Ok(format!("{ENTRIES_DIR}/{name}"))
}

fn the_entry(esp: &Path, slot: Slot) -> Result<Option<Entry>, UpdateError> {
    Ok(entries(esp)?.into_iter().find(|e| e.slot == slot))
}

fn rename_entry(esp: &Path, from: &Entry, to: String) -> Result<(), UpdateError> {
    if from.file_name == to {
        return Ok(());
    }
    let dir = esp.join(ENTRIES_DIR);
    let fin: PathBuf = dir.join(&to);
    fs::rename(dir.join(&from.file_name), &fin).map_err(io_err("renaming", &fin))?;
    sync_dir(&dir)
}

/// The health gate passed: the slot's entry loses its boot counter. `false` if the slot has
/// no entry.
pub fn bless(esp: &Path, slot: Slot) -> Result<bool, UpdateError> {
    let Some(e) = the_entry(esp, slot)? else {
        return Ok(false);
    };
    rename_entry(esp, &e, format!("sysctr-{slot}-{}.efi", e.version))?;
    Ok(true)
}

/// The health gate failed: no tries left (`+0-<done>`), so systemd-boot skips it.
pub fn mark_bad(esp: &Path, slot: Slot) -> Result<bool, UpdateError> {
    let Some(e) = the_entry(esp, slot)? else {
        return Ok(false);
    };
    let done = e.tries_done.unwrap_or(0) + e.tries_left.unwrap_or(0);
    rename_entry(esp, &e, format!("sysctr-{slot}-{}+0-{done}.efi", e.version))?;
    Ok(true)
}

/// Both slots as the ESP describes them.
pub fn slot_status(esp: &Path) -> Result<Vec<SlotStatus>, UpdateError> {
    let default = default_slot(esp)?;
    let all = entries(esp)?;
    Ok([Slot::A, Slot::B]
        .into_iter()
        .map(|slot| {
            let e = all.iter().find(|e| e.slot == slot);
            SlotStatus {
                slot,
                version: e.map(|e| e.version.clone()),
                state: e.map_or(SlotState::Empty, Entry::state),
                tries_left: e.and_then(|e| e.tries_left),
                tries_done: e.and_then(|e| e.tries_done),
                default: default == Some(slot),
            }
        })
        .collect())
}
