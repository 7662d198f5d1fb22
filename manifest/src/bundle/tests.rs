//! Unit tests of `bundle.rs`.

use super::*;

#[test]
fn a_built_manifest_is_valid_and_round_trips() {
    let m = Manifest::sample();
    m.validate().unwrap();
    assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
    use crate::protocol_update::Slot;
    assert_eq!(m.uki(Slot::A).offset, align_up(m.root().size));
    assert_eq!(
        m.uki(Slot::B).offset,
        align_up(m.uki(Slot::A).offset + 5000)
    );
    assert_eq!(m.payload_area_size(), m.uki(Slot::B).offset + 6000);
}

#[test]
fn every_bad_field_is_named() {
    type Edit = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("format", Box::new(|m| m.format = 2)),
        ("version", Box::new(|m| m.version = "1.0+3".into())),
        ("version", Box::new(|m| m.version = "v1".into())),
        ("compatible", Box::new(|m| m.compatible = String::new())),
        ("compatible", Box::new(|m| m.compatible = "a/b".into())),
        ("payloads", Box::new(|m| m.payloads.reverse())),
        (
            "payloads",
            Box::new(|m| {
                m.payloads.pop();
            }),
        ),
        (
            "payloads[1] (uki-a).offset",
            Box::new(|m| m.payloads[1].offset += 1),
        ),
        (
            "payloads[0] (root).sha256",
            Box::new(|m| m.payloads[0].sha256 = "AB".repeat(32)),
        ),
        (
            "payloads[1] (uki-a).sha256",
            Box::new(|m| m.payloads[1].sha256.pop().map(drop).unwrap_or(())),
        ),
        (
            "payloads[1] (uki-a).size",
            Box::new(|m| m.payloads[1].size = MAX_UKI_BYTES + 1),
        ),
        (
            "payloads[1] (uki-a).size",
            Box::new(|m| m.payloads[1].size = 0),
        ),
        (
            "payloads[2] (uki-b).size",
            Box::new(|m| m.payloads[2].size = MAX_UKI_BYTES + 1),
        ),
        (
            "payloads",
            Box::new(|m| m.payloads[2].name = "uki-c".into()),
        ),
        (
            "verity.algorithm",
            Box::new(|m| m.verity.algorithm = "sha1".into()),
        ),
        (
            "verity.hash_block_size",
            Box::new(|m| m.verity.hash_block_size = 512),
        ),
        (
            "verity.hash_offset",
            Box::new(|m| m.verity.hash_offset = 4096),
        ),
        (
            "verity.hash_size",
            Box::new(|m| m.verity.superblock = false),
        ),
        (
            "payloads[0] (root).size",
            Box::new(|m| {
                m.payloads[0].size += 4096;
                m.payloads[1].offset += 4096;
                m.payloads[2].offset += 4096;
            }),
        ),
        ("verity.salt", Box::new(|m| m.verity.salt = "x".into())),
        (
            "verity.root_hash",
            Box::new(|m| m.verity.root_hash = "00".into()),
        ),
    ];
    for (field, edit) in cases {
        let mut m = Manifest::sample();
        edit(&mut m);
        match m.validate() {
            Err(BundleError::Invalid { field: f, problem }) => {
                assert_eq!(f, field, "{problem}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    let err = Manifest::parse(b"{\"format\": 1,").unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn head_round_trips_and_every_bad_header_is_refused() {
    let m = Manifest::sample().to_bytes();
    let sig = b"untrusted comment: x\nAAAA\n";
    let head = encode_head(&m, sig);
    assert_eq!(head.len() as u64 % ALIGN, 0);
    let mut r = &head[..];
    let got = read_head(&mut r).unwrap();
    assert!(r.is_empty());
    assert_eq!(got.manifest, m);
    assert_eq!(got.payload_start, head.len() as u64);

    let refuse = |bytes: &[u8]| read_head(&mut &bytes[..]).unwrap_err();
    let mut bad = head.clone();
    bad[0] = b'X';
    assert!(matches!(refuse(&bad), BundleError::BadMagic { .. }));
    let mut bad = head.clone();
    bad[8] = 9;
    assert!(matches!(
        refuse(&bad),
        BundleError::UnsupportedFormat { found: 9 }
    ));
    let mut bad = head.clone();
    bad[12..16].copy_from_slice(&(MAX_MANIFEST_BYTES + 1).to_le_bytes());
    assert!(matches!(
        refuse(&bad),
        BundleError::TooLarge {
            part: "manifest",
            ..
        }
    ));
    let mut bad = head.clone();
    bad[20] = 1;
    assert!(matches!(refuse(&bad), BundleError::Reserved { .. }));
    let mut bad = head.clone();
    let last = bad.len() - 1;
    bad[last] = 1;
    assert!(matches!(
        refuse(&bad),
        BundleError::NonZeroPadding { offset, .. } if offset == last as u64
    ));
    for cut in [3, HEADER_LEN + 10, HEADER_LEN + m.len() + 2, head.len() - 1] {
        match refuse(&head[..cut]) {
            BundleError::Truncated { offset, .. } => assert_eq!(offset, cut as u64),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn versions_compare_like_semver() {
    use std::cmp::Ordering::*;
    for (a, b, want) in [
        ("1.2.0", "1.2.0", Equal),
        ("1.2", "1.2.0", Equal),
        ("1.10.0", "1.9.9", Greater),
        ("2", "10", Less),
        ("1.2.0-rc1", "1.2.0", Less),
        ("1.2.0-rc.2", "1.2.0-rc.10", Less),
        ("1.2.0-alpha", "1.2.0-beta", Less),
        ("1.2.0-1", "1.2.0-alpha", Less),
        ("2026.12.01", "2026.12.1", Equal),
        ("1.2.0-rc.1", "1.2.0-rc.1.1", Less),
    ] {
        assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
    }
}

#[test]
fn key_ids_read_like_minisign_prints_them() {
    let pubkey = include_str!("../../../keys/test-only.pub");
    let key = signature::TrustedKey::parse(pubkey, "keys/test-only.pub").unwrap();
    // minisign's own comment line names the same id.
    assert!(pubkey.contains(&key.id), "{} not in {pubkey}", key.id);
    assert!(signature::TrustedKey::parse("untrusted comment: x\n", "k").is_err());
    assert!(signature::TrustedKey::parse("RWQ!!", "k").is_err());
}
