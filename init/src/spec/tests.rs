//! Unit tests of the spec generation: secure defaults, what each manifest field adds, and
//! the errors for values that cannot be honoured.

use super::*;
use crate::seccomp::allows;

fn svc(extra: &str) -> Service {
    let text = format!(
        r#"{{"version":1,"services":[{{"name":"web","root":"/containers/web","args":["/bin/httpd"]{extra}}}]}}"#
    );
    let loaded = manifest::load_str(&text, "m.json").unwrap();
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    loaded.manifest.services[0].clone()
}

fn ctx() -> Context<'static> {
    Context {
        cgroups_path: "/sysctr/web".into(),
        notify_socket: None,
        run_dir: Path::new("/run/sysctr"),
    }
}

fn names(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

#[test]
fn secure_defaults() {
    let spec = generate(&svc(""), &ctx()).unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["process"]["noNewPrivileges"], true);
    assert_eq!(v["hostname"], "web");
    assert!(v["process"].get("rlimits").is_none(), "{v}");
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["mount", "cgroup", "pid", "ipc", "uts", "network"]);
    let caps = names(&v["process"]["capabilities"]["bounding"]);
    assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
    assert!(!caps
        .iter()
        .any(|c| *c == "CAP_SYS_ADMIN" || *c == "CAP_NET_ADMIN"));
    assert!(v["process"]["capabilities"].get("ambient").is_none());
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert_eq!(v["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert!(allows(&seccomp, "read") && allows(&seccomp, "execve"));
    for refused in [
        "mount",
        "unshare",
        "setns",
        "clock_settime",
        "keyctl",
        "bpf",
        "io_uring_setup",
        "ptrace",
        "reboot",
    ] {
        assert!(!allows(&seccomp, refused), "{refused} is allowed");
    }
    assert_eq!(v["linux"]["cgroupsPath"], "/sysctr/web");
}

#[test]
fn clone_may_not_create_namespaces_and_clone3_is_enosys() {
    let v = serde_json::to_value(generate(&svc(""), &ctx()).unwrap()).unwrap();
    let rules = v["linux"]["seccomp"]["syscalls"].as_array().unwrap();
    let clone: Vec<_> = rules
        .iter()
        .filter(|r| names(&r["names"]).contains(&"clone"))
        .collect();
    assert_eq!(clone.len(), 1, "{clone:?}");
    assert_eq!(clone[0]["action"], "SCMP_ACT_ALLOW");
    assert_eq!(
        clone[0]["args"],
        serde_json::json!([{"index": 0, "value": 0, "valueTwo": crate::seccomp::NAMESPACE_FLAGS, "op": "SCMP_CMP_MASKED_EQ"}])
    );
    let clone3: Vec<_> = rules
        .iter()
        .filter(|r| names(&r["names"]).contains(&"clone3"))
        .collect();
    assert_eq!(clone3.len(), 1);
    assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);
    // With CAP_SYS_ADMIN the namespace calls are the service's to make.
    let spec = generate(&svc(r#","capabilities":["CAP_SYS_ADMIN"]"#), &ctx()).unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    for name in ["clone", "clone3", "unshare", "setns", "mount"] {
        assert!(allows(&seccomp, name), "{name}");
    }
}

#[test]
fn manifest_settings_reach_the_spec() {
    let s = svc(
        r#","capabilities":["CAP_SYS_TIME","CAP_NET_ADMIN"],"namespaces":{"network":"host"},
        "resources":{"memory_max":"64M","pids_max":50,"cpu_weight":100},
        "mounts":[{"source":"/var/log/web","destination":"/var/log","options":["rw"]}],
        "readiness":{"kind":"notify"}, "user": {"uid": 1000, "gid": 1000}"#,
    );
    let spec = generate(
        &s,
        &Context {
            cgroups_path: "/sysctr/web".into(),
            notify_socket: Some("/run/sysctr/notify/web.sock"),
            run_dir: Path::new("/run/sysctr"),
        },
    )
    .unwrap();
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(v["linux"]["resources"]["pids"]["limit"], 50);
    assert_eq!(
        v["linux"]["resources"]["cpu"]["shares"],
        2 + 99 * 262_142 / 9_999
    );
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    assert!(!ns.iter().any(|n| n["type"] == "network"));
    let caps = names(&v["process"]["capabilities"]["effective"]);
    assert!(caps.contains(&"CAP_SYS_TIME"));
    let mut ambient = names(&v["process"]["capabilities"]["ambient"]);
    ambient.sort();
    assert_eq!(ambient, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert!(
        allows(&seccomp, "clock_settime"),
        "CAP_SYS_TIME allows setting the clock"
    );
    let mounts = v["mounts"].as_array().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["destination"] == "/var/log" && m["options"][0] == "rbind"));
    assert!(mounts
        .iter()
        .any(|m| m["destination"] == NOTIFY_SOCKET_IN_CONTAINER));
    assert!(!mounts
        .iter()
        .any(|m| m["destination"] == CONTROL_SOCKET_IN_CONTAINER));
    assert!(v["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "NOTIFY_SOCKET=/run/sysctr/notify"));
    assert_eq!(v["process"]["user"]["uid"], 1000);
}

#[test]
fn control_socket_is_bound_alone_and_read_only() {
    let v =
        serde_json::to_value(generate(&svc(r#","control_socket":true"#), &ctx()).unwrap()).unwrap();
    let m = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == CONTROL_SOCKET_IN_CONTAINER)
        .cloned()
        .expect("control socket mounted");
    assert_eq!(m["source"], "/run/sysctr/control.sock");
    assert!(names(&m["options"]).contains(&"ro"));
}

#[test]
fn a_bind_source_is_checked_where_it_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("innocent");
    std::os::unix::fs::symlink("/proc", &link).unwrap();
    let s = svc(&format!(
        r#","mounts":[{{"source":"{}","destination":"/x"}}]"#,
        link.display()
    ));
    let err = generate(&s, &ctx()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("mounts[0].source: {} resolves to /proc: /proc belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged", link.display())
    );
    // PID 1's run directory, wherever it is (a temporary one in test mode).
    let run = tempfile::tempdir().unwrap();
    let s = svc(&format!(
        r#","mounts":[{{"source":"{}","destination":"/x"}}]"#,
        run.path().display()
    ));
    let c = Context {
        run_dir: run.path(),
        ..ctx()
    };
    let err = generate(&s, &c).unwrap_err().to_string();
    assert!(err.starts_with("mounts[0].source: "), "{err}");
}

#[test]
fn privileged_drops_the_confinement() {
    let v = serde_json::to_value(
        generate(
            &svc(r#","privileged":true,"namespaces":{"cgroup":"host"}"#),
            &ctx(),
        )
        .unwrap(),
    )
    .unwrap();
    let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap();
    assert_eq!(caps.len(), bounding.len(), "{caps:?}");
    assert_eq!(v["process"]["noNewPrivileges"], false);
    for absent in ["seccomp", "maskedPaths", "readonlyPaths"] {
        assert!(v["linux"].get(absent).is_none(), "{absent} in {v}");
    }
    assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    assert!(!ns.iter().any(|n| n["type"] == "cgroup"));
    for m in v["mounts"].as_array().unwrap() {
        if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
            assert!(m["options"].as_array().unwrap().iter().any(|o| o == "rw"));
        }
    }
    // host cgroup namespace alone leaves the tree read-only.
    let v =
        serde_json::to_value(generate(&svc(r#","namespaces":{"cgroup":"host"}"#), &ctx()).unwrap())
            .unwrap();
    assert!(v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["destination"] == "/sys/fs/cgroup" && m["options"][4] == "ro"));
    assert!(v["linux"]["seccomp"].is_object());
}

#[test]
fn a_missing_device_is_a_clear_error() {
    let s = svc(r#","devices":["/dev/does-not-exist"]"#);
    let err = generate(&s, &ctx()).unwrap_err().to_string();
    assert!(err.starts_with("device /dev/does-not-exist: "), "{err}");
}
