//! The root slot: checking that the root payload fits, streaming it in while hashing, and
//! reading it back to check sha256, dm-verity root hash and tree against the manifest.

use super::{io_err, UpdateError, Verified};
use manifest::bundle::{self, verity, BundleError, Manifest};
use manifest::protocol_update::{Phase, Progress, Slot};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const CHUNK: usize = 1 << 20;
/// Progress is reported at most this often (bytes), and at the end.
const PROGRESS_EVERY: u64 = 8 << 20;

/// The device's size: block devices and files alike answer a seek to their end.
fn device_size(device: &mut File, slot: Slot) -> Result<u64, UpdateError> {
    let size = device
        .seek(SeekFrom::End(0))
        .map_err(io_err("finding the size of", &label(slot)))?;
    Ok(size)
}

/// How I/O errors name the slot's device (the caller opened it; its path is not known here).
fn label(slot: Slot) -> PathBuf {
    PathBuf::from(format!("slot {slot}'s device"))
}

/// Refuses a root payload larger than the slot, before anything is written.
pub fn check_fits(device: &mut File, slot: Slot, manifest: &Manifest) -> Result<(), UpdateError> {
    let slot_size = device_size(device, slot)?;
    let payload = manifest.root().size;
    if payload > slot_size {
        return Err(UpdateError::TooLargeForSlot {
            slot,
            payload,
            slot_size,
        });
    }
    Ok(())
}

/// What streaming the root payload produced.
struct Streamed {
    sha256: String,
    tree: verity::Tree,
    /// The payload's own verity area bytes, to compare with the computed tree.
    area: Vec<u8>,
}

/// Reads the root payload (`manifest.root().size` bytes) from `reader`, hashing it, and
/// writes it to `sink` when given. `part` names the stream in truncation errors.
fn stream_root(
    reader: &mut impl Read,
    mut sink: Option<(&mut File, &Path)>,
    manifest: &Manifest,
    part: &str,
    base_offset: u64,
    phase: Phase,
    progress: &mut dyn FnMut(Progress),
) -> Result<Streamed, UpdateError> {
    let total = manifest.root().size;
    let data_len = manifest.verity.hash_offset;
    let mut sha = Sha256::new();
    let mut hasher = verity::Hasher::new(&manifest.salt());
    let mut area = Vec::with_capacity(manifest.verity.hash_size as usize);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut reported = 0u64;
    progress(Progress {
        phase,
        done: 0,
        total,
    });
    while done < total {
        let n = (total - done).min(CHUNK as u64) as usize;
        bundle::read_part(reader, &mut buf[..n], part, base_offset + done)?;
        let chunk = &buf[..n];
        sha.update(chunk);
        // Split the chunk at the data/verity boundary.
        let data_part = (data_len.saturating_sub(done) as usize).min(n);
        hasher.update(&chunk[..data_part]);
        area.extend_from_slice(&chunk[data_part..]);
        if let Some((sink, sink_label)) = sink.as_mut() {
            sink.write_all(chunk)
                .map_err(io_err("writing the root payload to", sink_label))?;
        }
        done += n as u64;
        if done - reported >= PROGRESS_EVERY || done == total {
            reported = done;
            progress(Progress { phase, done, total });
        }
    }
    let tree = hasher.finish(manifest.verity.superblock.then(|| {
        // The uuid is whatever the build wrote; take it from the payload's own superblock.
        area.get(16..32)
            .and_then(|u| u.try_into().ok())
            .unwrap_or([0; 16])
    }));
    Ok(Streamed {
        sha256: bundle::to_hex(&sha.finalize()),
        tree,
        area,
    })
}

/// Checks a streamed root against the manifest; `on_mismatch` builds the error for one
/// failed check (named `sha256`, `dm-verity root hash` or `dm-verity tree`).
fn check_root(
    s: &Streamed,
    manifest: &Manifest,
    on_mismatch: impl Fn(&'static str, String, String) -> UpdateError,
) -> Result<(), UpdateError> {
    let want_sha = &manifest.root().sha256;
    if &s.sha256 != want_sha {
        return Err(on_mismatch("sha256", want_sha.clone(), s.sha256.clone()));
    }
    let root = bundle::to_hex(&s.tree.root_hash);
    if root != manifest.verity.root_hash {
        return Err(on_mismatch(
            "dm-verity root hash",
            manifest.verity.root_hash.clone(),
            root,
        ));
    }
    if s.tree.area != s.area {
        let at = s
            .tree
            .area
            .iter()
            .zip(&s.area)
            .position(|(a, b)| a != b)
            .unwrap_or(s.tree.area.len().min(s.area.len()));
        return Err(on_mismatch(
            "dm-verity tree",
            "the tree computed from the data".into(),
            format!(
                "different from byte {} of the verity area",
                manifest.verity.hash_offset + at as u64
            ),
        ));
    }
    Ok(())
}

/// Hashes every payload of a seekable bundle without writing anything: the reader must be
/// at the first payload (after [`super::verify_header`]); the caller seeks back after.
pub fn check_payloads(
    reader: &mut impl Read,
    verified: &Verified,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), UpdateError> {
    let m = &verified.manifest;
    let base = verified.payload_start;
    let root = stream_root(
        reader,
        None,
        m,
        "root payload",
        base,
        Phase::CheckingPayloads,
        progress,
    )?;
    check_root(&root, m, |check, expected, actual| match check {
        "sha256" => UpdateError::PayloadDigest {
            payload: bundle::ROOT.into(),
            expected,
            actual,
            written: false,
        },
        _ => UpdateError::VerityRoot { expected, actual },
    })?;
    for i in 1..m.payloads.len() {
        skip_padding(reader, verified, i)?;
        let p = &m.payloads[i];
        let (sha, _) = hash_payload(reader, None, verified, i, Path::new(""))?;
        if sha != p.sha256 {
            return Err(UpdateError::PayloadDigest {
                payload: p.name.clone(),
                expected: p.sha256.clone(),
                actual: sha,
                written: false,
            });
        }
    }
    expect_end(reader, verified)
}

/// Reads the zero padding between payload `index - 1` and payload `index`.
pub(super) fn skip_padding(
    reader: &mut impl Read,
    verified: &Verified,
    index: usize,
) -> Result<(), UpdateError> {
    let prev = &verified.manifest.payloads[index - 1];
    let end = prev.offset + prev.size;
    let gap = verified.manifest.payloads[index].offset - end;
    let after = format!("{} payload", prev.name);
    bundle::read_padding(reader, gap, &after, verified.payload_start + end)?;
    Ok(())
}

/// Reads payload `index` (the reader is at it), writing it to `sink` when given.
pub(super) fn hash_payload(
    reader: &mut impl Read,
    mut sink: Option<&mut File>,
    verified: &Verified,
    index: usize,
    sink_path: &Path,
) -> Result<(String, u64), UpdateError> {
    let p = &verified.manifest.payloads[index];
    let base = verified.payload_start + p.offset;
    let part = format!("{} payload", p.name);
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < p.size {
        let n = (p.size - done).min(CHUNK as u64) as usize;
        bundle::read_part(reader, &mut buf[..n], &part, base + done)?;
        sha.update(&buf[..n]);
        if let Some(sink) = sink.as_deref_mut() {
            sink.write_all(&buf[..n])
                .map_err(io_err("writing the UKI to", sink_path))?;
        }
        done += n as u64;
    }
    Ok((bundle::to_hex(&sha.finalize()), done))
}

/// The bundle must end right after the last UKI.
pub(super) fn expect_end(reader: &mut impl Read, verified: &Verified) -> Result<(), UpdateError> {
    let end = verified.payload_start + verified.manifest.payload_area_size();
    let mut byte = [0u8; 1];
    loop {
        return match reader.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(BundleError::TrailingData { end, more: true }.into()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => Err(BundleError::Read {
                part: "end of the bundle".into(),
                error,
            }
            .into()),
        };
    }
}

/// Streams the root payload from `reader` (at the first payload) into `device` from its
/// start, then syncs and reads it back through [`verify_slot`].
pub fn write_slot(
    reader: &mut impl Read,
    device: &mut File,
    slot: Slot,
    verified: &Verified,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), UpdateError> {
    let m = &verified.manifest;
    check_fits(device, slot, m)?;
    let target = &label(slot);
    device
        .seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in", target))?;
    let streamed = stream_root(
        reader,
        Some((&mut *device, target)),
        m,
        "root payload",
        verified.payload_start,
        Phase::WritingSlot,
        progress,
    )?;
    check_root(&streamed, m, |check, expected, actual| match check {
        "sha256" => UpdateError::PayloadDigest {
            payload: bundle::ROOT.into(),
            expected,
            actual,
            written: true,
        },
        _ => UpdateError::VerityRoot { expected, actual },
    })?;
    device.sync_all().map_err(io_err("syncing", target))?;
    // Drop the clean pages so the read-back comes from the device, not from memory. Only
    // advice: where the kernel ignores it, the check still covers the bytes written.
    let _ = posix_fadvise(
        device.as_raw_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    verify_slot(device, slot, m, progress)
}

/// Reads the slot back from its start and checks the root payload's sha256, the dm-verity
/// root hash and the verity tree against the manifest.
pub fn verify_slot(
    device: &mut File,
    slot: Slot,
    manifest: &Manifest,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), UpdateError> {
    device
        .seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in", &label(slot)))?;
    let streamed = stream_root(
        device,
        None,
        manifest,
        "target slot (shorter than the root payload)",
        0,
        Phase::VerifyingSlot,
        progress,
    )?;
    check_root(&streamed, manifest, |check, expected, actual| {
        UpdateError::SlotVerify {
            slot,
            check,
            expected,
            actual,
        }
    })
}
