//! `sysctr ps`: every onboot task and service as a table, or as JSON for scripts.

use crate::client::{Client, ClientError};
use crate::format::{self, Cell, Color, Now};
use manifest::protocol::{ExitStatus, Op, Request, Response, ServiceStatus, State};
use manifest::Kind;
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Columns: UPTIME is the time since the current run started; LAST EXIT is how the previous
run (or the onboot task) ended; MEM is the cgroup's memory.current; CPU is cpu.stat
usage_usec. Services that failed are listed under the table with their error.

Examples:
  sysctr ps
  sysctr ps --json | jq -r '.[] | select(.state == \"failed\") | .name'")]
pub struct Args {
    /// Print the list as JSON (an array of service status objects).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write, color: bool) -> anyhow::Result<i32> {
    let services = match client.call(&Request::new(Op::Ps {}))? {
        Response::Services { services } => services,
        other => return Err(ClientError::unexpected("services", other).into()),
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &services)?;
        writeln!(out)?;
    } else {
        out.write_all(render(&services, Now::read(), color).as_bytes())?;
    }
    Ok(0)
}

const HEADERS: [&str; 10] = [
    "NAME",
    "KIND",
    "STATE",
    "READY",
    "PID",
    "UPTIME",
    "RESTARTS",
    "LAST EXIT",
    "MEM",
    "CPU",
];

/// The table, then one line per failed service with its error.
pub fn render(services: &[ServiceStatus], now: Now, color: bool) -> String {
    let rows: Vec<Vec<Cell>> = services.iter().map(|s| row(s, now)).collect();
    let mut out = format::table(&HEADERS, &rows, color);
    let failed: Vec<&ServiceStatus> = services.iter().filter(|s| shows_error(s)).collect();
    let statuses: Vec<&ServiceStatus> = services
        .iter()
        .filter(|s| s.status_text.as_deref().is_some_and(|t| !t.is_empty()))
        .collect();
    if !statuses.is_empty() {
        out.push_str("\nStatus:\n");
        for s in statuses {
            let text = s.status_text.as_deref().unwrap_or("");
            out.push_str(&format!(
                "  {}: {}\n",
                format::sanitize(&s.name),
                format::sanitize(&format::truncate(text, 200))
            ));
        }
    }
    if !failed.is_empty() {
        out.push_str("\nErrors:\n");
        for s in failed {
            let err = s.last_error.as_deref().unwrap_or("");
            out.push_str(&format!(
                "  {} ({}): {}\n",
                format::sanitize(&s.name),
                s.state.as_str(),
                format::sanitize(&format::truncate(err, 200))
            ));
        }
    }
    out
}

fn shows_error(s: &ServiceStatus) -> bool {
    s.last_error.is_some()
        && match s.state {
            State::Failed | State::Backoff => true,
            State::Exited => s.last_exit.is_some_and(|e| !e.success()),
            _ => false,
        }
}

fn row(s: &ServiceStatus, now: Now) -> Vec<Cell> {
    let dash = || "-".to_string();
    let kind = match s.kind {
        Kind::Onboot => "onboot",
        Kind::Service => "service",
    };
    let ready = match s.kind {
        Kind::Onboot => dash(),
        Kind::Service if s.ready => "yes".into(),
        Kind::Service => "no".into(),
    };
    let exit_color = s
        .last_exit
        .and_then(|e| (!e.success()).then_some(Color::Red));
    vec![
        // A rejected entry's name is whatever the manifest said.
        Cell::plain(format::sanitize(&s.name)),
        Cell::plain(kind),
        Cell::colored(s.state.as_str(), state_color(s)),
        Cell::plain(ready),
        Cell::plain(s.pid.map_or_else(dash, |p| p.to_string())),
        Cell::plain(uptime(s, now).map_or_else(dash, format::duration_ms)),
        Cell::plain(s.restarts.to_string()),
        Cell::colored(
            s.last_exit.map_or_else(dash, |e: ExitStatus| e.to_string()),
            exit_color,
        ),
        Cell::plain(s.memory_bytes.map_or_else(dash, format::bytes)),
        Cell::plain(s.cpu_usec.map_or_else(dash, format::cpu_usec)),
    ]
}

fn state_color(s: &ServiceStatus) -> Option<Color> {
    match s.state {
        State::Ready | State::Running => Some(Color::Green),
        State::Exited if s.last_exit.is_some_and(ExitStatus::success) => Some(Color::Green),
        State::Starting | State::Stopping | State::Backoff => Some(Color::Yellow),
        State::Failed | State::Exited => Some(Color::Red),
        State::Pending => None,
    }
}

/// How long the current run has lasted, for processes that are up. The boot clock is
/// preferred: it does not jump when the wall clock is set after boot.
fn uptime(s: &ServiceStatus, now: Now) -> Option<u64> {
    if !matches!(
        s.state,
        State::Starting | State::Running | State::Ready | State::Stopping
    ) {
        return None;
    }
    match (s.started_boot_ms, now.boot_ms) {
        (Some(start), Some(boot)) => Some(boot.saturating_sub(start)),
        _ => s.started_at_ms.map(|t| now.wall_ms.saturating_sub(t)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn status(name: &str, state: State) -> ServiceStatus {
        ServiceStatus::new(name, Kind::Service, state)
    }

    /// An onboot task that succeeded, a ready service, and a failed one.
    pub fn sample() -> Vec<ServiceStatus> {
        let mut onboot = status("sysctl", State::Exited);
        onboot.kind = Kind::Onboot;
        onboot.last_exit = Some(ExitStatus::Code(0));
        let mut ssh = status("ssh", State::Ready);
        ssh.ready = true;
        ssh.pid = Some(412);
        ssh.started_boot_ms = Some(1_000);
        ssh.started_at_ms = Some(1);
        ssh.restarts = 2;
        ssh.last_exit = Some(ExitStatus::Signal(9));
        ssh.memory_bytes = Some(3 << 20);
        ssh.cpu_usec = Some(1_250_000);
        let mut ntp = status("ntpd", State::Failed);
        ntp.restarts = 5;
        ntp.last_exit = Some(ExitStatus::Code(1));
        ntp.last_error = Some("exec /usr/sbin/ntpd: No such file or directory".into());
        vec![onboot, ssh, ntp]
    }

    const NOW: Now = Now {
        wall_ms: 10_000_000,
        boot_ms: Some(193_000),
    };

    #[test]
    fn table_has_every_column_and_row() {
        let out = render(&sample(), NOW, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "NAME     KIND      STATE    READY   PID   UPTIME   RESTARTS   LAST EXIT   MEM      CPU"
        );
        assert_eq!(
            lines[1],
            "sysctl   onboot    exited   -       -     -        0          exit 0      -        -"
        );
        assert_eq!(
            lines[2],
            "ssh      service   ready    yes     412   3m12s    2          SIGKILL     3.0MiB   1.25s"
        );
        assert_eq!(
            lines[3],
            "ntpd     service   failed   no      -     -        5          exit 1      -        -"
        );
        assert_eq!(lines[4], "");
        assert_eq!(lines[5], "Errors:");
        assert_eq!(
            lines[6],
            "  ntpd (failed): exec /usr/sbin/ntpd: No such file or directory"
        );
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn columns_line_up() {
        let out = render(&sample(), NOW, false);
        let lines: Vec<&str> = out.lines().take(4).collect();
        for header in HEADERS {
            let at = lines[0].find(header).unwrap();
            for line in &lines[1..] {
                let before = &line[..at];
                assert!(
                    before.ends_with("   ") || at == 0,
                    "column {header} misaligned in {line:?}"
                );
            }
        }
    }

    #[test]
    fn no_ansi_unless_asked() {
        assert!(!render(&sample(), NOW, false).contains('\x1b'));
        let colored = render(&sample(), NOW, true);
        assert!(colored.contains("\x1b[31mfailed\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[32mready\x1b[0m"), "{colored}");
    }

    #[test]
    fn uptime_falls_back_to_the_wall_clock() {
        let mut s = status("x", State::Running);
        s.started_at_ms = Some(9_940_000);
        let no_boot = Now {
            wall_ms: 10_000_000,
            boot_ms: None,
        };
        assert_eq!(uptime(&s, no_boot), Some(60_000));
        s.state = State::Exited;
        assert_eq!(uptime(&s, no_boot), None);
    }

    #[test]
    fn status_text_and_names_are_printed_without_escapes() {
        let mut web = status("web", State::Ready);
        web.status_text = Some("\x1b]0;owned\x07serving \x1b[1m42\x1b[0m clients".into());
        let mut bad = status("evil\x1b[2Jname", State::Failed);
        bad.last_error = Some("quoted \x1b[31mred\x1b[0m output".into());
        let out = render(&[web, bad], NOW, false);
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(
            out.contains("\nStatus:\n  web: serving 42 clients\n"),
            "{out}"
        );
        assert!(
            out.contains("  evilname (failed): quoted red output\n"),
            "{out}"
        );
    }
}
