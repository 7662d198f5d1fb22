//! Sections 3 and 4 (host): PID 1's memory against the service count; `sysctr ps` latency.

use super::*;

pub(super) fn memory_and_ps(o: &Options, bins: &Binaries, scratch: &Scratch) -> Result<Section> {
    let mut fig = Figures::default();
    let mut mem = Vec::new();
    let mut ps_rows = String::new();
    let mut ps_medians = Vec::new();
    let mut ps_profile = String::new();
    let mut by_mapping = Vec::new();
    for &n in MEMORY_COUNTS {
        let services: Vec<Value> = (0..n)
            .map(|i| sleep_service(&format!("s{i:03}"), &scratch.rootfs))
            .collect();
        let init = HostInit::start(bins, scratch, &format!("mem{n}"), services)?;
        let ps = init.wait(
            &format!("{n} services running"),
            Duration::from_secs(120),
            |ps| ps.iter().filter(|s| s.pid.is_some()).count() == n,
        )?;
        // From the first create to the last container running, by init's clock.
        let first = ps
            .iter()
            .filter_map(|s| Some(s.started_boot_us? - s.start_us?))
            .min();
        let last = ps.iter().filter_map(|s| s.started_boot_us).max();
        let boot = match (first, last) {
            (Some(a), Some(b)) => Duration::from_micros(b - a),
            _ => Duration::ZERO,
        };
        std::thread::sleep(Duration::from_millis(500));
        let (rss, pss) = init.memory()?;
        fig.value(
            &format!("PID 1 RSS, {n} services"),
            "KiB",
            rss as f64 / 1024.0,
        );
        fig.value(
            &format!("PID 1 PSS, {n} services"),
            "KiB",
            pss as f64 / 1024.0,
        );
        fig.value(
            &format!("starting {n} services"),
            "ms",
            boot.as_secs_f64() * 1000.0,
        );
        mem.push((n, rss, pss, boot));
        if n == 0 || n == 1 || n == 100 {
            by_mapping.push((n, init.memory_by_mapping()?));
        }
        if PS_COUNTS.contains(&n) {
            let (cli, json_cli, raw, bytes) = ps_latency(&init, bins, o.runs)?;
            fig.timing(&format!("`sysctr ps` CLI, {n} services"), cli);
            fig.timing(&format!("`sysctr ps --json` CLI, {n} services"), json_cli);
            fig.timing(&format!("`ps` request, raw socket, {n} services"), raw);
            ps_medians.push((n, raw.median, cli.median));
            writeln!(
                ps_rows,
                "| {n} | `sysctr ps` CLI, wall | {} | {} | {} |",
                cli.n,
                ms(cli.median),
                ms(cli.p95)
            )?;
            writeln!(
                ps_rows,
                "| {n} | `sysctr ps --json` CLI, wall | {} | {} | {} |",
                json_cli.n,
                ms(json_cli.median),
                ms(json_cli.p95)
            )?;
            writeln!(
                ps_rows,
                "| {n} | `ps` request → reply ({bytes} bytes), raw socket | {} | {} | {} |",
                raw.n,
                ms(raw.median),
                ms(raw.p95)
            )?;
            if n == 100 {
                ps_profile = strace_profile(init.host_pid()?, || {
                    for _ in 0..20 {
                        init.ps()?;
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| format!("strace failed: {e:#}"));
            }
        }
        drop(init);
    }

    let mut t = String::new();
    writeln!(t, "## Host: PID 1 memory\n")?;
    writeln!(
        t,
        "init as PID 1 in test mode with N `sleep` services, all running, 0.5 s after the \
         last start; `/proc/<init>/smaps_rollup`. (In test mode init does not mount or own \
         the machine, otherwise it is the same binary and code path.)\n"
    )?;
    writeln!(
        t,
        "| services | RSS KiB | PSS KiB | starting them all took |\n|---:|---:|---:|---:|"
    )?;
    for (n, rss, pss, boot) in &mem {
        writeln!(
            t,
            "| {n} | {} | {} | {} ms |",
            kib(*rss),
            kib(*pss),
            boot.as_millis()
        )?;
    }
    let get = |n: usize| mem.iter().find(|m| m.0 == n);
    if let (Some(a), Some(b)) = (get(1), get(100)) {
        let per_rss = (b.1 as f64 - a.1 as f64) / 99.0;
        let per_pss = (b.2 as f64 - a.2 as f64) / 99.0;
        writeln!(
            t,
            "\n| ratio | value | target |\n|---|---:|---|\n\
             | RSS per extra service (1 → 100) | {:.1} KiB | < 50 KiB |\n\
             | PSS per extra service (1 → 100) | {:.1} KiB | |\n\
             | RSS with 1 service | {:.2} MiB | < 5 MiB with the default services |\n",
            per_rss / 1024.0,
            per_pss / 1024.0,
            a.1 as f64 / 1048576.0
        )?;
    }
    if !by_mapping.is_empty() {
        writeln!(
            t,
            "Where the RSS is (`/proc/<init>/smaps`, summed by mapping; the binary's code and \
             data are file-backed pages of the static `init`):\n"
        )?;
        let mut names: Vec<String> = Vec::new();
        for (_, m) in &by_mapping {
            for (name, b) in m {
                if *b > 0 && !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        write!(t, "| mapping |")?;
        for (n, _) in &by_mapping {
            write!(t, " {n} services, KiB |")?;
        }
        write!(t, "\n|---|")?;
        for _ in &by_mapping {
            write!(t, "---:|")?;
        }
        t.push('\n');
        for name in names.iter().filter(|n| !n.starts_with("[vvar")) {
            write!(t, "| {name} |")?;
            for (_, m) in &by_mapping {
                let b = m.iter().find(|(x, _)| x == name).map(|e| e.1).unwrap_or(0);
                write!(t, " {} |", kib(b))?;
            }
            t.push('\n');
        }
        t.push('\n');
    }

    writeln!(t, "## Host: `sysctr ps` latency\n")?;
    writeln!(
        t,
        "Wall time of the CLI (a static binary, exec included) and of the same request from \
         an in-process raw socket client (`manifest::protocol`), against init in test mode.\n"
    )?;
    writeln!(
        t,
        "| services | what | runs | median ms | p95 ms |\n|---:|---|---:|---:|---:|\n{ps_rows}"
    )?;
    if let Some((_, raw, cli)) = ps_medians.iter().find(|m| m.0 == 100) {
        writeln!(
            t,
            "| ratio | value | target |\n|---|---:|---|\n\
             | `sysctr ps` at 100 services, CLI median | {} ms | < 10 ms |\n\
             | of which the request itself (raw socket) | {} ms | |\n",
            ms(*cli),
            ms(*raw)
        )?;
    }
    if !ps_profile.is_empty() {
        writeln!(
            t,
            "Syscalls of PID 1 over 20 `ps` requests at 100 services (`strace -c -f`, by count):\n\n```\n{ps_profile}\n```\n"
        )?;
    }
    Ok(Section::new(t, fig))
}

/// (CLI table, CLI --json, raw socket, reply size).
pub(super) fn ps_latency(
    init: &HostInit,
    bins: &Binaries,
    runs: usize,
) -> Result<(Stats, Stats, Stats, usize)> {
    let mut cli = Vec::new();
    let mut json_cli = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let st = init.cli(bins, &["ps"]).status()?;
        cli.push(elapsed_us(t));
        if !st.success() {
            bail!("sysctr ps failed: {st}");
        }
        let t = Instant::now();
        init.cli(bins, &["ps", "--json"]).status()?;
        json_cli.push(elapsed_us(t));
        let t = Instant::now();
        init.ps()?;
        raw.push(elapsed_us(t));
    }
    let bytes = serde_json::to_vec(&Response::Services {
        services: init.ps()?,
    })?
    .len();
    Ok((stats(&cli), stats(&json_cli), stats(&raw), bytes))
}
