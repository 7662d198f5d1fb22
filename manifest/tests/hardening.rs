//! Adversarial manifests: every bound, every refused value, each with the exact message an
//! operator sees (file, service, field, and the limit).

use manifest::validate::{exec_request, limits};
use manifest::{load_str, Loaded};

fn load(services: &str) -> Loaded {
    load_str(
        &format!(r#"{{"version": 1, "services": [{services}]}}"#),
        "m.json",
    )
    .expect("file-level load succeeds")
}

/// A service `s` with `extra` fields, loaded; returns its problems (empty when accepted).
fn problems_of(extra: &str) -> Vec<String> {
    let l = load(&format!(
        r#"{{"name": "s", "root": "/c/s", "args": ["/bin/s"]{extra}}}"#
    ));
    match l.rejected.iter().find(|r| r.name == "s") {
        Some(r) => r.problems.iter().map(|p| p.describe("m.json")).collect(),
        None => {
            assert_eq!(l.manifest.services.len(), 1);
            Vec::new()
        }
    }
}

fn rejected(extra: &str, expect: &[&str]) {
    let got = problems_of(extra);
    let expect: Vec<String> = expect
        .iter()
        .map(|e| format!("m.json: service \"s\": {e}"))
        .collect();
    assert_eq!(got, expect, "for {extra}");
}

fn accepted(extra: &str) {
    assert_eq!(problems_of(extra), Vec::<String>::new(), "for {extra}");
}

#[test]
fn huge_durations_are_rejected_with_the_maximum() {
    rejected(
        r#","readiness": {"kind": "notify", "timeout_secs": 18446744073709551615}"#,
        &["readiness.timeout_secs: 18446744073709551615 is above the maximum of 86400"],
    );
    rejected(
        r#","stop": {"timeout_secs": 18446744073709551615}"#,
        &["stop.timeout_secs: 18446744073709551615 is above the maximum of 600"],
    );
    rejected(
        r#","restart": {"backoff_initial_ms": 18446744073709551615, "backoff_max_ms": 18446744073709551615}"#,
        &[
            "restart.backoff_initial_ms: 18446744073709551615 is above the maximum of 3600000",
            "restart.backoff_max_ms: 18446744073709551615 is above the maximum of 3600000",
        ],
    );
    rejected(
        r#","restart": {"crash_loop_window_secs": 100000, "crash_loop_restarts": 4294967295}"#,
        &[
            "restart.crash_loop_restarts: 4294967295 is above the maximum of 10000",
            "restart.crash_loop_window_secs: 100000 is above the maximum of 86400",
        ],
    );
    rejected(
        r#","readiness": {"kind": "tcp", "port": 80, "interval_ms": 60001, "timeout_secs": 86401}"#,
        &[
            "readiness.timeout_secs: 86401 is above the maximum of 86400",
            "readiness.interval_ms: 60001 is above the maximum of 60000",
        ],
    );
    accepted(
        r#","readiness": {"kind": "file", "path": "/r", "interval_ms": 60000, "timeout_secs": 86400}, "stop": {"timeout_secs": 600}"#,
    );
}

#[test]
fn zero_intervals_and_timeouts_are_rejected() {
    rejected(
        r#","readiness": {"kind": "exec", "command": ["/bin/true"], "interval_ms": 0}"#,
        &["readiness.interval_ms: 0 is below the minimum of 10"],
    );
    rejected(
        r#","readiness": {"kind": "file", "path": "/r", "interval_ms": 9}"#,
        &["readiness.interval_ms: 9 is below the minimum of 10"],
    );
    rejected(
        r#","readiness": {"kind": "notify", "timeout_secs": 0}"#,
        &["readiness.timeout_secs: 0 is below the minimum of 1"],
    );
    rejected(
        r#","stop": {"timeout_secs": 0}"#,
        &["stop.timeout_secs: 0 is below the minimum of 1"],
    );
    rejected(
        r#","restart": {"backoff_initial_ms": 0, "crash_loop_restarts": 0, "crash_loop_window_secs": 0}"#,
        &[
            "restart.crash_loop_restarts: 0 is below the minimum of 1",
            "restart.crash_loop_window_secs: 0 is below the minimum of 1",
        ],
    );
}

#[test]
fn sizes_and_counts_are_bounded() {
    rejected(
        r#","log_buffer": "65M", "resources": {"memory_max": "65537G", "pids_max": 4194305}"#,
        &[
            "resources.memory_max: \"65537G\" is above the maximum of 64T (70368744177664 bytes)",
            "resources.pids_max: 4194305 is above the maximum of 4194304",
            "log_buffer: \"65M\" is above the 64M maximum",
        ],
    );
    accepted(r#","log_buffer": "64M", "resources": {"memory_max": "65536G", "pids_max": 4194304}"#);
    let many = vec!["\"/dev/null\""; limits::LIST + 1].join(",");
    rejected(
        &format!(r#","devices": [{many}]"#),
        &["devices: 257 entries is above the maximum of 256"],
    );
    let long = "x".repeat(limits::ARG_BYTES + 1);
    rejected(
        &format!(r#","env": ["A={long}"]"#),
        &["env[0]: 32771 bytes is above the maximum of 32768"],
    );
    let args = vec!["\"a\""; limits::ARGS + 1].join(",");
    let l = load(&format!(
        r#"{{"name": "s", "root": "/c", "args": [{args}]}}"#
    ));
    assert_eq!(
        l.rejected[0].problems[0].describe("m.json"),
        "m.json: service \"s\": args: 1025 entries is above the maximum of 1024"
    );
}

#[test]
fn too_many_services_rejects_the_file() {
    let one = r#"{"name": "s", "root": "/c", "args": ["/a"]}"#;
    let all = vec![one; limits::SERVICES + 1].join(",");
    let err = load_str(
        &format!(r#"{{"version": 1, "services": [{all}]}}"#),
        "m.json",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.json: services: 1025 entries is above the maximum of 1024"
    );
}

#[test]
fn bad_environment_entries() {
    rejected(
        r#","env": ["A=b\u0000c", "NOEQUALS", "=value", "OK=1", "EMPTY="]"#,
        &[
            "env[0]: \"A=b\\0c\" contains a NUL byte",
            "env[1]: \"NOEQUALS\" is not KEY=VALUE",
            "env[2]: \"=value\" has an empty name",
        ],
    );
    rejected(
        r#","args": ["/bin/sh", "-c", "echo\u0000x"]"#,
        &["args[2]: contains a NUL byte"],
    );
    rejected(
        r#","readiness": {"kind": "exec", "command": ["/bin/ch\u0000eck"]}"#,
        &["readiness.command[0]: contains a NUL byte"],
    );
    rejected(
        r#","cwd": "/s\u0000rv""#,
        &["cwd: \"/s\\0rv\" contains a NUL byte"],
    );
}

#[test]
fn exec_requests_are_checked_like_services() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(exec_request(&s(&["/bin/sh"]), &s(&["A=1"])), Ok(()));
    assert_eq!(
        exec_request(&s(&["/bin/sh"]), &s(&["A=b\0c"]))
            .unwrap_err()
            .to_string(),
        "env[0]: \"A=b\\0c\" contains a NUL byte"
    );
    assert_eq!(
        exec_request(&s(&["/bin/sh"]), &s(&["NOEQUALS"]))
            .unwrap_err()
            .to_string(),
        "env[0]: \"NOEQUALS\" is not KEY=VALUE"
    );
    assert_eq!(
        exec_request(&s(&["/bin/sh"]), &s(&["=x"]))
            .unwrap_err()
            .to_string(),
        "env[0]: \"=x\" has an empty name"
    );
    assert_eq!(
        exec_request(&s(&["/bin/s\0h"]), &[])
            .unwrap_err()
            .to_string(),
        "args[0]: contains a NUL byte"
    );
    assert_eq!(
        exec_request(&[], &[]).unwrap_err().to_string(),
        "args: must name a command"
    );
}

#[test]
fn no_change_ids_are_rejected() {
    rejected(
        r#","user": {"uid": 4294967295, "gid": 4294967295, "additional_gids": [5, 4294967295]}"#,
        &[
            "user.uid: 4294967295 is (uid_t)-1, which the kernel reads as \"no change\" (the service would stay root)",
            "user.gid: 4294967295 is (uid_t)-1, which the kernel reads as \"no change\" (the service would stay root)",
            "user.additional_gids[1]: 4294967295 is (uid_t)-1, which the kernel reads as \"no change\" (the service would stay root)",
        ],
    );
    accepted(r#","user": {"uid": 4294967294, "gid": 65534}"#);
}

#[test]
fn host_root_and_kernel_interfaces_cannot_be_bind_mounted() {
    let bind = |src: &str| format!(r#","mounts": [{{"source": "{src}", "destination": "/x"}}]"#);
    rejected(
        &bind("/"),
        &["mounts[0].source: the host's root directory may not be mounted (it exposes everything, PID 1's files included)"],
    );
    rejected(
        &bind("//./"),
        &["mounts[0].source: the host's root directory may not be mounted (it exposes everything, PID 1's files included)"],
    );
    for (src, base) in [
        ("/proc", "/proc"),
        ("/proc/sys/kernel", "/proc"),
        ("/sys/", "/sys"),
        ("/dev", "/dev"),
        ("/dev/./sda", "/dev"),
        ("/sbin/init", "/sbin/init"),
        ("/etc/sysctr/manifest.json", "/etc/sysctr"),
        ("/var/log/sysctr", "/var/log/sysctr"),
        ("/run/sysctr/control.sock", "/run/sysctr/control.sock"),
        ("/run/sysctr/bundles/web", "/run/sysctr/bundles"),
        ("/run/sysctr/esp", "/run/sysctr/esp"),
        ("/var/lib/sysctr/boot/history.jsonl", "/var/lib/sysctr/boot"),
    ] {
        rejected(
            &bind(src),
            &[&format!("mounts[0].source: {base} belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged")],
        );
    }
    for (src, inner) in [
        ("/var", "/var/log/sysctr"),
        ("/var/log", "/var/log/sysctr"),
        ("/etc", "/etc/sysctr"),
        ("/sbin", "/sbin/init"),
        ("/run", "/run/sysctr/control.sock"),
    ] {
        rejected(
            &bind(src),
            &[&format!("mounts[0].source: {src} contains {inner}, which belongs to the kernel or PID 1; mount a directory below it instead")],
        );
    }
    // The shared directories below /run/sysctr and /var/lib/sysctr stay usable.
    accepted(&bind("/run/sysctr/net"));
    accepted(&bind("/var/lib/sysctr/ssh"));
    accepted(&bind("/var/log/syslog"));
    accepted(&bind("/devices"));
    // privileged services may mount what they like.
    accepted(&format!(r#"{}, "privileged": true"#, bind("/")));
}

#[test]
fn the_run_directory_itself_is_refused() {
    let got = problems_of(r#","mounts": [{"source": "/run/sysctr/", "destination": "/x"}]"#);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("m.json: service \"s\": mounts[0].source: /run/sysctr contains /run/sysctr/control.sock"),
        "{got:?}"
    );
    let got = problems_of(r#","mounts": [{"source": "/var/lib/sysctr", "destination": "/x"}]"#);
    assert_eq!(
        got,
        ["m.json: service \"s\": mounts[0].source: /var/lib/sysctr contains /var/lib/sysctr/boot, which belongs to the kernel or PID 1; mount a directory below it instead"]
    );
}

#[test]
fn kernel_filesystems_need_privileged() {
    for kind in ["proc", "sysfs", "devtmpfs", "ext4", "overlay"] {
        rejected(
            &format!(r#","mounts": [{{"source": "x", "destination": "/x", "type": "{kind}"}}]"#),
            &[&format!("mounts[0].type: {kind:?} mounts need \"privileged\": true (allowed otherwise: bind, tmpfs, mqueue)")],
        );
        accepted(&format!(
            r#","privileged": true, "mounts": [{{"source": "x", "destination": "/x", "type": "{kind}"}}]"#
        ));
    }
    accepted(r#","mounts": [{"source": "tmpfs", "destination": "/x", "type": "tmpfs"}]"#);
}

#[test]
fn host_root_as_container_root_is_refused() {
    let l = load(r#"{"name": "s", "root": "//", "args": ["/a"], "privileged": true}"#);
    assert_eq!(
        l.rejected[0].describe("m.json"),
        "m.json: service \"s\": root: the host's root directory cannot be a container's root filesystem"
    );
    rejected(
        r#","root": "/proc/1/root""#,
        &["root: /proc belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged"],
    );
}

#[test]
fn typed_values_are_parsed_once() {
    let l = load(
        r#"{"name": "s", "root": "/c", "args": ["/a"], "stop": {"signal": "hup"},
            "capabilities": ["CAP_NET_ADMIN"], "log_buffer": "8K", "resources": {"memory_max": "2M"}}"#,
    );
    let s = &l.manifest.services[0];
    assert_eq!(s.stop.signal.number(), libc_sighup());
    assert_eq!(s.stop.signal.to_string(), "SIGHUP");
    assert_eq!(s.capabilities[0].as_str(), "CAP_NET_ADMIN");
    assert_eq!(s.log_buffer_bytes(), 8 << 10);
    assert_eq!(s.memory_max_bytes(), Some(2 << 20));
    assert_eq!(s.stop.timeout(), std::time::Duration::from_secs(10));
    assert_eq!(s.readiness.timeout(), std::time::Duration::ZERO);
}

fn libc_sighup() -> i32 {
    1
}

#[test]
fn every_bad_typed_value_is_reported_with_its_index() {
    rejected(
        r#","capabilities": ["CAP_NET_ADMIN", "CAP_FLY", "CAP_SYS_TIME", "CAP_SWIM"], "stop": {"signal": "SIGNOPE"}, "log_buffer": "lots""#,
        &[
            "capabilities[1]: unknown capability \"CAP_FLY\"",
            "capabilities[3]: unknown capability \"CAP_SWIM\"",
            "log_buffer: \"lots\" is not a size (expected e.g. \"64M\" or \"1048576\")",
            "stop.signal: unknown signal \"SIGNOPE\"",
        ],
    );
}

#[test]
fn the_system_containers_pass_the_policy() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../system-containers");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        for file in ["service.json", "service.dev.json"] {
            let path = entry.path().join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let l = load_str(
                &format!(r#"{{"version": 1, "services": [{text}]}}"#),
                &path.display().to_string(),
            )
            .unwrap();
            let problems: Vec<String> = l
                .rejected
                .iter()
                .flat_map(|r| r.problems.iter())
                // Dependencies name services in other files.
                .filter(|p| !p.message.starts_with("unknown dependency"))
                .map(|p| p.describe(&path.display().to_string()))
                .collect();
            assert!(problems.is_empty(), "{problems:#?}");
            // No onboot task makes the shared directories: every bind source on tmpfs /run
            // or a fresh /var is one PID 1 creates from host_dirs.
            for svc in &l.manifest.services {
                for m in svc.mounts.iter().filter(|m| m.kind == "bind") {
                    if m.source.starts_with("/run/") || m.source.starts_with("/var/") {
                        assert!(
                            svc.host_dirs.contains(&m.source),
                            "{}: bind source {} is not in host_dirs",
                            path.display(),
                            m.source
                        );
                    }
                }
            }
            seen += 1;
        }
    }
    assert!(seen >= 6, "only {seen} service files found");
}

#[test]
fn the_boot_test_services_pass_the_policy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../boot-tests/test-services.json"
    );
    let l = manifest::load_file(std::path::Path::new(path)).unwrap();
    let problems: Vec<String> = l.rejected.iter().map(|r| r.describe(path)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_service_with_a_bad_typed_value_still_takes_part_in_the_dependency_checks() {
    let l = load(
        r#"{"name": "a", "root": "/c", "args": ["/a"], "depends_on": ["b"], "resources": {"memory_max": "lots"}},
           {"name": "b", "root": "/c", "args": ["/b"], "depends_on": ["a"]},
           {"name": "c", "root": "/c", "args": ["/c"], "depends_on": ["a"]}"#,
    );
    let a = &l.rejected.iter().find(|r| r.name == "a").unwrap().problems;
    assert_eq!(
        a.iter().map(|p| p.describe("m.json")).collect::<Vec<_>>(),
        [
            "m.json: service \"a\": resources.memory_max: \"lots\" is not a size (expected e.g. \"64M\" or \"1048576\")",
            "m.json: service \"a\": depends_on: dependency cycle: a -> b -> a",
        ]
    );
    assert!(l.rejected.iter().any(|r| r.name == "b"));
    // c depends on a rejected service, not an unknown one: no second complaint about it.
    assert!(
        l.rejected.iter().all(|r| r.name != "c"),
        "{:#?}",
        l.rejected
    );
    assert_eq!(l.manifest.services.len(), 1);
}
