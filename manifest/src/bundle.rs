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

pub mod pe;
pub mod verity;

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
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

/// Where the payload area starts for a manifest and signature of these lengths.
pub fn payload_start(manifest_len: usize, signature_len: usize) -> u64 {
    align_up((HEADER_LEN + manifest_len + signature_len) as u64)
}

/// The bytes before the first payload: header, manifest, signature, zero padding.
pub fn encode_head(manifest: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_start(manifest.len(), signature.len()) as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(&(signature.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(signature);
    out.resize(payload_start(manifest.len(), signature.len()) as usize, 0);
    out
}

/// The unverified front of a bundle, read and checked for shape only.
#[derive(Debug, Clone)]
pub struct Head {
    pub format: u32,
    /// The exact bytes the signature covers.
    pub manifest: Vec<u8>,
    /// A minisign signature file's text.
    pub signature: String,
    /// Bytes consumed: the reader is now at the first payload.
    pub payload_start: u64,
}

/// Reads exactly `buf.len()` bytes, naming the part when the stream ends first.
pub fn read_part(
    r: &mut impl Read,
    buf: &mut [u8],
    part: &str,
    offset: u64,
) -> Result<(), BundleError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(BundleError::Truncated {
                    part: part.to_string(),
                    offset: offset + got as u64,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(BundleError::Read {
                    part: part.to_string(),
                    error,
                })
            }
        }
    }
    Ok(())
}

/// Reads and checks `len` zero bytes of padding.
pub fn read_padding(
    r: &mut impl Read,
    len: u64,
    after: &str,
    offset: u64,
) -> Result<(), BundleError> {
    let mut buf = [0u8; ALIGN as usize];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(ALIGN) as usize;
        read_part(
            r,
            &mut buf[..n],
            &format!("padding after the {after}"),
            offset + done,
        )?;
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Err(BundleError::NonZeroPadding {
                after: after.to_string(),
                offset: offset + done + i as u64,
            });
        }
        done += n as u64;
    }
    Ok(())
}

/// Reads the header, manifest, signature and padding, leaving `r` at the first payload.
/// Nothing here is trusted yet: the caller verifies the signature next.
pub fn read_head(r: &mut impl Read) -> Result<Head, BundleError> {
    let mut h = [0u8; HEADER_LEN];
    read_part(r, &mut h, "header", 0)?;
    if h[..8] != MAGIC {
        return Err(BundleError::BadMagic {
            found: String::from_utf8_lossy(&h[..8]).into_owned(),
        });
    }
    let word = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap());
    let (format, manifest_len, signature_len, reserved) = (word(8), word(12), word(16), word(20));
    if format != FORMAT {
        return Err(BundleError::UnsupportedFormat { found: format });
    }
    if reserved != 0 {
        return Err(BundleError::Reserved { found: reserved });
    }
    for (part, len, max) in [
        ("manifest", manifest_len, MAX_MANIFEST_BYTES),
        ("signature", signature_len, MAX_SIGNATURE_BYTES),
    ] {
        if len > max {
            return Err(BundleError::TooLarge {
                part,
                len: len.into(),
                max: max.into(),
            });
        }
    }
    let mut manifest = vec![0u8; manifest_len as usize];
    read_part(r, &mut manifest, "manifest", HEADER_LEN as u64)?;
    let mut signature = vec![0u8; signature_len as usize];
    let sig_at = (HEADER_LEN + manifest.len()) as u64;
    read_part(r, &mut signature, "signature", sig_at)?;
    let signature = String::from_utf8(signature).map_err(|_| BundleError::SignatureNotText)?;
    let end = sig_at + signature_len as u64;
    let payload_start = payload_start(manifest.len(), signature.len());
    read_padding(r, payload_start - end, "signature", end)?;
    Ok(Head {
        format,
        manifest,
        signature,
        payload_start,
    })
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

/// A version or id as the manifest carries it: 1 to 64 of `A-Za-z0-9._-`, starting with a
/// letter or digit. Both end up in file names on the ESP.
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(format!("{s:?} must be 1 to {MAX_ID_LEN} characters"));
    }
    if !s.chars().next().unwrap().is_ascii_alphanumeric() {
        return Err(format!("{s:?} must start with a letter or digit"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{s:?} has {c:?}; only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// [`check_id`], and it must start with a digit (`1.4.0`, `2026.12.1-rc1`).
pub fn check_version(s: &str) -> Result<(), String> {
    check_id(s)?;
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("{s:?} must start with a digit"));
    }
    Ok(())
}

/// Compares versions the semver way, leniently: the part before the first `-` is compared
/// component by component (numbers as numbers, missing ones as 0, so `1.2` = `1.2.0`); a
/// version with a pre-release suffix (`1.2.0-rc1`) is older than the same one without it;
/// two suffixes compare by their `.`-separated identifiers, numbers before words.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = a.split_once('-').map_or((a, None), |(c, p)| (c, Some(p)));
    let (b_core, b_pre) = b.split_once('-').map_or((b, None), |(c, p)| (c, Some(p)));
    let ac: Vec<&str> = a_core.split('.').collect();
    let bc: Vec<&str> = b_core.split('.').collect();
    for i in 0..ac.len().max(bc.len()) {
        let x = ac.get(i).copied().unwrap_or("0");
        let y = bc.get(i).copied().unwrap_or("0");
        match compare_ident(x, y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let xs: Vec<&str> = x.split(['.', '-']).collect();
            let ys: Vec<&str> = y.split(['.', '-']).collect();
            for (p, q) in xs.iter().zip(&ys) {
                match compare_ident(p, q) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            xs.len().cmp(&ys.len())
        }
    }
}

fn compare_ident(x: &str, y: &str) -> Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (num(x), num(y)) {
        (true, true) => {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
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

pub mod signature {
    //! minisign signatures over the manifest bytes, checked against the trusted public keys
    //! (minisign's `.pub` files). Key ids print as minisign prints them (16 hex digits).

    use minisign_verify::{PublicKey, Signature};

    #[derive(Debug, thiserror::Error)]
    pub enum SignatureError {
        #[error("no trusted update keys are installed, so no bundle can be verified")]
        NoKeys,
        #[error("public key {source_name}: not a minisign public key: {reason}")]
        BadKey { source_name: String, reason: String },
        #[error("bundle signature is not a minisign signature: {reason}")]
        Malformed { reason: String },
        #[error("bundle is signed with key {signed_by}, which is not trusted here (trusted: {})", trusted.join(", "))]
        UnknownKey {
            signed_by: String,
            trusted: Vec<String>,
        },
        #[error("bundle signature does not match its manifest (key {key_id}): the manifest or the signature was altered")]
        Invalid { key_id: String },
    }

    /// A public key trusted to sign bundles.
    #[derive(Debug, Clone)]
    pub struct TrustedKey {
        pub id: String,
        /// Where it came from, for messages.
        pub source_name: String,
        key: PublicKey,
    }

    impl TrustedKey {
        /// Parses a minisign public key file's text (or its bare base64 line).
        pub fn parse(text: &str, source_name: &str) -> Result<TrustedKey, SignatureError> {
            let bad = |reason: String| SignatureError::BadKey {
                source_name: source_name.to_string(),
                reason,
            };
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
                .ok_or_else(|| bad("no key line".into()))?;
            let key = PublicKey::from_base64(line).map_err(|e| bad(e.to_string()))?;
            let id = key_id(line).ok_or_else(|| bad("too short".into()))?;
            Ok(TrustedKey {
                id,
                source_name: source_name.to_string(),
                key,
            })
        }
    }

    /// minisign's key id: bytes 2..10 of the decoded key or signature line, little-endian,
    /// printed as 16 uppercase hex digits.
    fn key_id(b64_line: &str) -> Option<String> {
        let bytes = super::base64_decode(b64_line.trim())?;
        let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
        Some(format!("{:016X}", u64::from_le_bytes(id)))
    }

    /// Checks `signature` (a minisign signature file's text) over `manifest`; returns the id
    /// of the key that signed it.
    pub fn verify(
        manifest: &[u8],
        signature: &str,
        keys: &[TrustedKey],
    ) -> Result<String, SignatureError> {
        if keys.is_empty() {
            return Err(SignatureError::NoKeys);
        }
        let sig = Signature::decode(signature).map_err(|e| SignatureError::Malformed {
            reason: e.to_string(),
        })?;
        let signed_by =
            signature
                .lines()
                .nth(1)
                .and_then(key_id)
                .ok_or_else(|| SignatureError::Malformed {
                    reason: "no signature line".into(),
                })?;
        let key =
            keys.iter()
                .find(|k| k.id == signed_by)
                .ok_or_else(|| SignatureError::UnknownKey {
                    signed_by: signed_by.clone(),
                    trusted: keys.iter().map(|k| k.id.clone()).collect(),
                })?;
        // Legacy (not prehashed) signatures are accepted too: `minisign -l` makes them, and
        // for a manifest of a few kilobytes the two are equally sound.
        key.key
            .verify(manifest, &sig, true)
            .map_err(|_| SignatureError::Invalid {
                key_id: signed_by.clone(),
            })?;
        Ok(signed_by)
    }
}

/// Standard base64 (padding optional), for reading minisign key and signature lines.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
