//! Installs on temp files: a slot file with old content and an ESP directory with an old
//! entry per slot. Refusals come first: every one detected before writing must leave the
//! slot and the ESP byte-identical.

mod fixture;

use super::slot::verify_slot;
use super::*;
use fixture::*;
use manifest::bundle::signature::TrustedKey;
use manifest::protocol_update::SlotState;
use std::fs;
use std::fs::OpenOptions;

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

#[test]
fn a_good_install_writes_the_slot_and_the_newest_boot_counted_entry() {
    let good = fixture("1.1.0");
    let bytes = signed(&good);
    for seekable in [true, false] {
        let machine = Machine::new(SLOT_SIZE);
        let (result, seen) = machine.install(&bytes, seekable, &keys(), &policy());
        let installed = result.unwrap();
        assert_eq!(installed.version, "1.1.0");
        assert_eq!(installed.slot, Slot::B);
        assert_eq!(installed.entry, "EFI/Linux/sysctr-g4-b+3.efi");
        assert_eq!(installed.key_id, "DB070B3F9EF07E44");

        let slot = fs::read(&machine.slot).unwrap();
        assert_eq!(&slot[..good.root.len()], &good.root[..]);
        assert!(slot[good.root.len()..].iter().all(|&b| b == OLD_SLOT_BYTE));
        let esp = &machine.esp;
        assert_eq!(fs::read(esp.join(&installed.entry)).unwrap(), good.ukis[1]);
        let mut files: Vec<String> = fs::read_dir(esp.join("EFI/Linux"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            ["sysctr-g3-a.efi", "sysctr-g4-b+3.efi"],
            "old b entry and temp file gone"
        );
        assert_eq!(fs::read(esp.join(A_ENTRY)).unwrap(), tiny_uki("1.0.0", "a"));
        assert_eq!(
            fs::read_to_string(esp.join("loader/loader.conf")).unwrap(),
            LOADER_CONF,
            "no default is ever written"
        );

        let phases: Vec<Phase> = seen.iter().map(|p| p.phase).collect();
        let mut order = vec![Phase::Verifying];
        if seekable {
            order.push(Phase::CheckingPayloads);
        }
        order.extend([
            Phase::WritingSlot,
            Phase::VerifyingSlot,
            Phase::WritingUki,
            Phase::Activating,
        ]);
        let mut dedup = phases.clone();
        dedup.dedup();
        assert_eq!(dedup, order, "seekable={seekable}");
        let last_write = seen
            .iter()
            .rev()
            .find(|p| p.phase == Phase::WritingSlot)
            .unwrap();
        assert_eq!(
            (last_write.done, last_write.total),
            (good.root.len() as u64, good.root.len() as u64)
        );

        let status = esp::slot_status(esp).unwrap();
        assert_eq!(status[0].state, SlotState::Good);
        assert_eq!(status[0].version.as_deref(), Some("1.0.0"));
        assert!(!status[0].next_boot);
        assert_eq!(status[1].state, SlotState::Trial);
        assert_eq!(
            status[1].version.as_deref(),
            Some("1.1.0"),
            "from the UKI's .osrel"
        );
        assert_eq!(status[1].tries_left, Some(3));
        assert!(status[1].next_boot);
    }
}

#[test]
fn allow_downgrade_installs_an_older_or_the_same_version() {
    let machine = Machine::new(SLOT_SIZE);
    let policy = Policy {
        allow_downgrade: true,
        ..policy()
    };
    for (v, gen) in [("0.9.1", 4), ("1.0.0", 4)] {
        let (r, _) = machine.install(&signed(&fixture(v)), false, &keys(), &policy);
        assert_eq!(r.unwrap().entry, format!("EFI/Linux/sysctr-g{gen}-b+3.efi"));
    }
    let names: Vec<_> = esp::entries(&machine.esp).unwrap();
    assert_eq!(
        names.len(),
        2,
        "the second install replaced the first: {names:?}"
    );
}

#[test]
fn verify_slot_catches_a_slot_that_reads_back_wrong() {
    let good = fixture("1.1.0");
    let machine = Machine::new(SLOT_SIZE);
    let mut slot = fs::read(&machine.slot).unwrap();
    slot[..good.root.len()].copy_from_slice(&good.root);
    fs::write(&machine.slot, &slot).unwrap();
    let mut f = OpenOptions::new().read(true).open(&machine.slot).unwrap();
    verify_slot(&mut f, Slot::B, &good.manifest, &mut |_| {}).unwrap();

    slot[4096 * 150 + 1] ^= 4;
    fs::write(&machine.slot, &slot).unwrap();
    let err = verify_slot(&mut f, Slot::B, &good.manifest, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::SlotVerify {
                check: "sha256",
                slot: Slot::B,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not bootable"), "{err}");

    // Same bytes, a manifest that expects another tree: the verity checks name themselves.
    slot[4096 * 150 + 1] ^= 4;
    fs::write(&machine.slot, &slot).unwrap();
    let mut m = good.manifest.clone();
    m.verity.root_hash = "11".repeat(32);
    let err = verify_slot(&mut f, Slot::B, &m, &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            UpdateError::SlotVerify {
                check: "dm-verity root hash",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn entry_names_parse_like_the_image_build_writes_them() {
    let e = esp::parse_entry("sysctr-g12-b+2-1.efi").unwrap();
    assert_eq!(
        (e.generation, e.slot, e.tries_left, e.tries_done),
        (12, Slot::B, Some(2), Some(1))
    );
    assert_eq!(e.state(), SlotState::Trial);
    assert_eq!(
        esp::parse_entry("sysctr-g1-a.efi").unwrap().state(),
        SlotState::Good
    );
    assert_eq!(
        esp::parse_entry("SYSCTR-G1-A+3.EFI").unwrap().tries_left,
        Some(3)
    );
    let bad = esp::parse_entry("sysctr-g2-a+0-3.efi").unwrap();
    assert_eq!(bad.state(), SlotState::Bad);
    assert!(!bad.bootable());
    for other in [
        "sysctr-g1-c.efi",
        "sysctr-a+3.efi",
        "sysctr-gx-a.efi",
        "sysctr-g1-a+x.efi",
        "sysctr-g1-a+1-.efi",
        "linux.efi",
        ".sysctr-a.efi.tmp",
    ] {
        assert!(esp::parse_entry(other).is_none(), "{other}");
    }
    assert_eq!(
        esp::entry_file_name(4, Slot::B, Some(3)),
        "sysctr-g4-b+3.efi"
    );
    assert_eq!(esp::entry_file_name(4, Slot::B, None), "sysctr-g4-b.efi");
}

#[test]
fn rollback_gives_the_other_slot_the_newest_generation() {
    let machine = Machine::new(SLOT_SIZE);
    let (r, _) = machine.install(&signed(&fixture("1.1.0")), false, &keys(), &policy());
    assert_eq!(r.unwrap().entry, "EFI/Linux/sysctr-g4-b+3.efi");
    let esp_dir = &machine.esp;
    assert!(esp::slot_status(esp_dir).unwrap()[1].next_boot);
    assert_eq!(
        esp::prefer(esp_dir, Slot::A).unwrap().as_deref(),
        Some("sysctr-g5-a.efi")
    );
    let status = esp::slot_status(esp_dir).unwrap();
    assert!(status[0].next_boot && !status[1].next_boot);
    assert_eq!(status[0].version.as_deref(), Some("1.0.0"));
    // Already first: nothing to rename.
    assert_eq!(
        esp::prefer(esp_dir, Slot::A).unwrap().as_deref(),
        Some("sysctr-g5-a.efi")
    );
    // Back to b keeps its counter.
    assert_eq!(
        esp::prefer(esp_dir, Slot::B).unwrap().as_deref(),
        Some("sysctr-g6-b+3.efi")
    );
    // A bad entry is never the next boot, whatever its generation.
    fs::rename(
        esp_dir.join("EFI/Linux/sysctr-g6-b+3.efi"),
        esp_dir.join("EFI/Linux/sysctr-g6-b+0-3.efi"),
    )
    .unwrap();
    let status = esp::slot_status(esp_dir).unwrap();
    assert!(status[0].next_boot);
    assert_eq!(status[1].state, SlotState::Bad);
    esp::retire_slot(esp_dir, Slot::B).unwrap();
    assert_eq!(
        esp::slot_status(esp_dir).unwrap()[1].state,
        SlotState::Empty
    );
    assert_eq!(esp::prefer(esp_dir, Slot::B).unwrap(), None);
}

#[test]
fn trusted_keys_load_from_a_directory_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("test-only.pub"), TEST_PUB).unwrap();
    fs::write(dir.path().join("README"), "not a key").unwrap();
    let loaded = keys::load(dir.path()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, "DB070B3F9EF07E44");
    fs::write(
        dir.path().join("broken.pub"),
        "untrusted comment: x\nRWQ=\n",
    )
    .unwrap();
    let err = keys::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("broken.pub"), "{err}");
}
