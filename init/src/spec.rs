//! The OCI runtime spec for a service, generated from its manifest entry with the secure
//! defaults of DESIGN.md invariant 6: read-only root, no_new_privileges, a minimal
//! capability set plus what the manifest adds, private pid/mount/ipc/uts/cgroup
//! namespaces, only declared mounts and devices, limits in the service's own cgroup, and
//! the allow-list seccomp profile of [`crate::seccomp`].
//!
//! The spec is built with oci-spec's typed builders, so a misspelt field is a compile
//! error, not a key libcontainer silently ignores.

use libcontainer::capabilities::CapabilityExt;
use manifest::units::DEFAULT_CAPABILITIES;
use manifest::{NamespaceMode, Readiness, Service};
use oci_spec::runtime::{
    Capability as SpecCapability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};
use std::collections::HashSet;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where the sd_notify socket appears inside a container.
pub const NOTIFY_SOCKET_IN_CONTAINER: &str = "/run/sysctr/notify";
/// Where PID 1's control socket appears in a container with `control_socket: true`.
pub const CONTROL_SOCKET_IN_CONTAINER: &str = "/run/sysctr/control.sock";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("device {path}: {reason}")]
    Device { path: String, reason: String },
    #[error("{field}: {reason}")]
    Mount { field: String, reason: String },
    #[error("build the OCI spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Inputs beyond the manifest entry: where PID 1 put things for this service.
pub struct Context<'a> {
    pub cgroups_path: String,
    /// Host path of the service's notify socket, when readiness is `notify`.
    pub notify_socket: Option<&'a str>,
    /// PID 1's run directory (`/run/sysctr`): the control socket, bundles, state.
    pub run_dir: &'a Path,
}

/// The capabilities of a service: the default set plus what it asks for, or for a
/// privileged one everything PID 1 holds.
pub fn capabilities(svc: &Service) -> HashSet<caps::Capability> {
    if svc.privileged {
        return privileged_capabilities();
    }
    DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(svc.capabilities.iter().map(|c| c.capability()))
        .collect()
}

/// Every capability PID 1 itself may hold (its bounding set): a container cannot be given
/// one that PID 1 lacks, so "all" means all of these.
fn privileged_capabilities() -> HashSet<caps::Capability> {
    caps::read(None, caps::CapSet::Bounding).unwrap_or_default()
}

fn spec_caps(set: &HashSet<caps::Capability>) -> HashSet<SpecCapability> {
    set.iter().map(|c| SpecCapability::from_cap(*c)).collect()
}

/// cgroup v1 cpu.shares for a v2 cpu.weight (libcgroups converts back on v2 hosts).
fn weight_to_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142) / 9_999
}

fn device(path: &str) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    let meta = std::fs::metadata(path).map_err(|e| SpecError::Device {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(SpecError::Device {
            path: path.into(),
            reason: "not a device node".into(),
        });
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    Ok((
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(kind)
            .major(major)
            .minor(minor)
            .file_mode(meta.mode() & 0o7777)
            .uid(0u32)
            .gid(0u32)
            .build()?,
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(kind)
            .major(major)
            .minor(minor)
            .access("rwm")
            .build()?,
    ))
}

fn mount(
    kind: &str,
    source: &str,
    destination: &str,
    options: &[&str],
) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// A bind source as it resolves on the host now (symlinks followed), checked again against
/// the protected paths: the manifest check sees only the text.
fn check_bind_source(field: &str, source: &str, run_dir: &Path) -> Result<(), SpecError> {
    let resolved = std::fs::canonicalize(source)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| source.to_string());
    let run = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    let own: Vec<String> = ["control.sock", "notify", "bundles", "containers"]
        .iter()
        .map(|e| run.join(e).display().to_string())
        .collect();
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let why = manifest::validate::refused_bind_source(&resolved, &own).or_else(|| {
        (Path::new(&resolved) == run).then(|| format!("{} is PID 1's run directory", run.display()))
    });
    match why {
        Some(reason) if resolved != source => Err(SpecError::Mount {
            field: field.into(),
            reason: format!("{source} resolves to {resolved}: {reason}"),
        }),
        Some(reason) => Err(SpecError::Mount {
            field: field.into(),
            reason,
        }),
        None => Ok(()),
    }
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
        mount("proc", "proc", "/proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "tmpfs",
            "tmpfs",
            "/dev",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "devpts",
            "devpts",
            "/dev/pts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "tmpfs",
            "shm",
            "/dev/shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "mqueue",
            "mqueue",
            "/dev/mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "sysfs",
            "sysfs",
            "/sys",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "cgroup",
            "cgroup",
            "/sys/fs/cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
        mount("tmpfs", "tmpfs", "/tmp", &["nosuid", "nodev", "mode=1777"])?,
        mount("tmpfs", "tmpfs", "/run", &["nosuid", "nodev", "mode=755"])?,
    ];
    if let (Readiness::Notify { .. }, Some(sock)) = (&svc.readiness, ctx.notify_socket) {
        mounts.push(mount(
            "bind",
            sock,
            NOTIFY_SOCKET_IN_CONTAINER,
            &["bind", "rw"],
        )?);
        env.push(format!("NOTIFY_SOCKET={NOTIFY_SOCKET_IN_CONTAINER}"));
    }
    if svc.control_socket {
        let sock = ctx.run_dir.join("control.sock");
        mounts.push(mount(
            "bind",
            &sock.display().to_string(),
            CONTROL_SOCKET_IN_CONTAINER,
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    for (i, m) in svc.mounts.iter().enumerate() {
        let mut options = m.options.clone();
        if m.kind == "bind" {
            if !svc.privileged {
                check_bind_source(&format!("mounts[{i}].source"), &m.source, ctx.run_dir)?;
            }
            if !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.insert(0, "rbind".into());
            }
        }
        let source = if m.source.is_empty() {
            &m.kind
        } else {
            &m.source
        };
        mounts.push(
            MountBuilder::default()
                .destination(&m.destination)
                .typ(&m.kind)
                .source(source)
                .options(options)
                .build()?,
        );
    }

    let ns = &svc.namespaces;
    let mut namespaces: Vec<LinuxNamespace> = vec![LinuxNamespaceBuilder::default()
        .typ(LinuxNamespaceType::Mount)
        .build()?];
    for (mode, kind) in [
        (ns.cgroup, LinuxNamespaceType::Cgroup),
        (ns.pid, LinuxNamespaceType::Pid),
        (ns.ipc, LinuxNamespaceType::Ipc),
        (ns.uts, LinuxNamespaceType::Uts),
        (ns.network, LinuxNamespaceType::Network),
    ] {
        if mode == NamespaceMode::Private {
            namespaces.push(LinuxNamespaceBuilder::default().typ(kind).build()?);
        }
    }

    let mut devices = Vec::new();
    let mut device_rules = vec![LinuxDeviceCgroupBuilder::default()
        .allow(svc.privileged)
        .access("rwm")
        .build()?];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 2),
        (136, -1),
    ] {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if minor >= 0 {
            rule = rule.minor(minor);
        }
        device_rules.push(rule.build()?);
    }
    for path in &svc.devices {
        let (dev, rule) = device(path)?;
        devices.push(dev);
        device_rules.push(rule);
    }

    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);
    if let Some(mem) = svc.memory_max_bytes() {
        // swap limit = memory limit: no swap beyond the memory limit. Validation bounds
        // the value far below i64::MAX.
        let mem = i64::try_from(mem).unwrap_or(i64::MAX);
        resources = resources.memory(LinuxMemoryBuilder::default().limit(mem).swap(mem).build()?);
    }
    if let Some(p) = svc.resources.pids_max {
        let p = i64::try_from(p).unwrap_or(i64::MAX);
        resources = resources.pids(LinuxPidsBuilder::default().limit(p).build()?);
    }
    if let Some(w) = svc.resources.cpu_weight {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .shares(weight_to_shares(w))
                .build()?,
        );
    }

    let all = spec_caps(&caps);
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .effective(all.clone())
        .permitted(all)
        .build()?;
    if svc.user.uid != 0 && !svc.capabilities.is_empty() {
        // A non-root service keeps the capabilities it asked for across exec.
        let asked: HashSet<caps::Capability> =
            svc.capabilities.iter().map(|c| c.capability()).collect();
        capabilities.set_inheritable(Some(spec_caps(&asked)));
        capabilities.set_ambient(Some(spec_caps(&asked)));
    } else {
        capabilities.set_inheritable(None);
        capabilities.set_ambient(None);
    }
    let mut user = UserBuilder::default().uid(svc.user.uid).gid(svc.user.gid);
    if !svc.user.additional_gids.is_empty() {
        user = user.additional_gids(svc.user.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build()?)
        .args(svc.args.clone())
        .env(env)
        .cwd(&svc.cwd)
        .capabilities(capabilities)
        .no_new_privileges(!svc.privileged)
        .build()?;
    // The builder's defaults would cap open files at 1024; a service inherits PID 1's limits.
    process.set_rlimits(None);

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(ctx.cgroups_path.clone())
        .resources(resources.build()?)
        .devices(devices)
        .build()?;
    if svc.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
        linux.set_seccomp(None);
    } else {
        linux.set_masked_paths(Some(oci_spec::runtime::get_default_maskedpaths()));
        linux.set_readonly_paths(Some(oci_spec::runtime::get_default_readonly_paths()));
        linux.set_seccomp(Some(crate::seccomp::profile(&caps)?));
    }
    linux.set_sysctl((!svc.sysctl.is_empty()).then(|| {
        svc.sysctl
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }));

    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path(&svc.root)
                .readonly(svc.readonly_root)
                .build()?,
        )
        .mounts(mounts)
        .linux(linux)
        .annotations(
            svc.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()?;
    spec.set_hostname(
        (ns.uts == NamespaceMode::Private)
            .then(|| svc.hostname.clone().unwrap_or_else(|| svc.name.clone())),
    );
    Ok(spec)
}

#[cfg(test)]
mod tests {
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
        let v = serde_json::to_value(generate(&svc(r#","control_socket":true"#), &ctx()).unwrap())
            .unwrap();
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
