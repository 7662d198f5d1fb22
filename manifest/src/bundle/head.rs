//! The bundle's front: header, manifest, signature and the zero padding up to the first
//! payload, written by [`encode_head`] and read (for shape only, nothing trusted yet) by
//! [`read_head`].

use super::{
    align_up, BundleError, ALIGN, FORMAT, HEADER_LEN, MAGIC, MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
};
use std::io::{self, Read};

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
