//! Fuzzes what PID 1 reads of an update bundle before and right after the signature check:
//! the header, manifest and signature parts (`read_head`, its sizes bounded before any
//! allocation), and the manifest's parsing and validation (`Manifest::parse`). A bundle
//! comes from the network or a USB stick: no input may panic, and a manifest that parses
//! must give its payloads without overflow and survive a round trip through its bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use manifest::bundle::{read_head, Manifest};
use manifest::protocol_update::Slot;

fuzz_target!(|data: &[u8]| {
    // The bytes as a whole bundle stream.
    if let Ok(head) = read_head(&mut &data[..]) {
        assert!(head.payload_start as usize >= head.manifest.len() + head.signature.len());
        check_manifest(&head.manifest);
    }
    // The bytes as the manifest part alone (its signature already checked).
    check_manifest(data);
});

fn check_manifest(bytes: &[u8]) {
    let Ok(m) = Manifest::parse(bytes) else {
        return;
    };
    let end = m.payload_area_size();
    for p in [m.root(), m.uki(Slot::A), m.uki(Slot::B)] {
        assert!(p.offset.checked_add(p.size).is_some_and(|e| e <= end));
    }
    let again = Manifest::parse(&m.to_bytes()).expect("a valid manifest reparses");
    assert_eq!(again, m);
}
