//! The update figures of issue 12, in one UEFI boot of the benchmark image (0.1.0, slot A):
//! the bundle's size; `sysctr update -` of a 0.2.0 bundle over ssh beside a raw write of the
//! very same bytes into the same inactive slot, from the same host over the same ssh
//! (`bench-guest --raw-write`, in the privileged `bench` container); and a bad 0.3.0 (a
//! crash-looping service in its health set) installed with `--reboot`: the time from the
//! install's end (the reboot) to the health gate's verdict and to the old slot's services
//! all Ready again.

use super::{vm, Figures, Options, Scratch};
use crate::image;
use crate::util::workspace_root;
use anyhow::{bail, Context, Result};
use std::fs;
use std::time::{Duration, Instant};

/// init's lines the timeline is read from.
const BLESSED: &str = "blessed the boot entry";
const BAD_VERDICT: &str = "trial boot failed the health gate";
const ALL_READY: &str = "sysctr: all services ready";

/// `v1` is the benchmark image as built from `base`.
pub fn section(
    o: &Options,
    scratch: &Scratch,
    v1: &image::Image,
    base: &image::Options,
    fig: &mut Figures,
) -> Result<String> {
    let root = workspace_root();
    let bundles = root.join("build/bundles-bench");
    fs::create_dir_all(&bundles)?;
    let mut made = Vec::new();
    for (version, bad) in [("0.2.0", false), ("0.3.0", true)] {
        let mut opts = image::Options {
            version: Some(version.into()),
            out: Some(root.join(format!("build/image-bench-{version}"))),
            ..base.clone()
        };
        if bad {
            opts.extra_services
                .push(root.join("boot-tests/unhealthy-services.json"));
        }
        let img = image::build(&opts)?;
        let out = bundles.join(format!("{version}.bundle"));
        crate::bundle::from_image(version, img.kernel.parent().context("image dir")?, &out)?;
        made.push(out);
    }
    let (good, bad) = (&made[0], &made[1]);
    let size = fs::metadata(good)?.len();

    let keys = vm::Keys::new(&scratch.dir.join("vm-update"))?;
    let g = vm::Vm::boot(
        &keys,
        v1,
        &v1.disk,
        "update",
        vm::Path_::Uefi,
        "",
        o.kvm,
        &[BLESSED],
    )?;
    g.ssh_retry("true").context("ssh never came up")?;

    // The raw write first (slot B is empty at the factory), then the install over it.
    let t = Instant::now();
    let raw_out = g
        .ssh_file(
            "sysctr exec bench -- /usr/bin/bench-guest --raw-write SYSCTR_ROOT_B",
            good,
        )
        .context("raw write of the bundle into slot B")?;
    let raw = t.elapsed();
    let raw_guest = raw_out
        .lines()
        .find_map(|l| l.strip_prefix("sample raw_write "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("bench-guest --raw-write said: {raw_out}"))?;
    let t = Instant::now();
    g.ssh_file("sysctr update -", good)
        .context("sysctr update - of the 0.2.0 bundle")?;
    let install = t.elapsed();

    // The bad update goes into slot B too (0.3.0 is newer than the running 0.1.0); the
    // machine reboots into it, the gate finds it bad and slot A boots again.
    let before = g.console().matches(ALL_READY).count();
    g.ssh_file("sysctr update --reboot -", bad)
        .context("sysctr update --reboot - of the bad 0.3.0 bundle")?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(if o.kvm { 300 } else { 900 });
    let mut verdict = None;
    let healthy = loop {
        let log = g.console();
        if verdict.is_none() && log.contains(BAD_VERDICT) {
            verdict = Some(t.elapsed());
        }
        if verdict.is_some() {
            // The old slot's boot: the first "all services ready" after the verdict.
            let after = &log[log.find(BAD_VERDICT).unwrap_or(0)..];
            if after.contains(ALL_READY) && log.matches(ALL_READY).count() > before {
                break t.elapsed();
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the bad update did not roll back within {:?}:\n{}",
                deadline - t,
                super::tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let verdict = verdict.context("no verdict")?;
    g.ssh_retry("true").context("ssh after the rollback")?;
    let version = g.ssh("sysctr version --json", None)?;
    let v: serde_json::Value = serde_json::from_str(version.trim())
        .with_context(|| format!("sysctr version --json: {version}"))?;
    if v["boot"]["slot"] != "a" {
        bail!("after the rollback the machine is not on slot a: {version}");
    }

    fig.value("update: bundle size", "bytes", size as f64);
    fig.value(
        "update: sysctr update - over ssh",
        "s",
        install.as_secs_f64(),
    );
    fig.value(
        "update: raw write of the same bytes over ssh",
        "s",
        raw.as_secs_f64(),
    );
    fig.value(
        "update: bad update, reboot to verdict",
        "s",
        verdict.as_secs_f64(),
    );
    fig.value(
        "update: bad update, reboot to old slot Ready",
        "s",
        healthy.as_secs_f64(),
    );
    let s = |d: Duration| format!("{:.1}", d.as_secs_f64());
    Ok(format!(
        "## Guest (QEMU): updates\n\n\
         One UEFI boot of the benchmark image (0.1.0, slot A), TCG unless `--kvm`. The bundle \
         is the same image as 0.2.0: both UKIs, the root squashfs and its dm-verity tree. \
         Both writes stream the bundle from the host over ssh into slot B: the install \
         checks the signature, `compatible` and version first, hashes while writing, reads \
         the slot back against sha256 and the dm-verity root, and puts the boot-counted UKI \
         on the ESP; the raw write is `bench-guest --raw-write` copying stdin to the partition \
         and fsyncing it, in the privileged `bench` container.\n\n\
         | figure | value |\n|---|---|\n\
         | bundle size | {size} bytes ({:.1} MiB) |\n\
         | `sysctr update -` over ssh, host wall | {} s |\n\
         | raw write of the same bytes over ssh, host wall | {} s (in the guest: {:.1} s) |\n\
         | install / raw write | {:.2}× |\n\
         | bad update (crash loop in the health set): reboot → the gate's verdict | {} s |\n\
         | bad update: reboot → old slot A with all services Ready | {} s |\n",
        size as f64 / (1 << 20) as f64,
        s(install),
        s(raw),
        raw_guest / 1e6,
        install.as_secs_f64() / raw.as_secs_f64().max(1e-3),
        s(verdict),
        s(healthy),
    ))
}
