//! Sections 5 and 6: the QEMU guest (boot timeline, guest-side figures, scale) and the
//! image size.

use super::*;

/// The production image (`cargo xtask image`) and its staged root directory.
pub(super) fn production_image() -> Result<(image::Image, PathBuf)> {
    ensure_debian_packages(qemu::QEMU_PACKAGES)?;
    let img = image::build(&image::Options::default())?;
    let stage = img
        .root_squashfs
        .parent()
        .context("image dir")?
        .join("root");
    Ok((img, stage))
}

pub(super) fn guest(o: &Options, scratch: &Scratch) -> Result<Section> {
    let mut fig = Figures::default();
    let (img, stage) = production_image()?;
    let mut t = String::new();
    t.push_str(&image_sizes(&img, &stage, &mut fig)?);
    // The boot is of the development image: the same services, but its console runs in the
    // machine's pid namespace, so PID 1's memory can be read from inside (`/proc/1/status`).
    let dev = image::build(&image::Options {
        dev: true,
        ..Default::default()
    })?;
    for path in [vm::Path_::Uefi, vm::Path_::Direct] {
        match boot_timeline(o, scratch, &dev, path) {
            Ok(s) => t.push_str(&s),
            Err(e) => writeln!(
                t,
                "## Guest (QEMU): boot timeline, {}\n\nNot measured: {e:#}\n",
                path.name()
            )?,
        }
    }
    let bench_img = bench_image()?;
    // The same image booted by a plain-process init script, against our init (issue 7), on
    // both firmware paths.
    for path in [vm::Path_::Uefi, vm::Path_::Direct] {
        match baseline::section(o, scratch, &bench_img, path) {
            Ok(s) => t.push_str(&s),
            Err(e) => writeln!(
                t,
                "## Guest (QEMU): plain-process boot baseline, {}\n\nNot measured: {e:#}\n",
                path.name()
            )?,
        }
    }
    match side_by_side(o, scratch, &bench_img, &mut fig) {
        Ok(s) => t.push_str(&s),
        Err(e) => writeln!(
            t,
            "## Guest (QEMU): sysctr vs crun vs runc\n\nNot measured: {e:#}\n"
        )?,
    }
    match guest_scale(o, scratch, &bench_img, &mut fig) {
        Ok(s) => t.push_str(&s),
        Err(e) => writeln!(
            t,
            "## Guest (QEMU): PID 1 memory and `sysctr ps` by service count\n\nNot measured: {e:#}\n"
        )?,
    }
    Ok(Section::new(t, fig))
}

/// The update figures of issue 12 (update.rs), on the benchmark image.
pub(super) fn updates(o: &Options, scratch: &Scratch) -> Result<Section> {
    let mut fig = Figures::default();
    ensure_debian_packages(qemu::QEMU_PACKAGES)?;
    let bench_img = bench_image()?;
    let t = super::update::section(o, scratch, &bench_img, &bench_image_options()?, &mut fig)?;
    Ok(Section::new(t, fig))
}

/// The production image plus the benchmark layer `bench/container/`: a privileged `bench`
/// service holding crun, runc and `bench-guest`, and the `bench-target` service they time.
/// Its alternative manifests `bench-<N>` add sleeping services up to N services in all,
/// for the memory and `ps` figures at scale (booted with `sysctr.manifest=`).
pub(super) fn bench_image() -> Result<image::Image> {
    image::build(&bench_image_options()?)
}

/// How [`bench_image`] is built (the update figures build newer versions of it).
pub(super) fn bench_image_options() -> Result<image::Options> {
    let root = workspace_root();
    let dir = root.join("build/bench");
    fs::create_dir_all(&dir)?;
    let mut alt_manifests = Vec::new();
    for &n in GUEST_SCALE {
        let sleepers: Vec<Value> = (BENCH_IMAGE_SERVICES..n)
            .map(|i| {
                json!({
                    "name": format!("sleeper-{i:03}"),
                    "root": "/containers/bench/rootfs",
                    "args": ["/bin/sleep", "1000000000"],
                    "stop": {"signal": "SIGKILL", "timeout_secs": 2}
                })
            })
            .collect();
        let file = dir.join(format!("sleepers-{n}.json"));
        fs::write(
            &file,
            serde_json::to_vec_pretty(&json!({ "services": sleepers }))?,
        )?;
        alt_manifests.push((format!("bench-{n}"), file));
    }
    Ok(image::Options {
        extra_containers: vec![root.join("bench/container")],
        extra_services: vec![root.join("bench/container/target.json")],
        alt_manifests,
        out: Some(root.join("build/image-bench")),
        ..Default::default()
    })
}

/// Services (not onboot tasks) in the benchmark image's own manifest: the five production
/// services, `bench` and `bench-target`.
pub(super) const BENCH_IMAGE_SERVICES: usize = 7;
/// Service counts of the guest memory and `ps` boots.
pub(super) const GUEST_SCALE: &[usize] = &[10, 50, 100];

/// PID 1's memory and the `ps` request at 7, 10, 50 and 100 services in the guest: one boot
/// of the benchmark image for each, the larger ones with a manifest of sleeping services.
pub(super) fn guest_scale(
    o: &Options,
    scratch: &Scratch,
    img: &image::Image,
    fig: &mut Figures,
) -> Result<String> {
    let mut rows = Vec::new();
    for n in std::iter::once(BENCH_IMAGE_SERVICES).chain(GUEST_SCALE.iter().copied()) {
        let append = if n == BENCH_IMAGE_SERVICES {
            String::new()
        } else {
            format!("sysctr.manifest=/etc/sysctr/manifest-bench-{n}.json")
        };
        eprintln!("xtask: bench: guest boot with {n} services");
        let g = boot_sysctr(
            o,
            scratch,
            img,
            &format!("scale-{n}"),
            vm::Path_::Direct,
            &append,
        )?;
        let out = g.ssh(
            &format!(
                "sysctr exec bench -- /usr/bin/bench-guest --ps-only --runs {}",
                o.runs.min(20)
            ),
            None,
        )?;
        let g = GuestOutput::parse(&out);
        let ps = g.stats("ps_request");
        let services: usize = match g.info.iter().find(|(k, _)| *k == "services") {
            Some((_, v)) => v.parse()?,
            None => 0,
        };
        if ps.n == 0 {
            bail!(
                "bench-guest --ps-only at {n} services printed:\n{}",
                tail(&out, 20)
            );
        }
        let mem: std::collections::BTreeMap<String, f64> =
            g.mem.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        for (k, name) in [
            ("VmRSS", "RSS"),
            ("RssFile", "RssFile"),
            ("RssAnon", "RssAnon"),
            ("Pss", "PSS"),
        ] {
            if let Some(v) = mem.get(k) {
                fig.value(
                    &format!("guest PID 1 {name}, {services} entries"),
                    "KiB",
                    *v,
                );
            }
        }
        fig.timing(&format!("guest `ps` request, {services} entries"), ps);
        fig.timing(
            &format!("guest `sysctr ps` CLI, {services} entries"),
            g.stats("ps_cli"),
        );
        rows.push((services, mem, ps, g.stats("ps_cli")));
    }
    let mut t = String::from(
        "## Guest (QEMU): PID 1 memory and `sysctr ps` by service count\n\n\
         One boot of the benchmark image per row; beyond its own 7 services (and the onboot \
         task), sleeping busybox services from an alternative manifest \
         (`sysctr.manifest=/etc/sysctr/manifest-bench-N.json`). Read after boot from the \
         privileged `bench` container: `/proc/1/status` and `/proc/1/smaps_rollup`; the `ps` \
         request over the control socket, and the whole CLI.\n\n\
         | entries in ps | RSS KiB | RssFile KiB | RssAnon KiB | PSS KiB | `ps` request median ms | `sysctr ps` CLI median ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let get =
        |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    for (n, m, ps, cli) in &rows {
        writeln!(
            t,
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            get(m, "VmRSS"),
            get(m, "RssFile"),
            get(m, "RssAnon"),
            get(m, "Pss"),
            ms(ps.median),
            ms(cli.median)
        )?;
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let extra = last.0.saturating_sub(first.0).max(1) as f64;
        writeln!(
            t,
            "\n| ratio (guest) | value | target |\n|---|---:|---|\n\
             | RSS per extra service ({} → {}) | {:.1} KiB | < 50 KiB |\n\
             | RSS with the default services (the 7 of this image) | {:.2} MiB | < 5 MiB |\n\
             | `ps` request at {} entries | {} ms | host: < 10 ms at 100 |\n",
            first.0,
            last.0,
            (get(&last.1, "VmRSS") - get(&first.1, "VmRSS")) / extra,
            get(&first.1, "VmRSS") / 1024.0,
            last.0,
            ms(last.2.median)
        )?;
    }
    Ok(t)
}

/// The uncompressed size of an xz file (`xz --robot --list`: the `totals` line's 5th field).
fn xz_uncompressed(file: &Path) -> Result<u64> {
    let out = std::process::Command::new("xz")
        .args(["--robot", "--list"])
        .arg(file)
        .output()
        .with_context(|| format!("xz --list {}", file.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("totals\t"))
        .and_then(|l| l.split('\t').nth(3)?.parse().ok())
        .with_context(|| format!("xz --list {}: no totals", file.display()))
}

pub(super) fn image_sizes(img: &image::Image, stage: &Path, fig: &mut Figures) -> Result<String> {
    let kernel = fs::metadata(&img.kernel)?.len();
    let initrd = fs::metadata(&img.initrd)?.len();
    let squash = fs::metadata(&img.root_squashfs)?.len();
    let mut t = String::new();
    writeln!(t, "## Image size by part\n")?;
    writeln!(
        t,
        "The production image (`cargo xtask image`): parts as files (uncompressed, apparent \
         size), and what ships: the kernel, PID 1's xz initramfs (both in the UKI) and the xz \
         squashfs root.\n"
    )?;
    writeln!(t, "| part | KiB |\n|---|---:|")?;
    writeln!(t, "| kernel (bzImage) | {} |", kib(kernel))?;
    fig.value("kernel (bzImage)", "bytes", kernel as f64);
    // init's size as the archive holds it (the binary plus a few hundred bytes of cpio).
    let init = xz_uncompressed(&img.initrd)?;
    writeln!(
        t,
        "| init (uncompressed, in the initramfs) | {} |",
        kib(init)
    )?;
    fig.value("init", "bytes", init as f64);
    writeln!(t, "| **initramfs** (init, xz) | **{}** |", kib(initrd))?;
    fig.value("initramfs", "bytes", initrd as f64);
    let cli = fs::metadata(stage.join("usr/bin/sysctr"))?.len();
    writeln!(t, "| sysctr CLI | {} |", kib(cli))?;
    fig.value("sysctr CLI", "bytes", cli as f64);
    for c in image::default_containers()? {
        let dir = stage.join("containers").join(&c).join("rootfs");
        let size = rootfs::assemble::tree_size(&dir)?;
        writeln!(t, "| container {c} (files) | {} |", kib(size))?;
        fig.value(&format!("container {c} (files)"), "bytes", size as f64);
    }
    writeln!(
        t,
        "| **root.squashfs** (all but the kernel, xz, deduplicated) | **{}** |",
        kib(squash)
    )?;
    // The dm-verity hash tree written after the squashfs in the root partition.
    let verity = fs::metadata(img.root_squashfs.with_file_name("root.verity"))
        .map(|m| m.len())
        .unwrap_or(0);
    if verity > 0 {
        writeln!(
            t,
            "| root.verity (dm-verity hash tree of the root) | {} |",
            kib(verity)
        )?;
    }
    fig.value("root.squashfs", "bytes", squash as f64);
    fig.value("root.verity", "bytes", verity as f64);
    let squash = squash + verity;
    let total = kernel + initrd + squash;
    fig.value("kernel + root", "bytes", total as f64);
    writeln!(
        t,
        "| **kernel + initramfs + root (squashfs and its verity tree)** | **{}** |",
        kib(total)
    )?;
    writeln!(
        t,
        "\n| ratio | value | target |\n|---|---:|---|\n| image (kernel + initramfs + root) | {:.2} MB | < 10 MB |\n",
        total as f64 / 1e6
    )?;
    Ok(t)
}

/// QEMU, killed on drop.
/// A guest booted by our init (the image's own manifest, or another one by `append`), with
/// its own ssh key, ready for ssh.
pub(super) fn boot_sysctr(
    o: &Options,
    scratch: &Scratch,
    img: &image::Image,
    tag: &str,
    path: vm::Path_,
    append: &str,
) -> Result<vm::Vm> {
    let keys = vm::Keys::new(&scratch.dir.join(format!("vm-{tag}")))?;
    let g = vm::Vm::boot(
        &keys,
        img,
        &img.disk,
        tag,
        path,
        append,
        o.kvm,
        vm::SYSCTR_MARKERS,
    )?;
    g.ssh_retry("true").context("ssh never came up")?;
    Ok(g)
}

/// Boots the development image and reads the boot timeline and PID 1's memory.
pub(super) fn boot_timeline(
    o: &Options,
    scratch: &Scratch,
    img: &image::Image,
    path: vm::Path_,
) -> Result<String> {
    let g = boot_sysctr(o, scratch, img, &format!("dev-{path:?}"), path, "")?;
    let host_wall = g.host_wall;
    let kvm = o.kvm;
    let ssh = |command: &str, input: Option<&str>| g.ssh(command, input);
    let version = ssh("sysctr version", None)?;
    let init_s: f64 = version
        .lines()
        .find_map(|l| l.split("started ").nth(1))
        .and_then(|v| v.split('s').next())
        .and_then(|v| v.parse().ok())
        .context("no init start time in `sysctr version`")?;
    let ps: Vec<ServiceStatus> = serde_json::from_str(&ssh("sysctr ps --json", None)?)?;
    // systemd-boot's own timestamps (µs since firmware start, from the CPU's TSC).
    let boot_json: serde_json::Value =
        serde_json::from_str(&ssh("sysctr version --json", None)?).unwrap_or_default();
    let loader_us = |k: &str| boot_json["boot"][k].as_u64();
    let log = g.console();
    let kernel_line = |needle: &str| -> Option<f64> {
        log.lines().find(|l| l.contains(needle)).and_then(|l| {
            l.trim_start()
                .strip_prefix('[')?
                .split(']')
                .next()?
                .trim()
                .parse()
                .ok()
        })
    };
    // PID 1's memory, through the dev console (host pid namespace); /proc/<pid>/status is
    // readable without ptrace rights, smaps_rollup (PSS) is not.
    let init_mem = ssh("sysctr exec console cat /proc/1/status", None)
        .map(|status| {
            ["VmRSS:", "RssAnon:", "RssFile:"]
                .iter()
                .filter_map(|k| {
                    status
                        .lines()
                        .find(|l| l.starts_with(k))
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|e| format!("not readable: {e:#}"));
    // The console log stays for a look at the whole boot.
    let keep = workspace_root().join("build").join("bench");
    let _ = fs::create_dir_all(&keep);
    let _ = fs::write(keep.join("serial.log"), &log);
    let mut t = String::new();
    writeln!(t, "## Guest (QEMU): boot timeline, {}\n", path.name())?;
    writeln!(
        t,
        "QEMU {} with 2 vCPUs and 512 MiB. Times are CLOCK_BOOTTIME in the guest (0 = kernel start), from init's own \
         timestamps (`sysctr version`, `sysctr ps --json`) and the kernel's printk times \
         (the `kernel:` and `init: [step]` rows; printk runs some 30 ms ahead of \
         CLOCK_BOOTTIME in these guests, see the baseline section). \
         Host wall clock from QEMU start to the \"all services ready\" line on the serial \
         console: {} ms. The development image is booted (production services; the \
         console is a root shell in the machine's pid namespace, which lets the bench read \
         PID 1's memory).\n",
        if kvm { "KVM" } else { "TCG" },
        host_wall.as_millis()
    )?;
    writeln!(t, "| step | ms since boot |\n|---|---:|")?;
    // Before the kernel's clock starts, as the host saw it: QEMU's wall clock at the marker
    // minus the guest's own time of it (QEMU start, firmware, loader, kernel load).
    let all_ready_ms = ps.iter().filter_map(|s| s.ready_boot_ms).max().unwrap_or(0);
    writeln!(
        t,
        "| before kernel start: QEMU start, {}, kernel load (host wall clock at the marker − the guest's time of it) | (−{:.0}) |",
        match path {
            vm::Path_::Uefi => "OVMF, systemd-boot, the UKI",
            vm::Path_::Direct => "QEMU's own -kernel loader",
        },
        (host_wall.as_millis() as f64 - all_ready_ms as f64).max(0.0)
    )?;
    if let (Some(init), Some(exec)) = (loader_us("loader_init_us"), loader_us("loader_exec_us")) {
        // Before the kernel's clock starts: firmware and loader, by systemd-boot's TSC stamps.
        writeln!(
            t,
            "| firmware (OVMF) until systemd-boot runs | ({:.0} ms, TSC) |",
            init as f64 / 1000.0
        )?;
        writeln!(
            t,
            "| systemd-boot until it starts the UKI | ({:.0} ms, TSC) |",
            exec.saturating_sub(init) as f64 / 1000.0
        )?;
    } else if matches!(path, vm::Path_::Uefi) {
        // systemd-boot leaves LoaderTimeInitUSec/LoaderTimeExecUSec unset when CPUID says it
        // runs under a hypervisor (it does not trust a virtual TSC); on a PC they are there.
        writeln!(
            t,
            "| firmware / loader split (systemd-boot's TSC stamps) | not recorded under a hypervisor |"
        )?;
    }
    for (what, needle) in [
        ("kernel: virtio block ready", "virtio_blk"),
        // Absent when PID 1 starts from the initramfs and mounts the root itself ([root]).
        ("kernel: root mounted (VFS)", "VFS: Mounted root"),
        ("kernel: initramfs unpacked", "Freeing initrd memory"),
        (
            "kernel: runs init (the initramfs' /init)",
            "Run /init as init process",
        ),
        ("kernel: runs /sbin/init", "Run /sbin/init"),
    ] {
        if let Some(s) = kernel_line(needle) {
            writeln!(t, "| {what} | {:.0} |", s * 1000.0)?;
        }
    }
    writeln!(
        t,
        "| init: main() entered (`init_boot_ms`) | {:.0} |",
        init_s * 1000.0
    )?;
    // init's boot steps, as its log lines reached the console through /dev/kmsg (with the
    // kernel's timestamp), up to the first container start.
    for line in log.lines() {
        let Some((ts, msg)) = line
            .trim_start()
            .strip_prefix('[')
            .and_then(|l| l.split_once(']'))
        else {
            continue;
        };
        let Some(msg) = msg.trim().strip_prefix("sysctr: INFO ") else {
            continue;
        };
        let Ok(ts) = ts.trim().parse::<f64>() else {
            continue;
        };
        if msg.ends_with("] starting") {
            break;
        }
        writeln!(
            t,
            "| init: {} | {:.0} |",
            msg.replace('|', "/"),
            ts * 1000.0
        )?;
    }
    let mut last_ready = 0;
    for s in &ps {
        let started = s
            .started_boot_ms
            .map(|v| v.to_string())
            .unwrap_or("-".into());
        let ready = s.ready_boot_ms.map(|v| v.to_string()).unwrap_or("-".into());
        last_ready = last_ready.max(s.ready_boot_ms.unwrap_or(0));
        let start = s.start_us.map(|v| ms(v as f64)).unwrap_or("-".into());
        writeln!(
            t,
            "| {} {} started / ready (create+start {} ms) | {} / {} |",
            match s.kind {
                manifest::Kind::Onboot => "onboot",
                manifest::Kind::Service => "service",
            },
            s.name,
            start,
            started,
            ready
        )?;
    }
    writeln!(t, "| **all services ready** | **{last_ready}** |")?;
    let services = ps
        .iter()
        .filter(|s| s.kind == manifest::Kind::Service)
        .count();
    writeln!(
        t,
        "\nPID 1 memory in the guest with the {services} default services, after boot \
         (`/proc/1/status`): {init_mem}. Target: RSS < 5 MiB.\n"
    )?;
    Ok(t)
}

/// Boots the benchmark image and runs `bench-guest` in its privileged `bench` container:
/// sysctr, crun and runc on the same bundle, on the guest's kernel and pure cgroup v2.
pub(super) fn side_by_side(
    o: &Options,
    scratch: &Scratch,
    img: &image::Image,
    fig: &mut Figures,
) -> Result<String> {
    let g = boot_sysctr(o, scratch, img, "bench", vm::Path_::Direct, "")?;
    let out = g.ssh(
        &format!(
            "sysctr exec bench -- /usr/bin/bench-guest --runs {}",
            o.runs.min(50)
        ),
        None,
    )?;
    let keep = workspace_root().join("build").join("bench");
    let _ = fs::create_dir_all(&keep);
    let _ = fs::write(keep.join("bench-guest.out"), &out);
    let mut t = format!(
        "## Guest (QEMU): sysctr vs crun vs runc\n\n\
         The benchmark image (the production services plus `bench/container/`) booted under {} \
         with 2 vCPUs and 512 MiB: the guest's own kernel and a pure cgroup v2 hierarchy, the \
         real target. `bench-guest` runs in the privileged `bench` container (host pid and \
         cgroup namespaces) and interleaves the contenders round by round, with a 30 ms \
         settle pause before each timed operation. sysctr's figure is PID 1's own \
         create+start time of the `bench-target` service (`start_us`, stop+start); crun's and \
         runc's are the wall time of `run -d` of that service's generated spec (the same \
         bundle and root), fork+exec of the runtime included, in a cgroup beside sysctr's.\n\n",
        if o.kvm { "KVM" } else { "TCG" }
    );
    t.push_str(&guest_figures(&out, fig)?);
    Ok(t)
}

/// Tabulates the output of `bench-guest` (see bench/src/bin/guest.rs for the line format).
/// The lines `bench-guest` prints (bench/src/bin/guest.rs), by kind.
#[derive(Default)]
pub(super) struct GuestOutput<'a> {
    pub(super) series: std::collections::BTreeMap<&'a str, Vec<f64>>,
    pub(super) info: Vec<(&'a str, &'a str)>,
    pub(super) errors: Vec<String>,
    /// PID 1's memory fields in KiB; a later reading of a field replaces an earlier one.
    pub(super) mem: std::collections::BTreeMap<&'a str, f64>,
}

impl<'a> GuestOutput<'a> {
    pub(super) fn parse(out: &'a str) -> GuestOutput<'a> {
        let mut g = GuestOutput::default();
        for line in out.lines() {
            let mut f = line.splitn(3, ' ');
            match (f.next(), f.next(), f.next()) {
                (Some("sample"), Some(name), Some(v)) => {
                    if let Ok(v) = v.trim().parse::<f64>() {
                        g.series.entry(name).or_default().push(v);
                    }
                }
                (Some("info"), Some(k), Some(v)) => g.info.push((k, v.trim())),
                (Some("error"), Some(k), Some(v)) => g.errors.push(format!("{k}: {v}")),
                (Some("mem"), Some(k), Some(v)) => {
                    if let Ok(v) = v.trim().parse::<f64>() {
                        g.mem.insert(k, v);
                    }
                }
                _ => {}
            }
        }
        g
    }

    pub(super) fn stats(&self, name: &str) -> Stats {
        stats(self.series.get(name).map(Vec::as_slice).unwrap_or(&[]))
    }
}

pub(super) fn guest_figures(out: &str, fig: &mut Figures) -> Result<String> {
    let g = GuestOutput::parse(out);
    if g.series.is_empty() {
        bail!("bench-guest printed no samples:\n{}", tail(out, 30));
    }
    let get = |name: &str| g.stats(name);
    let GuestOutput {
        series,
        info,
        errors,
        mem,
    } = &g;
    let mut t = String::new();
    for (k, v) in info {
        if *k == "crun" || *k == "runc" {
            writeln!(t, "- {k}: {v}")?;
        }
    }
    t.push('\n');
    t.push_str(TABLE_HEAD);
    for (name, label) in [
        ("sysctr_start", "sysctr create+start in PID 1 (`start_us`)"),
        (
            "sysctr_request",
            "sysctr `start` request round trip (client side)",
        ),
        ("crun_run", "`crun run -d` (wall)"),
        ("runc_run", "`runc run -d` (wall)"),
        ("crun_delete", "`crun delete -f` (wall)"),
        ("runc_delete", "`runc delete -f` (wall)"),
        ("fork_exec_true", "fork+exec+wait of busybox `true`"),
        (
            "fork_exec_sleep",
            "fork+exec+wait of busybox `sleep 0` (the service's program)",
        ),
        (
            "restart",
            "restart: SIGKILL → new container process running",
        ),
        (
            "restart_start",
            "… of which the new run's create+start (`start_us`)",
        ),
        (
            "restart_exit",
            "… of which the kill until PID 1 reaped the exit (kernel)",
        ),
        (
            "restart_handling",
            "… of which PID 1's exit handling until the new start began",
        ),
        ("ps_request", "`ps` request round trip (socket)"),
        ("ps_cli", "`sysctr ps` (CLI: fork+exec+request+print)"),
        ("cli_version", "`sysctr --version` (the CLI's exec alone)"),
    ] {
        if series.contains_key(name) {
            fig.timing(&format!("guest: {label}"), get(name));
            t.push_str(&row(label, get(name)));
        }
    }
    t.push('\n');
    for e in errors {
        writeln!(t, "- **error** {e}")?;
    }
    let sysctr = get("sysctr_start");
    let restart_gap = {
        let (r, s) = (&series.get("restart"), &series.get("restart_start"));
        match (r, s) {
            (Some(r), Some(s)) => stats(
                &r.iter()
                    .zip(s.iter())
                    .map(|(a, b)| a - b)
                    .collect::<Vec<_>>(),
            ),
            _ => Stats::default(),
        }
    };
    writeln!(
        t,
        "| ratio (guest, same run) | value | target |\n|---|---:|---|"
    )?;
    for (peer, target) in [("crun_run", "≤ 0.5×"), ("runc_run", "")] {
        if series.contains_key(peer) {
            writeln!(
                t,
                "| sysctr create+start / `{}` (medians) | {} | {target} |",
                peer.replace('_', " "),
                ratio(sysctr.median, get(peer).median)
            )?;
        }
    }
    if series.contains_key("fork_exec_sleep") {
        writeln!(
            t,
            "| sysctr create+start / fork+exec+wait `sleep 0` (medians) | {} | ≤ 15× |",
            ratio(sysctr.median, get("fork_exec_sleep").median)
        )?;
    }
    if restart_gap.n > 0 {
        writeln!(
            t,
            "| restart − its create+start (median of the differences) | {} ms | ≤ 5 ms |",
            ms(restart_gap.median)
        )?;
    }
    if let Some((_, n)) = info.iter().find(|(k, _)| *k == "services") {
        writeln!(
            t,
            "| `ps` request at {} services (median) | {} ms | host figure < 10 ms at 100 |",
            n.trim(),
            ms(get("ps_request").median)
        )?;
    }
    t.push('\n');
    for (k, v) in mem {
        fig.value(&format!("guest PID 1 {k} after the rounds"), "KiB", *v);
    }
    if !mem.is_empty() {
        // Two readings (before and after the rounds); the last of each field is reported.
        writeln!(
            t,
            "PID 1 memory after the rounds, with the production services and the two \
             benchmark services (`/proc/1/status`, `/proc/1/smaps_rollup`, KiB): {}. \
             Target: RSS < 5 MiB.\n",
            mem.iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    Ok(t)
}
