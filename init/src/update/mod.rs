//! Installing a signed update bundle into the inactive slot: the order that keeps a power
//! cut or a bad bundle from ever leaving a machine without a good slot to boot.
//!
//! 1. [`verify_header`]: signature over the manifest, `compatible` id, version — before one
//!    byte is written anywhere. [`check_fits`]: the root payload fits the slot.
//! 2. For a seekable bundle, [`check_payloads`] hashes every payload first, so a corrupted
//!    payload is refused with the slot and the ESP untouched. A pipe cannot be read twice;
//!    there the digest is checked as the bytes stream past, and the slot is not bootable
//!    until it passes.
//! 3. [`esp::retire_slot`]: the target slot's old boot entry goes (its root is about to
//!    change), so meanwhile only the other slot's entry can boot.
//! 4. [`write_slot`]: the root payload streams into the slot while hashing; then the slot is
//!    synced, dropped from the page cache and read back: sha256, dm-verity root hash and
//!    the verity tree bytes must all match the signed manifest.
//! 5. [`esp::install_uki`]: the target slot's UKI streams to a temporary name on the ESP
//!    (the other slot's UKI is only checked), is synced, and renamed to a boot-counted entry
//!    of the next generation (`EFI/Linux/sysctr-g<N>-<slot>+3.efi`), which systemd-boot
//!    tries first.
//!
//! The caller (PID 1's update helper, outside the event loop) picks the inactive slot and
//! opens its device; this module never decides which slot is active. Everything here is
//! plain file I/O, so the tests run it on temp files.

pub mod esp;
pub mod helper;
pub mod keys;
pub mod run;
pub mod slot;
#[cfg(test)]
mod tests;

pub mod offline;
pub use esp::{install_uki, retire_slot};
pub use slot::{check_fits, check_payloads, write_slot};

use manifest::bundle::signature::{self, SignatureError, TrustedKey};
use manifest::bundle::{self, BundleError, Manifest};
use manifest::protocol_update::{Installed, Phase, Progress, Slot};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("bundle is for {bundle:?}, this system is {system:?} (the manifest's `compatible`)")]
    Incompatible { bundle: String, system: String },
    #[error("bundle version {bundle} is older than the running {current}; --allow-downgrade installs it anyway")]
    Downgrade { bundle: String, current: String },
    #[error("bundle version {bundle} is the running version; --allow-downgrade installs it again")]
    SameVersion { bundle: String },
    #[error("root payload is {payload} bytes, slot {slot} holds only {slot_size}")]
    TooLargeForSlot {
        slot: Slot,
        payload: u64,
        slot_size: u64,
    },
    #[error("payload {payload}: sha256 is {actual}, the signed manifest says {expected}{}", if *.written { "; the slot was written and is not bootable" } else { "" })]
    PayloadDigest {
        payload: String,
        expected: String,
        actual: String,
        written: bool,
    },
    #[error("root payload: its data hashes to dm-verity root {actual}, the signed manifest says {expected} (the bundle was built wrong)")]
    VerityRoot { expected: String, actual: String },
    #[error("slot {slot} read back wrong after writing: {check} is {actual}, expected {expected}; the slot is not bootable")]
    SlotVerify {
        slot: Slot,
        check: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UpdateError {
    let path = path.to_path_buf();
    move |error| UpdateError::Io {
        action,
        path,
        error,
    }
}

/// What the running system accepts.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The running system's `compatible` id.
    pub compatible: String,
    /// The running OS version.
    pub current_version: String,
    /// Accept an older or the same version.
    pub allow_downgrade: bool,
}

/// A bundle whose manifest is signed by a trusted key and acceptable under the policy.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifest: Manifest,
    pub key_id: String,
    /// Bytes of the bundle read so far: the reader is at the first payload.
    pub payload_start: u64,
}

/// Reads the bundle's header, manifest and signature and checks them: signature by one of
/// `keys`, `compatible`, version. Reads a few kilobytes and writes nothing.
pub fn verify_header(
    reader: &mut impl Read,
    keys: &[TrustedKey],
    policy: &Policy,
) -> Result<Verified, UpdateError> {
    let head = bundle::read_head(reader)?;
    let key_id = signature::verify(&head.manifest, &head.signature, keys)?;
    let manifest = Manifest::parse(&head.manifest)?;
    if manifest.compatible != policy.compatible {
        return Err(UpdateError::Incompatible {
            bundle: manifest.compatible,
            system: policy.compatible.clone(),
        });
    }
    if !policy.allow_downgrade {
        match bundle::compare_versions(&manifest.version, &policy.current_version) {
            Ordering::Greater => {}
            Ordering::Equal => {
                return Err(UpdateError::SameVersion {
                    bundle: manifest.version,
                })
            }
            Ordering::Less => {
                return Err(UpdateError::Downgrade {
                    bundle: manifest.version,
                    current: policy.current_version.clone(),
                })
            }
        }
    }
    Ok(Verified {
        manifest,
        key_id,
        payload_start: head.payload_start,
    })
}

/// Where an install writes: the inactive slot's device and the mounted ESP.
pub struct Target<'a> {
    pub slot: Slot,
    pub device: &'a mut File,
    pub esp: &'a Path,
}

/// The whole install from an open bundle (a regular file or a pipe). A seekable bundle's
/// payloads are all checked before anything is written.
pub fn install(
    bundle: &mut File,
    target: Target<'_>,
    keys: &[TrustedKey],
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, UpdateError> {
    let seekable = bundle.stream_position().is_ok();
    if !seekable {
        return install_stream(bundle, target, keys, policy, progress);
    }
    progress(step(Phase::Verifying));
    let verified = verify_header(bundle, keys, policy)?;
    check_fits(target.device, target.slot, &verified.manifest)?;
    check_payloads(bundle, &verified, progress)?;
    bundle
        .seek(SeekFrom::Start(verified.payload_start))
        .map_err(|error| BundleError::Read {
            part: "bundle (seeking back to the payloads)".into(),
            error,
        })?;
    write_verified(bundle, target, verified, progress)
}

/// The install from a stream read once (stdin over ssh).
pub fn install_stream(
    reader: &mut impl Read,
    target: Target<'_>,
    keys: &[TrustedKey],
    policy: &Policy,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, UpdateError> {
    progress(step(Phase::Verifying));
    let verified = verify_header(reader, keys, policy)?;
    check_fits(target.device, target.slot, &verified.manifest)?;
    write_verified(reader, target, verified, progress)
}

fn write_verified(
    reader: &mut impl Read,
    target: Target<'_>,
    verified: Verified,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, UpdateError> {
    retire_slot(target.esp, target.slot)?;
    write_slot(reader, target.device, target.slot, &verified, progress)?;
    let entry = install_uki(reader, target.esp, target.slot, &verified, progress)?;
    Ok(Installed {
        version: verified.manifest.version.clone(),
        slot: target.slot,
        entry,
        key_id: verified.key_id,
        rebooting: false,
    })
}

pub(crate) fn step(phase: Phase) -> Progress {
    Progress {
        phase,
        done: 0,
        total: 0,
    }
}
