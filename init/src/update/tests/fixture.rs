//! What the install tests run on: a signed test bundle built from a tiny root and two tiny
//! UKIs ([`fixture`], [`signed`]), and a [`Machine`] of temp files (a slot with old content,
//! an ESP with an old entry per slot) to install it into.

use crate::update::*;
use manifest::bundle::signature::TrustedKey;
use manifest::bundle::{verity, Verity};
use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;

pub(super) const TEST_KEY: &str = include_str!("../../../../keys/test-only.key");
pub(super) const TEST_PUB: &str = include_str!("../../../../keys/test-only.pub");
pub(super) const COMPATIBLE: &str = "sysctr-test";
pub(super) const OLD_SLOT_BYTE: u8 = 0xee;

pub(super) struct Fixture {
    pub(super) root: Vec<u8>,
    /// Slot a's and slot b's UKI.
    pub(super) ukis: [Vec<u8>; 2],
    pub(super) manifest: Manifest,
}

/// A minimal PE with an `.osrel` section, padded so its length is not a multiple of 4096.
pub(super) fn tiny_uki(version: &str, slot: &str) -> Vec<u8> {
    let osrel = format!("ID=sysctr\nSYSCTR_VERSION={version}\nSYSCTR_SLOT={slot}\n");
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe[0x46..0x48].copy_from_slice(&1u16.to_le_bytes());
    let s = 0x40 + 24;
    pe[s..s + 6].copy_from_slice(b".osrel");
    pe[s + 8..s + 12].copy_from_slice(&(osrel.len() as u32).to_le_bytes());
    pe[s + 16..s + 20].copy_from_slice(&(osrel.len() as u32).to_le_bytes());
    pe[s + 20..s + 24].copy_from_slice(&0x200u32.to_le_bytes());
    pe.extend_from_slice(osrel.as_bytes());
    pe.extend((0..10_001u32).map(|i| (i % 251) as u8 ^ slot.as_bytes()[0]));
    pe
}

pub(super) fn sha(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    bundle::to_hex(&Sha256::digest(b))
}

pub(super) fn fixture(version: &str) -> Fixture {
    let blocks = 200u64;
    let data: Vec<u8> = (0..blocks as usize * 4096)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let params = verity::Params {
        salt: vec![0x5a; 32],
        data_blocks: blocks,
        superblock: true,
        uuid: [7; 16],
    };
    let tree = verity::compute(&mut &data[..], &params).unwrap();
    let mut root = data;
    root.extend_from_slice(&tree.area);
    let ukis = [tiny_uki(version, "a"), tiny_uki(version, "b")];
    let manifest = Manifest::new(
        version,
        COMPATIBLE,
        (root.len() as u64, sha(&root)),
        [
            (ukis[0].len() as u64, sha(&ukis[0])),
            (ukis[1].len() as u64, sha(&ukis[1])),
        ],
        Verity {
            hash_type: 1,
            algorithm: "sha256".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: blocks,
            hash_offset: blocks * 4096,
            hash_size: tree.area.len() as u64,
            superblock: true,
            salt: bundle::to_hex(&params.salt),
            root_hash: bundle::to_hex(&tree.root_hash),
        },
    );
    Fixture {
        root,
        ukis,
        manifest,
    }
}

pub(super) fn sign_with(secret: &minisign::SecretKey, bytes: &[u8]) -> String {
    minisign::sign(None, secret, Cursor::new(bytes), Some("sysctr test"), None)
        .unwrap()
        .into_string()
}

/// Debian's minisign 0.11 leaves the checksum of a password-less (`-W`) key zero, which the
/// crate's loader refuses, so the key bytes are read directly (as xtask does).
pub(super) fn test_secret() -> minisign::SecretKey {
    let line = TEST_KEY.lines().nth(1).unwrap();
    minisign::SecretKey::from_bytes(&bundle::base64_decode(line).unwrap()).unwrap()
}

pub(super) fn assemble(f: &Fixture, manifest_bytes: &[u8], sig: &str) -> Vec<u8> {
    let mut out = Vec::new();
    bundle::write_bundle(
        &mut out,
        &f.manifest,
        manifest_bytes,
        sig.as_bytes(),
        [&mut &f.root[..], &mut &f.ukis[0][..], &mut &f.ukis[1][..]],
    )
    .unwrap();
    out
}

pub(super) fn signed(f: &Fixture) -> Vec<u8> {
    let m = f.manifest.to_bytes();
    assemble(f, &m, &sign_with(&test_secret(), &m))
}

pub(super) fn keys() -> Vec<TrustedKey> {
    vec![TrustedKey::parse(TEST_PUB, "keys/test-only.pub").unwrap()]
}

pub(super) fn policy() -> Policy {
    Policy {
        compatible: COMPATIBLE.into(),
        current_version: "1.0.0".into(),
        allow_downgrade: false,
    }
}

pub(super) struct Machine {
    pub(super) _dir: tempfile::TempDir,
    pub(super) slot: PathBuf,
    pub(super) esp: PathBuf,
    pub(super) bundle: PathBuf,
}

impl Machine {
    pub(super) fn new(slot_size: usize) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot-b.img");
        fs::write(&slot, vec![OLD_SLOT_BYTE; slot_size]).unwrap();
        let esp = dir.path().join("esp");
        fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
        fs::create_dir_all(esp.join("loader")).unwrap();
        // Slot a booted and blessed (generation 3); slot b's last try went bad (generation 2).
        fs::write(esp.join(A_ENTRY), tiny_uki("1.0.0", "a")).unwrap();
        fs::write(
            esp.join("EFI/Linux/sysctr-g2-b+0-3.efi"),
            b"old uki of slot b",
        )
        .unwrap();
        fs::write(esp.join("loader/loader.conf"), LOADER_CONF).unwrap();
        let bundle = dir.path().join("os.bundle");
        Machine {
            _dir: dir,
            slot,
            esp,
            bundle,
        }
    }

    pub(super) fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.strip_prefix(base).unwrap().display().to_string();
                if p.is_dir() {
                    out.insert(name + "/", Vec::new());
                    walk(&p, base, out);
                } else {
                    out.insert(name, fs::read(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.esp, &self.esp, &mut out);
        out.insert("<slot>".into(), fs::read(&self.slot).unwrap());
        out
    }

    /// Installs from a file (`seekable`) or from a one-pass stream, recording progress.
    pub(super) fn install(
        &self,
        bundle_bytes: &[u8],
        seekable: bool,
        keys: &[TrustedKey],
        policy: &Policy,
    ) -> (Result<Installed, UpdateError>, Vec<Progress>) {
        let mut device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.slot)
            .unwrap();
        let mut seen = Vec::new();
        let mut record = |p: Progress| seen.push(p);
        let target = Target {
            slot: Slot::B,
            device: &mut device,
            esp: &self.esp,
        };
        let result = if seekable {
            fs::write(&self.bundle, bundle_bytes).unwrap();
            let mut f = File::open(&self.bundle).unwrap();
            install(&mut f, target, keys, policy, &mut record)
        } else {
            install_stream(&mut &bundle_bytes[..], target, keys, policy, &mut record)
        };
        (result, seen)
    }
}

use std::fs::OpenOptions;

pub(super) const SLOT_SIZE: usize = 1 << 20;
pub(super) const A_ENTRY: &str = "EFI/Linux/sysctr-g3-a.efi";
pub(super) const LOADER_CONF: &str = "timeout 0\neditor no\n";
