//! Unit tests of `disk.rs`.

use super::*;

#[test]
fn partitions_are_aligned_and_disjoint() {
    let parts = [
        (ESP_START, ESP_SIZE),
        (ROOT_A_START, ROOT_SIZE),
        (ROOT_B_START, ROOT_SIZE),
        (STATE_START, STATE_SIZE),
    ];
    for w in parts.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "partitions must be contiguous");
    }
    for (start, size) in parts {
        assert_eq!(start % MIB, 0);
        assert_eq!(size % MIB, 0);
    }
    assert_eq!(STATE_START + STATE_SIZE + MIB, DISK_SIZE);
    assert_eq!(Slot::A.start(), ROOT_A_START);
    assert_eq!(Slot::B.start(), ROOT_B_START);
}

#[test]
fn cmdline_names_the_slot_by_partuuid() {
    let r = VerityRoot {
        data_bytes: 8 * VERITY_BLOCK,
        root_hash: "ab".repeat(32),
    };
    let line = r.cmdline(Slot::B, " sysctr.log=debug ");
    assert!(line.contains("sysctr.slot=b"));
    assert!(line.contains(&format!(
        "0 64 verity 1 PARTUUID={g} PARTUUID={g} 4096 4096 8 8 sha256",
        g = Slot::B.part_guid()
    )));
    assert!(line.ends_with("ro sysctr.log=debug"));
    assert_eq!(Slot::A.uki_name(1, Some(3)), "sysctr-g1-a+3.efi");
    assert_eq!(Slot::B.uki_name(12, None), "sysctr-g12-b.efi");
}
