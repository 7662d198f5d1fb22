//! The OCI runtime spec for a service, generated from its manifest entry with the secure
//! defaults of DESIGN.md invariant 6: read-only root, no_new_privileges, a minimal
//! capability set plus what the manifest adds, private pid/mount/ipc/uts/cgroup
//! namespaces, only declared mounts and devices, limits in the service's own cgroup, and a
//! seccomp profile that refuses the system calls no service needs.
//!
//! The spec is written as OCI JSON and parsed back into `oci_spec::runtime::Spec`, so a
//! mistake here is a parse error naming the field, not a silently dropped setting.

use manifest::units::{CAPABILITIES, DEFAULT_CAPABILITIES};
use manifest::{NamespaceMode, Readiness, Service};
use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;

/// Where the sd_notify socket appears inside a container.
pub const NOTIFY_SOCKET_IN_CONTAINER: &str = "/run/sysctr/notify";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("device {path}: {reason}")]
    Device { path: String, reason: String },
    #[error("generated spec does not parse: {0}")]
    Invalid(#[from] serde_json::Error),
}

/// Inputs beyond the manifest entry: where PID 1 put things for this service.
pub struct Context<'a> {
    pub cgroups_path: String,
    /// Host path of the service's notify socket, when readiness is `notify`.
    pub notify_socket: Option<&'a str>,
}

/// System calls refused with EPERM in every container: kernel modules, kexec, reboot,
/// swap, keyrings, bpf, perf, raw I/O and the other calls Docker's default profile refuses.
/// The ones a capability legitimately needs are allowed when the manifest grants it.
const DENIED_SYSCALLS: &[(&str, Option<&str>)] = &[
    ("init_module", None),
    ("finit_module", None),
    ("delete_module", None),
    ("kexec_load", None),
    ("kexec_file_load", None),
    ("reboot", None),
    ("swapon", None),
    ("swapoff", None),
    ("acct", None),
    ("add_key", None),
    ("request_key", None),
    ("keyctl", None),
    ("bpf", None),
    ("perf_event_open", None),
    ("userfaultfd", None),
    ("lookup_dcookie", None),
    ("iopl", None),
    ("ioperm", None),
    ("kcmp", None),
    ("open_by_handle_at", None),
    ("uselib", None),
    ("vhangup", None),
    ("quotactl", None),
    ("syslog", Some("CAP_SYSLOG")),
    ("mount", Some("CAP_SYS_ADMIN")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("adjtimex", Some("CAP_SYS_TIME")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("ptrace", Some("CAP_SYS_PTRACE")),
];

pub fn capabilities(svc: &Service) -> Vec<String> {
    if svc.privileged {
        return privileged_capabilities();
    }
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    for c in &svc.capabilities {
        if !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    caps
}

/// Every capability PID 1 itself may hold (its bounding set): a container cannot be given
/// one that PID 1 lacks, so "all" means all of these.
fn privileged_capabilities() -> Vec<String> {
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_default();
    CAPABILITIES
        .iter()
        .filter(|name| {
            name.parse::<caps::Capability>()
                .is_ok_and(|c| bounding.contains(&c))
        })
        .map(|s| s.to_string())
        .collect()
}

fn seccomp(caps: &[String]) -> Value {
    let denied: Vec<&str> = DENIED_SYSCALLS
        .iter()
        .filter(|(_, cap)| cap.is_none_or(|c| !caps.iter().any(|have| have == c)))
        .map(|(name, _)| *name)
        .collect();
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM }]
    })
}

/// cgroup v1 cpu.shares for a v2 cpu.weight (libcgroups converts back on v2 hosts).
fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142) / 9_999
}

fn device(path: &str) -> Result<(Value, Value), SpecError> {
    let meta = std::fs::metadata(path).map_err(|e| SpecError::Device {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(SpecError::Device {
            path: path.into(),
            reason: "not a device node".into(),
        });
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    Ok((
        json!({ "path": path, "type": kind, "major": major, "minor": minor,
                "fileMode": meta.mode() & 0o7777, "uid": 0, "gid": 0 }),
        json!({ "allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm" }),
    ))
}

/// Builds the spec for `svc`.
pub fn generate(svc: &Service, ctx: &Context) -> Result<Spec, SpecError> {
    let caps = capabilities(svc);
    let mut env: Vec<String> = Vec::new();
    if !svc.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    env.extend(svc.env.iter().cloned());
    let sys_mode = if svc.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_mode]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}),
    ];
    if let (Readiness::Notify { .. }, Some(sock)) = (&svc.readiness, ctx.notify_socket) {
        mounts.push(json!({"destination": NOTIFY_SOCKET_IN_CONTAINER, "type": "bind", "source": sock, "options": ["bind", "rw"]}));
        env.push(format!("NOTIFY_SOCKET={NOTIFY_SOCKET_IN_CONTAINER}"));
    }
    for m in &svc.mounts {
        let mut options = m.options.clone();
        if m.kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
            options.insert(0, "rbind".into());
        }
        mounts.push(json!({"destination": m.destination, "type": m.kind,
            "source": if m.source.is_empty() { m.kind.clone() } else { m.source.clone() },
            "options": options}));
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    let ns = &svc.namespaces;
    for (mode, kind) in [
        (ns.cgroup, "cgroup"),
        (ns.pid, "pid"),
        (ns.ipc, "ipc"),
        (ns.uts, "uts"),
        (ns.network, "network"),
    ] {
        if mode == NamespaceMode::Private {
            namespaces.push(json!({ "type": kind }));
        }
    }

    let mut devices = Vec::new();
    let mut device_rules = vec![json!({"allow": svc.privileged, "access": "rwm"})];
    for (kind, major, minor) in [
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 2),
        ("c", 136, -1),
    ] {
        let mut rule = json!({"allow": true, "type": kind, "major": major, "access": "rwm"});
        if minor >= 0 {
            rule["minor"] = json!(minor);
        }
        device_rules.push(rule);
    }
    for path in &svc.devices {
        let (dev, rule) = device(path)?;
        devices.push(dev);
        device_rules.push(rule);
    }

    let mut resources = json!({ "devices": device_rules });
    if let Some(mem) = svc.memory_max_bytes() {
        // swap limit = memory limit: no swap beyond the memory limit
        resources["memory"] = json!({ "limit": mem, "swap": mem });
    }
    if let Some(p) = svc.resources.pids_max {
        resources["pids"] = json!({ "limit": p });
    }
    if let Some(w) = svc.resources.cpu_weight {
        resources["cpu"] = json!({ "shares": weight_to_shares(w) });
    }

    let mut process = json!({
        "terminal": false,
        "user": { "uid": svc.user.uid, "gid": svc.user.gid },
        "args": svc.args,
        "env": env,
        "cwd": svc.cwd,
        "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
        "noNewPrivileges": !svc.privileged,
    });
    if !svc.user.additional_gids.is_empty() {
        process["user"]["additionalGids"] = json!(svc.user.additional_gids);
    }
    if svc.user.uid != 0 && !svc.capabilities.is_empty() {
        // A non-root service keeps the capabilities it asked for across exec.
        process["capabilities"]["inheritable"] = json!(svc.capabilities);
        process["capabilities"]["ambient"] = json!(svc.capabilities);
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": ctx.cgroups_path,
        "resources": resources,
        "devices": devices,
    });
    if !svc.privileged {
        linux["maskedPaths"] = json!(oci_spec::runtime::get_default_maskedpaths());
        linux["readonlyPaths"] = json!(oci_spec::runtime::get_default_readonly_paths());
        linux["seccomp"] = seccomp(&caps);
    }
    if !svc.sysctl.is_empty() {
        linux["sysctl"] = json!(svc.sysctl);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": { "path": svc.root, "readonly": svc.readonly_root },
        "mounts": mounts,
        "linux": linux,
        "annotations": svc.annotations,
    });
    if ns.uts == NamespaceMode::Private {
        spec["hostname"] = json!(svc.hostname.clone().unwrap_or_else(|| svc.name.clone()));
    }
    Ok(serde_json::from_value(spec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn secure_defaults() {
        let spec = generate(&svc(""), &ctx()).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["hostname"], "web");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["mount", "cgroup", "pid", "ipc", "uts", "network"]);
        let caps = v["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(!caps
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN" || c == "CAP_NET_ADMIN"));
        let denied = &v["linux"]["seccomp"]["syscalls"][0]["names"];
        assert!(denied.as_array().unwrap().iter().any(|n| n == "mount"));
        assert!(denied
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "clock_settime"));
        assert_eq!(v["linux"]["cgroupsPath"], "/sysctr/web");
    }

    #[test]
    fn manifest_settings_reach_the_spec() {
        let s = svc(
            r#","capabilities":["CAP_SYS_TIME","CAP_NET_ADMIN"],"namespaces":{"network":"host"},
            "resources":{"memory_max":"64M","pids_max":50,"cpu_weight":100},
            "mounts":[{"source":"/var/log","destination":"/var/log","options":["rw"]}],
            "readiness":{"kind":"notify"}"#,
        );
        let spec = generate(
            &s,
            &Context {
                cgroups_path: "/sysctr/web".into(),
                notify_socket: Some("/run/sysctr/notify/web.sock"),
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
        let caps = v["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap();
        assert!(caps.iter().any(|c| c == "CAP_SYS_TIME"));
        let denied = v["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap();
        assert!(
            !denied.iter().any(|n| n == "clock_settime"),
            "CAP_SYS_TIME allows setting the clock"
        );
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == "/var/log" && m["options"][0] == "rbind"));
        assert!(mounts
            .iter()
            .any(|m| m["destination"] == NOTIFY_SOCKET_IN_CONTAINER));
        assert!(v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NOTIFY_SOCKET=/run/sysctr/notify"));
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
        let v = serde_json::to_value(
            generate(&svc(r#","namespaces":{"cgroup":"host"}"#), &ctx()).unwrap(),
        )
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
}
