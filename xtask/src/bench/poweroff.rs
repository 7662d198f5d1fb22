//! How long a poweroff takes with the production services (issue 18): the production image
//! booted under UEFI until every service is Ready, then `sysctr poweroff` over ssh, timed on
//! the host until QEMU exits, beside init's own "services stopped in N ms" and the bound the
//! parallel shutdown promises: the longest stop timeout of the manifest (the serial sum of
//! the timeouts is what stopping one service after another could take).

use super::*;

const ALL_READY: &str = "sysctr: all services ready";
/// Boots measured; each is a UEFI boot of some 20–40 s under TCG.
const ROUNDS: usize = 3;

pub(super) fn section(o: &Options, scratch: &Scratch) -> Result<Section> {
    let mut fig = Figures::default();
    let (img, stage) = production_image()?;
    let loaded = manifest::load_file(&stage.join("etc/sysctr/manifest.json"))
        .context("the image's manifest")?;
    let timeouts: Vec<(String, u64)> = loaded
        .manifest
        .services
        .iter()
        .filter(|s| s.kind == manifest::Kind::Service)
        .map(|s| (s.name.clone(), s.stop.timeout_secs))
        .collect();
    let longest = timeouts.iter().map(|(_, t)| *t).max().unwrap_or(0);
    let sum: u64 = timeouts.iter().map(|(_, t)| *t).sum();

    let keys = vm::Keys::new(&scratch.dir.join("vm-poweroff"))?;
    let rounds = o.runs.clamp(1, ROUNDS);
    let (mut wall, mut stopped) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        let mut g = vm::Vm::boot(
            &keys,
            &img,
            &img.disk,
            &format!("poweroff-{i}"),
            vm::Path_::Uefi,
            "",
            o.kvm,
            &[ALL_READY],
        )?;
        g.ssh_retry("true").context("ssh never came up")?;
        std::thread::sleep(Duration::from_secs(2));
        let t = Instant::now();
        // The session may end with the machine (ssh then exits 255): the exit is the proof.
        let _ = g.ssh("sysctr poweroff", None);
        g.wait_exit(Duration::from_secs(120))?;
        wall.push(t.elapsed().as_micros() as f64);
        let log = g.console();
        let ms = harness::init::services_stopped_ms(&log)
            .with_context(|| format!("no 'services stopped in' line:\n{}", tail(&log, 30)))?;
        stopped.push(ms as f64 * 1000.0);
        if !log.contains("reached shutdown: poweroff") {
            bail!("no 'reached shutdown: poweroff':\n{}", tail(&log, 30));
        }
    }
    let wall = stats(&wall);
    let stopped = stats(&stopped);
    let mut t = String::new();
    writeln!(
        t,
        "## Guest (QEMU): poweroff\n\n\
         The production image booted under UEFI (TCG unless `--kvm`) until every service is \
         Ready, 2 s settle, then `sysctr poweroff` over ssh; {rounds} boots. The host times \
         the request until QEMU exits; init reports how long stopping the services took (in \
         parallel, by reverse dependency order, bounded by the longest stop timeout). Then \
         init signals what is left, syncs, unmounts and powers off.\n"
    )?;
    t.push_str(TABLE_HEAD);
    t.push_str(&fig.row("`sysctr poweroff` → QEMU exited, host wall", wall));
    t.push_str(&fig.row(
        "services stopped (init's \"services stopped in N ms\")",
        stopped,
    ));
    let names = timeouts
        .iter()
        .map(|(n, s)| format!("{n} {s} s"))
        .collect::<Vec<_>>()
        .join(", ");
    fig.value("poweroff: longest stop timeout", "s", longest as f64);
    fig.value("poweroff: sum of the stop timeouts", "s", sum as f64);
    writeln!(
        t,
        "\nStop timeouts of the production services: {names}: longest {longest} s, sum {sum} s.\n"
    )?;
    writeln!(
        t,
        "| ratio | value | target |\n|---|---:|---|\n\
         | poweroff (host wall, median) | {:.2} s | ≤ longest stop timeout + 0.5 s = {:.1} s |\n\
         | poweroff / serial sum of the stop timeouts | {:.3}× | |\n",
        wall.median / 1e6,
        longest as f64 + 0.5,
        wall.median / 1e6 / sum.max(1) as f64
    )?;
    Ok(Section::new(t, fig))
}
