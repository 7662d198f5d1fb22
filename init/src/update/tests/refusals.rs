//! Refused bundles: every refusal detected before writing leaves the slot and the ESP
//! byte-identical, its message names what is wrong, and a stream refused mid-payload leaves
//! no bootable entry for the slot it was writing.

use super::*;

#[test]
fn refusals_before_writing_leave_slot_and_esp_byte_identical() {
    let good = fixture("1.1.0");
    let good_bytes = signed(&good);
    let m = good.manifest.to_bytes();
    let sig = sign_with(&test_secret(), &m);

    let other_key = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let by_other_key = assemble(&good, &m, &sign_with(&other_key.sk, &m));

    // The manifest changed after signing: one byte of the version.
    let mut altered = m.clone();
    let at = altered.windows(5).position(|w| w == b"1.1.0").unwrap();
    altered[at + 4] = b'9';
    let altered = assemble(&good, &altered, &sig);

    let garbage_sig = assemble(&good, &m, "untrusted comment: x\nnot base64!\n");

    let for_other = {
        let mut f = fixture("1.1.0");
        f.manifest.compatible = "other-appliance".into();
        signed(&f)
    };
    let older = signed(&fixture("0.9.1"));
    let same = signed(&fixture("1.0.0"));

    let flip = |at: u64| {
        let mut b = good_bytes.clone();
        b[at as usize] ^= 0x01;
        b
    };
    let payloads = bundle::payload_start(m.len(), sig.len());
    let flipped_root_data = flip(payloads + 5000);
    let flipped_root_tree = flip(payloads + good.manifest.verity.hash_offset + 4096 + 3);
    let flipped_uki = flip(payloads + good.manifest.uki(Slot::B).offset + 777);
    // The UKI of the slot not written is checked as well.
    let flipped_other_uki = flip(payloads + good.manifest.uki(Slot::A).offset + 3);
    let mut trailing = good_bytes.clone();
    trailing.push(0);

    let wrongly_built = {
        // Signed, digests right, but the root hash is not the data's: a broken build.
        let mut f = fixture("1.1.0");
        f.manifest.verity.root_hash = "00".repeat(32);
        signed(&f)
    };

    type Check = fn(&UpdateError) -> bool;
    type Case = (&'static str, Vec<u8>, bool, Vec<TrustedKey>, Check);
    let cases: Vec<Case> = vec![
        (
            "signed by an untrusted key",
            by_other_key,
            false,
            keys(),
            |e| matches!(e, UpdateError::Signature(SignatureError::UnknownKey { .. })),
        ),
        (
            "manifest altered after signing",
            altered,
            false,
            keys(),
            |e| matches!(e, UpdateError::Signature(SignatureError::Invalid { .. })),
        ),
        ("garbage signature", garbage_sig, false, keys(), |e| {
            matches!(e, UpdateError::Signature(SignatureError::Malformed { .. }))
        }),
        ("no trusted keys", good_bytes.clone(), false, vec![], |e| {
            matches!(e, UpdateError::Signature(SignatureError::NoKeys))
        }),
        ("wrong compatible", for_other, false, keys(), |e| {
            matches!(e, UpdateError::Incompatible { .. })
        }),
        ("downgrade", older, false, keys(), |e| {
            matches!(e, UpdateError::Downgrade { .. })
        }),
        ("same version", same, false, keys(), |e| {
            matches!(e, UpdateError::SameVersion { .. })
        }),
        (
            "truncated in the manifest",
            good_bytes[..100].to_vec(),
            false,
            keys(),
            |e| matches!(e, UpdateError::Bundle(BundleError::Truncated { .. })),
        ),
        (
            "not a bundle",
            b"#!/bin/sh\necho hi\n".repeat(4),
            false,
            keys(),
            |e| matches!(e, UpdateError::Bundle(BundleError::BadMagic { .. })),
        ),
        (
            "flipped root data byte (file)",
            flipped_root_data,
            true,
            keys(),
            |e| matches!(e, UpdateError::PayloadDigest { payload, written: false, .. } if payload == "root"),
        ),
        (
            "flipped verity tree byte (file)",
            flipped_root_tree,
            true,
            keys(),
            |e| matches!(e, UpdateError::PayloadDigest { payload, written: false, .. } if payload == "root"),
        ),
        (
            "flipped UKI byte (file)",
            flipped_uki,
            true,
            keys(),
            |e| matches!(e, UpdateError::PayloadDigest { payload, written: false, .. } if payload == "uki-b"),
        ),
        (
            "flipped other slot's UKI byte (file)",
            flipped_other_uki,
            true,
            keys(),
            |e| matches!(e, UpdateError::PayloadDigest { payload, written: false, .. } if payload == "uki-a"),
        ),
        (
            "truncated in the payload (file)",
            good_bytes[..good_bytes.len() - 10].to_vec(),
            true,
            keys(),
            |e| matches!(e, UpdateError::Bundle(BundleError::Truncated { part, .. }) if part == "uki-b payload"),
        ),
        ("trailing data (file)", trailing, true, keys(), |e| {
            matches!(e, UpdateError::Bundle(BundleError::TrailingData { .. }))
        }),
        (
            "root hash not the data's (file)",
            wrongly_built,
            true,
            keys(),
            |e| matches!(e, UpdateError::VerityRoot { .. }),
        ),
    ];
    for (name, bytes, seekable, keys, check) in cases {
        let machine = Machine::new(SLOT_SIZE);
        let before = machine.snapshot();
        let (result, _) = machine.install(&bytes, seekable, &keys, &policy());
        let err = result.expect_err(name);
        assert!(check(&err), "{name}: wrong error: {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(
            machine.snapshot(),
            before,
            "{name}: slot or ESP changed ({err})"
        );
    }

    // A slot too small for the root payload.
    let machine = Machine::new(good.root.len() - 4096);
    let before = machine.snapshot();
    for seekable in [false, true] {
        let (result, _) = machine.install(&good_bytes, seekable, &keys(), &policy());
        let err = result.unwrap_err();
        assert!(
            matches!(err, UpdateError::TooLargeForSlot { slot: Slot::B, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("slot b"), "{err}");
        assert_eq!(machine.snapshot(), before);
    }
}

#[test]
fn refusal_messages_name_what_is_wrong() {
    let machine = Machine::new(SLOT_SIZE);
    let for_other = {
        let mut f = fixture("1.1.0");
        f.manifest.compatible = "other-appliance".into();
        signed(&f)
    };
    let (r, _) = machine.install(&for_other, false, &keys(), &policy());
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("other-appliance") && msg.contains(COMPATIBLE),
        "{msg}"
    );
    let (r, _) = machine.install(&signed(&fixture("0.9.1")), false, &keys(), &policy());
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("0.9.1") && msg.contains("1.0.0") && msg.contains("--allow-downgrade"),
        "{msg}"
    );
    let other = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let f = fixture("1.1.0");
    let m = f.manifest.to_bytes();
    let (r, _) = machine.install(
        &assemble(&f, &m, &sign_with(&other.sk, &m)),
        false,
        &keys(),
        &policy(),
    );
    let msg = r.unwrap_err().to_string();
    assert!(
        msg.contains("DB070B3F9EF07E44"),
        "names the trusted key: {msg}"
    );
}

#[test]
fn a_stream_refused_mid_payload_leaves_no_bootable_entry_for_the_slot() {
    let good = fixture("1.1.0");
    let bytes = signed(&good);
    let m = good.manifest.to_bytes();
    let payloads = bundle::payload_start(m.len(), sign_with(&test_secret(), &m).len());
    let mut flipped_root = bytes.clone();
    flipped_root[payloads as usize + 9000] ^= 0x80;
    let mut flipped_uki = bytes.clone();
    flipped_uki[(payloads + good.manifest.uki(Slot::B).offset) as usize + 600] ^= 0x80;
    let mut flipped_other_uki = bytes.clone();
    flipped_other_uki[(payloads + good.manifest.uki(Slot::A).offset) as usize + 600] ^= 0x80;
    let truncated = bytes[..payloads as usize + 300_000].to_vec();
    for (name, b) in [
        ("flipped root byte", flipped_root),
        ("flipped uki byte", flipped_uki),
        ("flipped other slot's uki byte", flipped_other_uki),
        ("truncated root", truncated),
    ] {
        let machine = Machine::new(SLOT_SIZE);
        let (result, _) = machine.install(&b, false, &keys(), &policy());
        let err = result.expect_err(name);
        match &err {
            UpdateError::PayloadDigest { written, .. } => assert!(written, "{name}"),
            UpdateError::Bundle(BundleError::Truncated { .. }) => {}
            other => panic!("{name}: {other:?}"),
        }
        let files: Vec<String> = fs::read_dir(machine.esp.join("EFI/Linux"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            files,
            ["sysctr-g3-a.efi"],
            "{name}: only slot a's entry is left"
        );
        assert_eq!(
            fs::read(machine.esp.join(A_ENTRY)).unwrap(),
            tiny_uki("1.0.0", "a")
        );
        assert_eq!(
            fs::read_to_string(machine.esp.join("loader/loader.conf")).unwrap(),
            LOADER_CONF
        );
        let status = esp::slot_status(&machine.esp).unwrap();
        assert!(
            status[0].next_boot && status[1].state == SlotState::Empty,
            "{name}"
        );
    }
}
