//! The OCI runtime spec for a service, generated from its manifest entry with secure
//! defaults, so a container gets only what its entry asks for (docs/architecture.md,
//! invariant 6): read-only root, no_new_privileges, a minimal
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
mod tests;
