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
