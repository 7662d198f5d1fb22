//! Fuzzes the manifest loader PID 1 runs at every boot (`load_str`: JSON syntax, the schema,
//! every bound of issue 16's finding 1, dependency checks). It must not panic on any text;
//! every rejection must describe itself; and a manifest it accepts must load again, equal
//! and with nothing rejected, from its own serialization (beside the names of the entries
//! it rejected: an accepted service may depend on one, and waits for it in vain at boot).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match manifest::load_str(text, "fuzz.json") {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(loaded) => {
            for r in &loaded.rejected {
                assert!(!r.describe("fuzz.json").is_empty());
            }
            let again = serde_json::to_string(&loaded.manifest).expect("a manifest serializes");
            let rejected: std::collections::BTreeSet<String> =
                loaded.rejected.iter().map(|r| r.name.clone()).collect();
            let reloaded = manifest::load::load_str_beside(&again, "again.json", &rejected)
                .unwrap_or_else(|e| panic!("an accepted manifest reloads: {e}\n{again}"));
            assert!(
                reloaded.rejected.is_empty(),
                "{again}: {:?}",
                reloaded.rejected
            );
            assert_eq!(reloaded.manifest, loaded.manifest);
        }
    }
});
