//! The OCI appliance (issue 13): an image built from an appliance file whose three web
//! servers have their roots from an OCI image layout, a `docker save` tar and a registry on
//! loopback (`xtask/src/appliance_test.rs` makes all three and the image; `cargo xtask
//! boot-test` sets SYSCTR_APPLIANCE_KERNEL and SYSCTR_APPLIANCE_DISK). One boot checks all
//! three.

use std::time::Duration;
use sysctr_boot_tests::*;

/// The appliance's services and their ports, as `xtask/src/appliance_test.rs` builds them.
const SERVICES: &[(&str, u16)] = &[
    ("web-layout", 8080),
    ("web-docker-save", 8081),
    ("web-registry", 8082),
];

/// The page every image serves (the web example's, `examples/web/index.html`).
const PAGE: &str = include_str!("../../examples/web/index.html");

#[test]
fn services_from_layout_docker_save_and_registry_are_ready() {
    let image = ImagePaths::appliance_from_env();
    let scratch = Scratch::new("appliance", &image);
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_ssh(BOOT_TIMEOUT);
    let ps = vm.wait_ps(
        "the system services and the three OCI services Ready",
        BOOT_TIMEOUT,
        |ps| {
            system_ready(ps)
                && SERVICES
                    .iter()
                    .all(|(name, _)| service(ps, name).is_some_and(|s| s["state"] == "ready"))
        },
    );
    // The image has exactly these services (the onboot task aside), every one Ready.
    let mut names: Vec<&str> = ps
        .iter()
        .filter(|s| s["kind"] != "onboot")
        .map(|s| s["name"].as_str().unwrap_or("?"))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = SYSTEM_SERVICES
        .iter()
        .copied()
        .chain(SERVICES.iter().map(|(n, _)| *n))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        names,
        expected,
        "{}",
        serde_json::to_string_pretty(&ps).unwrap()
    );
    vm.wait_for(ALL_READY, Duration::from_secs(30));

    for (name, port) in SERVICES {
        // Each server answers with the page its image carries.
        let page = vm.ssh(&format!("wget -q -O - http://127.0.0.1:{port}/"));
        assert_eq!(page, PAGE, "{name} on :{port}");
        // Ready at its first start: the import left nothing for the runtime to trip on.
        let s = service(&ps, name).unwrap();
        assert!(s["pid"].as_i64().is_some_and(|p| p > 0), "{name}: {s}");
        assert_eq!(s["restarts"], 0, "{name}: {s}");
    }
}
