//! The dm-verity hash tree, computed the way `veritysetup format` lays it out (hash type 1,
//! sha256, salt first, 4096-byte blocks): the image build uses it to make a slot's tree,
//! the installer to check a written slot against the root hash in the signed manifest.
//!
//! The verity area of a slot is an optional 512-byte superblock padded to one hash block,
//! then the tree's levels from the top (one block) down to the level that hashes the data
//! blocks. Each hash is `sha256(salt || block)`; a hash block holds 128 of them, zero-padded.
//! The root hash is the hash of the top block; with a single data block there is no tree
//! and the root hash is that block's hash.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

pub const BLOCK_SIZE: usize = 4096;
pub const DIGEST_SIZE: usize = 32;
const HASHES_PER_BLOCK: u64 = (BLOCK_SIZE / DIGEST_SIZE) as u64;
pub const SUPERBLOCK_SIZE: usize = 512;
pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"verity\0\0";
/// The largest salt a verity superblock holds.
pub const MAX_SALT_BYTES: usize = 256;

/// The parameters that, with the data, determine the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    /// Whether the area starts with a veritysetup superblock.
    pub superblock: bool,
    /// Written into the superblock; veritysetup picks a random one.
    pub uuid: [u8; 16],
}

/// How many blocks each level has, top level first. Empty for a single data block.
pub fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(HASHES_PER_BLOCK);
        levels.push(n);
    }
    levels.reverse();
    levels
}

/// Bytes of the verity area (superblock + tree) for `data_blocks` data blocks.
pub fn area_size(data_blocks: u64, superblock: bool) -> u64 {
    let tree: u64 = level_blocks(data_blocks).iter().sum();
    (tree + u64::from(superblock)) * BLOCK_SIZE as u64
}

fn salted(salt: &[u8], block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// A finished tree: the root hash and the verity area's bytes as they sit on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    pub root_hash: [u8; DIGEST_SIZE],
    pub area: Vec<u8>,
}

/// Hashes data blocks as they stream past; only the lowest level (1/128 of the data) is
/// kept in memory.
pub struct Hasher {
    salt: Vec<u8>,
    partial: Vec<u8>,
    leaves: Vec<u8>,
    blocks: u64,
}

impl Hasher {
    pub fn new(salt: &[u8]) -> Self {
        Hasher {
            salt: salt.to_vec(),
            partial: Vec::with_capacity(BLOCK_SIZE),
            leaves: Vec::new(),
            blocks: 0,
        }
    }

    pub fn update(&mut self, mut buf: &[u8]) {
        if !self.partial.is_empty() {
            let take = (BLOCK_SIZE - self.partial.len()).min(buf.len());
            self.partial.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.partial.len() == BLOCK_SIZE {
                let block = std::mem::take(&mut self.partial);
                self.push_block(&block);
                self.partial = block;
                self.partial.clear();
            }
        }
        let mut chunks = buf.chunks_exact(BLOCK_SIZE);
        for block in &mut chunks {
            self.push_block(block);
        }
        self.partial.extend_from_slice(chunks.remainder());
    }

    fn push_block(&mut self, block: &[u8]) {
        let d = salted(&self.salt, block);
        self.leaves.extend_from_slice(&d);
        self.blocks += 1;
    }

    /// Data blocks hashed so far; a trailing partial block is not counted.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Whether the bytes seen so far end on a block boundary.
    pub fn is_aligned(&self) -> bool {
        self.partial.is_empty()
    }

    /// Builds the upper levels and the on-disk area. The data must have been a whole
    /// number of blocks (checked by the caller with [`Hasher::is_aligned`]).
    pub fn finish(self, superblock: Option<[u8; 16]>) -> Tree {
        let data_blocks = self.blocks;
        if data_blocks == 1 {
            let mut root = [0u8; DIGEST_SIZE];
            root.copy_from_slice(&self.leaves);
            let mut area = Vec::new();
            if let Some(uuid) = superblock {
                area.extend_from_slice(&superblock_bytes(&self.salt, data_blocks, uuid));
            }
            return Tree {
                root_hash: root,
                area,
            };
        }
        // Levels from the bottom up; each is a whole number of zero-padded hash blocks.
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut below = self.leaves;
        loop {
            let mut level = Vec::new();
            for group in below.chunks(BLOCK_SIZE) {
                let start = level.len();
                level.extend_from_slice(group);
                level.resize(start + BLOCK_SIZE, 0);
            }
            let blocks = level.len() / BLOCK_SIZE;
            if blocks == 1 {
                let root = salted(&self.salt, &level);
                levels.push(level);
                let mut area = Vec::new();
                if let Some(uuid) = superblock {
                    area.extend_from_slice(&superblock_bytes(&self.salt, data_blocks, uuid));
                }
                for level in levels.iter().rev() {
                    area.extend_from_slice(level);
                }
                return Tree {
                    root_hash: root,
                    area,
                };
            }
            below = level
                .chunks(BLOCK_SIZE)
                .flat_map(|b| salted(&self.salt, b))
                .collect();
            levels.push(level);
        }
    }
}

/// Hashes `data_blocks` blocks read from `data`.
pub fn compute(data: &mut impl Read, params: &Params) -> io::Result<Tree> {
    let mut hasher = Hasher::new(&params.salt);
    let mut buf = vec![0u8; 64 * BLOCK_SIZE];
    let mut left = params.data_blocks * BLOCK_SIZE as u64;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        data.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(hasher.finish(params.superblock.then_some(params.uuid)))
}

/// The 512-byte veritysetup superblock, zero-padded to one hash block.
pub fn superblock_bytes(salt: &[u8], data_blocks: u64, uuid: [u8; 16]) -> Vec<u8> {
    assert!(salt.len() <= MAX_SALT_BYTES, "salt checked by the caller");
    let mut sb = Vec::with_capacity(BLOCK_SIZE);
    sb.extend_from_slice(SUPERBLOCK_MAGIC);
    sb.extend_from_slice(&1u32.to_le_bytes()); // superblock version
    sb.extend_from_slice(&1u32.to_le_bytes()); // hash type: "normal" (salt first)
    sb.extend_from_slice(&uuid);
    let mut alg = [0u8; 32];
    alg[..6].copy_from_slice(b"sha256");
    sb.extend_from_slice(&alg);
    sb.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb.extend_from_slice(&data_blocks.to_le_bytes());
    sb.extend_from_slice(&(salt.len() as u16).to_le_bytes());
    sb.extend_from_slice(&[0u8; 6]);
    let mut salt_field = [0u8; MAX_SALT_BYTES];
    salt_field[..salt.len()].copy_from_slice(salt);
    sb.extend_from_slice(&salt_field);
    sb.resize(BLOCK_SIZE, 0);
    sb
}

/// What a veritysetup superblock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub salt: Vec<u8>,
    pub data_blocks: u64,
    pub uuid: [u8; 16],
}

/// Reads a superblock written by `veritysetup format`; `Err` names the field that is not
/// what this module computes (only hash type 1, sha256, 4096-byte blocks are supported).
pub fn parse_superblock(sb: &[u8]) -> Result<Superblock, String> {
    if sb.len() < SUPERBLOCK_SIZE {
        return Err(format!("{} bytes, a superblock has 512", sb.len()));
    }
    if &sb[..8] != SUPERBLOCK_MAGIC {
        return Err("no \"verity\" magic".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    if u32_at(8) != 1 {
        return Err(format!("superblock version {}, expected 1", u32_at(8)));
    }
    if u32_at(12) != 1 {
        return Err(format!("hash type {}, expected 1", u32_at(12)));
    }
    let alg = &sb[32..64];
    let alg_end = alg.iter().position(|&b| b == 0).unwrap_or(alg.len());
    if &alg[..alg_end] != b"sha256" {
        return Err(format!(
            "hash algorithm {:?}, expected sha256",
            String::from_utf8_lossy(&alg[..alg_end])
        ));
    }
    if u32_at(64) as usize != BLOCK_SIZE || u32_at(68) as usize != BLOCK_SIZE {
        return Err(format!(
            "block sizes {}/{}, expected 4096/4096",
            u32_at(64),
            u32_at(68)
        ));
    }
    let data_blocks = u64::from_le_bytes(sb[72..80].try_into().unwrap());
    let salt_len = u16::from_le_bytes([sb[80], sb[81]]) as usize;
    if salt_len > MAX_SALT_BYTES {
        return Err(format!("salt of {salt_len} bytes, at most 256"));
    }
    Ok(Superblock {
        salt: sb[88..88 + salt_len].to_vec(),
        data_blocks,
        uuid: sb[16..32].try_into().unwrap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(blocks: usize, seed: u8) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    #[test]
    fn level_sizes_follow_the_fan_out() {
        assert!(level_blocks(1).is_empty());
        assert_eq!(level_blocks(2), [1]);
        assert_eq!(level_blocks(128), [1]);
        assert_eq!(level_blocks(129), [1, 2]);
        assert_eq!(level_blocks(128 * 128 + 1), [1, 2, 129]);
        assert_eq!(area_size(3, true), 2 * 4096);
        assert_eq!(area_size(1, false), 0);
    }

    #[test]
    fn streaming_in_odd_pieces_gives_the_same_tree() {
        let d = data(300, 7);
        let params = Params {
            salt: vec![1, 2, 3],
            data_blocks: 300,
            superblock: true,
            uuid: [9; 16],
        };
        let whole = compute(&mut &d[..], &params).unwrap();
        let mut h = Hasher::new(&params.salt);
        for piece in d.chunks(1000) {
            h.update(piece);
        }
        assert!(h.is_aligned());
        assert_eq!(h.blocks(), 300);
        let pieces = h.finish(Some([9; 16]));
        assert_eq!(whole, pieces);
        assert_eq!(whole.area.len() as u64, area_size(300, true));
        // A flipped data byte changes the root hash.
        let mut bad = d.clone();
        bad[4096 * 200 + 5] ^= 1;
        assert_ne!(
            compute(&mut &bad[..], &params).unwrap().root_hash,
            whole.root_hash
        );
    }

    #[test]
    fn superblock_round_trips_and_bad_ones_are_named() {
        let sb = superblock_bytes(&[0xab; 32], 77, [3; 16]);
        let parsed = parse_superblock(&sb).unwrap();
        assert_eq!(parsed.salt, vec![0xab; 32]);
        assert_eq!(parsed.data_blocks, 77);
        assert_eq!(parsed.uuid, [3; 16]);
        let mut other = sb.clone();
        other[32..38].copy_from_slice(b"sha512");
        assert!(parse_superblock(&other).unwrap_err().contains("sha512"));
        assert!(parse_superblock(&sb[..100]).is_err());
        assert!(parse_superblock(&[0u8; 512]).unwrap_err().contains("magic"));
    }

    /// The reference: Debian's `veritysetup` (cryptsetup-bin). Skipped with a message when
    /// it is not installed, so `cargo test` works on a bare machine; CI installs it.
    #[test]
    fn matches_veritysetup_format() {
        let Ok(out) = std::process::Command::new("veritysetup")
            .arg("--version")
            .output()
        else {
            eprintln!("veritysetup not installed (cryptsetup-bin): skipping");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        for (blocks, salt) in [(1usize, "00"), (3, "0011"), (129, "5a5a5a5a"), (300, "")] {
            let d = data(blocks, blocks as u8);
            let data_path = dir.path().join("data");
            let hash_path = dir.path().join("hash");
            std::fs::write(&data_path, &d).unwrap();
            let _ = std::fs::remove_file(&hash_path);
            let salt_arg = if salt.is_empty() { "-" } else { salt };
            let out = std::process::Command::new("veritysetup")
                .arg("format")
                .arg(&data_path)
                .arg(&hash_path)
                .arg(format!("--salt={salt_arg}"))
                .arg("--uuid=01020304-0506-0708-090a-0b0c0d0e0f10")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let want_root = text
                .lines()
                .find_map(|l| l.strip_prefix("Root hash:"))
                .unwrap()
                .trim()
                .to_string();
            let params = Params {
                salt: hex_decode(salt),
                data_blocks: blocks as u64,
                superblock: true,
                uuid: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            };
            let tree = compute(&mut &d[..], &params).unwrap();
            assert_eq!(
                hex(&tree.root_hash),
                want_root,
                "{blocks} blocks, salt {salt}"
            );
            let on_disk = std::fs::read(&hash_path).unwrap();
            // With one data block veritysetup still leaves a zeroed block after the superblock.
            let n = tree.area.len();
            assert!(
                on_disk.len() >= n,
                "{blocks} blocks: hash device shorter than the tree"
            );
            assert_eq!(&on_disk[..n], &tree.area[..], "{blocks} blocks");
            assert!(on_disk[n..].iter().all(|&b| b == 0));
            let sb = parse_superblock(&on_disk).unwrap();
            assert_eq!(sb.salt, params.salt);
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
