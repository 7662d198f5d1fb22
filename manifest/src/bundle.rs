//! The update bundle: one file that carries a whole new OS slot, shared by the image build
//! (which writes it), PID 1's installer (which reads it) and the CLI. `docs/update.md`
//! documents the layout byte by byte.
//!
//! ```text
//! header (24 bytes) | manifest (JSON) | signature (minisign text) | zeros to 4096 | payloads
//! ```
//!
//! The manifest is small, comes first and is signed on its own (a minisign signature of
//! exactly its bytes), and it carries each payload's size and sha256 and the new slot's
//! dm-verity root hash. So an installer reads a few kilobytes, checks signature,
//! `compatible` id and version before it writes one byte, and checks each payload while it
//! streams past, from a file or from a pipe alike.

mod base64;
mod head;
pub mod pe;
pub mod signature;
pub mod verity;
mod version;

pub use base64::base64_decode;
pub use head::{encode_head, payload_start, read_head, read_padding, read_part, Head};
pub use version::{check_id, check_version, compare_versions};

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

pub const MAGIC: [u8; 8] = *b"SYSCTRUP";
/// The bundle format this code reads and writes (header and manifest `format`).
pub const FORMAT: u32 = 1;
pub const HEADER_LEN: usize = 24;
/// Payloads start, and each payload starts, on a multiple of this many bytes.
pub const ALIGN: u64 = 4096;
pub const MAX_MANIFEST_BYTES: u32 = 64 * 1024;
pub const MAX_SIGNATURE_BYTES: u32 = 4096;
/// A UKI is a kernel, an initrd at most and a command line; anything larger is not one.
pub const MAX_UKI_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_ID_LEN: usize = 64;
/// The `compatible` id `cargo xtask bundle` uses when none is given; a system that does not
/// name its own id in its boot config is this one.
pub const DEFAULT_COMPATIBLE: &str = "sysctr-x86_64";
/// The payload written to the inactive root slot: squashfs, then its verity area.
pub const ROOT: &str = "root";
/// The payloads put on the ESP: the unified kernel image for each slot (its command line
/// names that slot's partition), in this order. The installer uses the target slot's.
pub const UKIS: [&str; 2] = ["uki-a", "uki-b"];

/// The signed description of a bundle. Unknown fields are ignored, so a later build may add
/// information; a change an older reader would misread raises `format` instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The OS version this bundle installs: letters, digits, `.`, `-`, `_` (no `+`, which
    /// boot counting puts in file names).
    pub version: String,
    /// Which appliance the bundle is for; must equal the running system's id.
    pub compatible: String,
    /// `root`, `uki-a`, `uki-b`, in the order they follow in the file.
    pub payloads: Vec<Payload>,
    pub verity: Verity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub name: String,
    /// Bytes from the start of the payload area (not of the file).
    pub offset: u64,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// How the root payload is laid out for dm-verity: data blocks `[0, hash_offset)`, then the
/// verity area `[hash_offset, hash_offset + hash_size)` as `veritysetup format` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verity {
    /// dm-verity hash type; 1 is the normal one (salt first).
    pub hash_type: u32,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// Byte offset of the verity area inside the root payload (= data_blocks × 4096).
    pub hash_offset: u64,
    pub hash_size: u64,
    /// Whether the area starts with a veritysetup superblock (the tree then starts one block
    /// later: the kernel's hash start block is `hash_offset / 4096 + 1`).
    pub superblock: bool,
    /// Hex, as `veritysetup --salt` takes it; may be empty.
    pub salt: String,
    /// Hex: what the slot's UKI passes to the kernel as the root hash.
    pub root_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a sysctr update bundle: the file starts with {found:?}, not \"SYSCTRUP\"")]
    BadMagic { found: String },
    #[error("bundle format {found}; this system reads format {FORMAT}")]
    UnsupportedFormat { found: u32 },
    #[error("bundle header: the {part} is {len} bytes, more than the {max}-byte limit")]
    TooLarge {
        part: &'static str,
        len: u64,
        max: u64,
    },
    #[error("bundle header: reserved field is {found:#x}, expected 0")]
    Reserved { found: u32 },
    #[error("bundle is truncated: it ends inside the {part} (byte {offset} of the bundle)")]
    Truncated { part: String, offset: u64 },
    #[error("bundle: byte {offset} in the padding after the {after} is not zero")]
    NonZeroPadding { after: String, offset: u64 },
    #[error("bundle: {} bytes after the last payload (the manifest ends the bundle at byte {end})", if *.more { "more" } else { "unexpected" })]
    TrailingData { end: u64, more: bool },
    #[error("reading the {part} of the bundle: {error}")]
    Read { part: String, error: io::Error },
    #[error("bundle signature is not text")]
    SignatureNotText,
    #[error("bundle manifest: {error}")]
    Syntax { error: serde_json::Error },
    #[error("bundle manifest: field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

pub fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

impl Manifest {
    /// A manifest for a root payload and the two slots' UKIs, each given as (size, sha256),
    /// with the offsets filled in (root at 0, each next payload at the next 4096 boundary).
    pub fn new(
        version: &str,
        compatible: &str,
        root: (u64, String),
        ukis: [(u64, String); 2],
        verity: Verity,
    ) -> Manifest {
        Manifest {
            format: FORMAT,
            version: version.to_string(),
            compatible: compatible.to_string(),
            payloads: {
                let mut payloads = vec![Payload {
                    name: ROOT.into(),
                    offset: 0,
                    size: root.0,
                    sha256: root.1,
                }];
                for (name, (size, sha256)) in UKIS.iter().zip(ukis) {
                    let last = payloads.last().unwrap();
                    payloads.push(Payload {
                        name: name.to_string(),
                        offset: align_up(last.offset + last.size),
                        size,
                        sha256,
                    });
                }
                payloads
            },
            verity,
        }
    }

    /// A small valid manifest with made-up digests (two data blocks and their verity hash
    /// area, two UKIs): the one sample of the unit tests here and of the fuzz seeds
    /// (`cargo xtask fuzz`, feature `sample`). Nothing in it is signed or real.
    #[cfg(any(test, feature = "sample"))]
    pub fn sample() -> Manifest {
        let data_blocks = 2;
        let hash_size = verity::area_size(data_blocks, true);
        Manifest::new(
            "0.2.0",
            "sysctr-x86_64",
            (data_blocks * 4096 + hash_size, "ab".repeat(32)),
            [(5000, "cd".repeat(32)), (6000, "ce".repeat(32))],
            Verity {
                hash_type: 1,
                algorithm: "sha256".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks,
                hash_offset: data_blocks * 4096,
                hash_size,
                superblock: true,
                salt: "0011".into(),
                root_hash: "ef".repeat(32),
            },
        )
    }

    /// Parses and validates manifest bytes (after their signature was checked).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|error| BundleError::Syntax { error })?;
        m.validate()?;
        Ok(m)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn root(&self) -> &Payload {
        &self.payloads[0]
    }

    /// The UKI for slot `a` or `b`.
    pub fn uki(&self, slot: crate::protocol_update::Slot) -> &Payload {
        match slot {
            crate::protocol_update::Slot::A => &self.payloads[1],
            crate::protocol_update::Slot::B => &self.payloads[2],
        }
    }

    /// Bytes of the payload area; the bundle is `payload_start + this` long.
    pub fn payload_area_size(&self) -> u64 {
        let last = self.payloads.last().expect("validated: three payloads");
        last.offset + last.size
    }

    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format != FORMAT {
            return Err(invalid(
                "format",
                format!("{}; this system reads format {FORMAT}", self.format),
            ));
        }
        check_version(&self.version).map_err(|p| invalid("version", p))?;
        check_id(&self.compatible).map_err(|p| invalid("compatible", p))?;
        let names: Vec<&str> = self.payloads.iter().map(|p| p.name.as_str()).collect();
        if names != [ROOT, UKIS[0], UKIS[1]] {
            return Err(invalid(
                "payloads",
                format!(
                    "names are {names:?}; format 1 has exactly [\"root\", \"uki-a\", \"uki-b\"] in that order"
                ),
            ));
        }
        for (i, p) in self.payloads.iter().enumerate().skip(1) {
            if p.size > MAX_UKI_BYTES {
                return Err(invalid(
                    format!("payloads[{i}] ({}).size", p.name),
                    format!("{} bytes, more than the {MAX_UKI_BYTES}-byte limit", p.size),
                ));
            }
        }
        let mut next = 0u64;
        for (i, p) in self.payloads.iter().enumerate() {
            let field = |f: &str| format!("payloads[{i}] ({}).{f}", p.name);
            if p.offset != next {
                return Err(invalid(
                    field("offset"),
                    format!(
                        "{}, expected {next} (the previous payload's end, aligned to 4096)",
                        p.offset
                    ),
                ));
            }
            if p.size == 0 {
                return Err(invalid(field("size"), "0: a payload is never empty"));
            }
            check_hex(&p.sha256, Some(32)).map_err(|e| invalid(field("sha256"), e))?;
            next = p
                .offset
                .checked_add(p.size)
                .map(align_up)
                .ok_or_else(|| invalid(field("size"), "offset + size overflows"))?;
        }
        let v = &self.verity;
        let bs = verity::BLOCK_SIZE as u32;
        if v.hash_type != 1 {
            return Err(invalid(
                "verity.hash_type",
                format!("{}, only 1 is supported", v.hash_type),
            ));
        }
        if v.algorithm != "sha256" {
            return Err(invalid(
                "verity.algorithm",
                format!("{:?}, only \"sha256\" is supported", v.algorithm),
            ));
        }
        for (f, n) in [
            ("verity.data_block_size", v.data_block_size),
            ("verity.hash_block_size", v.hash_block_size),
        ] {
            if n != bs {
                return Err(invalid(f, format!("{n}, only 4096 is supported")));
            }
        }
        if v.data_blocks == 0 {
            return Err(invalid("verity.data_blocks", "0: the root has no data"));
        }
        if v.data_blocks.checked_mul(bs as u64) != Some(v.hash_offset) {
            return Err(invalid(
                "verity.hash_offset",
                format!(
                    "{}, expected data_blocks × 4096 = {}",
                    v.hash_offset,
                    v.data_blocks.saturating_mul(4096)
                ),
            ));
        }
        let want = verity::area_size(v.data_blocks, v.superblock);
        if v.hash_size != want {
            return Err(invalid(
                "verity.hash_size",
                format!(
                    "{}, a tree for {} blocks is {want} bytes",
                    v.hash_size, v.data_blocks
                ),
            ));
        }
        if v.hash_offset + v.hash_size != self.root().size {
            return Err(invalid(
                "payloads[0] (root).size",
                format!(
                    "{}, expected hash_offset + hash_size = {}",
                    self.root().size,
                    v.hash_offset + v.hash_size
                ),
            ));
        }
        let salt = from_hex(&v.salt).map_err(|e| invalid("verity.salt", e))?;
        if salt.len() > verity::MAX_SALT_BYTES {
            return Err(invalid(
                "verity.salt",
                format!("{} bytes, at most 256", salt.len()),
            ));
        }
        check_hex(&v.root_hash, Some(32)).map_err(|e| invalid("verity.root_hash", e))?;
        Ok(())
    }

    /// The salt as bytes (valid after [`Manifest::validate`]).
    pub fn salt(&self) -> Vec<u8> {
        from_hex(&self.verity.salt).unwrap_or_default()
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("{s:?} is not hex: odd length"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .filter(|p| {
                    p.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("{s:?} is not lowercase hex"))
        })
        .collect()
}

fn check_hex(s: &str, bytes: Option<usize>) -> Result<(), String> {
    let v = from_hex(s)?;
    match bytes {
        Some(n) if v.len() != n => Err(format!("{s:?} is {} bytes, expected {n}", v.len())),
        _ => Ok(()),
    }
}

/// Writes a whole bundle: head, then each payload from its reader (exactly the size the
/// manifest gives), zero-padded to the next payload. Returns the bundle's length.
pub fn write_bundle(
    out: &mut impl Write,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    signature: &[u8],
    payloads: [&mut dyn Read; 3],
) -> io::Result<u64> {
    let head = encode_head(manifest_bytes, signature);
    out.write_all(&head)?;
    let mut written = 0u64;
    for (p, r) in manifest.payloads.iter().zip(payloads) {
        let pad = p.offset - written;
        io::copy(&mut io::repeat(0).take(pad), out)?;
        let n = io::copy(&mut r.take(p.size), out)?;
        if n != p.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "payload {} has {n} bytes, the manifest says {}",
                    p.name, p.size
                ),
            ));
        }
        written = p.offset + p.size;
    }
    Ok(head.len() as u64 + written)
}

#[cfg(test)]
mod tests;
