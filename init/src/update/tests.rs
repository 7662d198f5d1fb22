//! Installs on temp files: a slot file with old content and an ESP directory with an old
//! entry per slot. The refusals are in `tests/refusals.rs` (every one detected before
//! writing must leave the slot and the ESP byte-identical); this file has the good
//! installs, the read-back check, entry names, rollback and the trusted keys.

mod fixture;
mod refusals;

use super::slot::verify_slot;
use super::*;
use fixture::*;
use manifest::bundle::signature::TrustedKey;
use manifest::protocol_update::SlotState;
use std::fs;
use std::fs::OpenOptions;

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
