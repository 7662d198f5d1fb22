//! Turning numbers from init into text for people: durations, byte sizes, CPU time,
//! timestamps, and aligned tables. Pure functions, so everything here is unit-tested.

use std::time::{SystemTime, UNIX_EPOCH};

/// The two clocks a table is rendered against: wall time for `started_at_ms`, and
/// CLOCK_BOOTTIME for `started_boot_ms`, which does not jump when NTP sets the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall_ms: u64,
    pub boot_ms: Option<u64>,
}

impl Now {
    pub fn read() -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let boot_ms = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .ok()
            .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000);
        Now { wall_ms, boot_ms }
    }
}

/// A duration in whole milliseconds as the two largest units: `45s`, `3m12s`, `2h05m`,
/// `3d04h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// CPU time in microseconds: `850us`, `120ms`, `4.25s`, then as [`duration_ms`].
pub fn cpu_usec(usec: u64) -> String {
    match usec {
        0..=999 => format!("{usec}us"),
        1000..=999_999 => format!("{}ms", usec / 1000),
        1_000_000..=59_999_999 => format!("{:.2}s", usec as f64 / 1e6),
        _ => duration_ms(usec / 1000),
    }
}

/// A byte count with a binary unit: `512B`, `1.5KiB`, `12.3MiB`, `245MiB`, `1.1GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 {
        format!("{v:.0}{}", UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds:
/// `2026-11-23T01:02:03.456Z`.
pub fn timestamp_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01; the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Terminal colours used for cells; ignored when the output is not a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }

    pub fn colored(text: impl Into<String>, color: Option<Color>) -> Cell {
        Cell {
            text: text.into(),
            color,
        }
    }
}

/// Renders a table with left-aligned columns three spaces apart, like `docker ps`. No line
/// has trailing spaces; colour codes are added only when `color` is set and never count
/// toward the column widths.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], color: bool) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.text.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<Cell> = headers.iter().map(|h| Cell::plain(*h)).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().take(cols) {
            let last = i + 1 == cols.min(row.len());
            match (color, cell.color) {
                (true, Some(c)) => {
                    line.push_str(&format!("\x1b[{}m{}\x1b[0m", c.code(), cell.text))
                }
                _ => line.push_str(&cell.text),
            }
            if !last {
                let pad = widths[i] - cell.text.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line = text.lines().next().unwrap_or("");
    if one_line.chars().count() <= max && one_line.len() == text.trim_end().len() {
        return one_line.to_string();
    }
    let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Text from a service (a log line, a `STATUS=` message, an error that quotes it) made
/// safe for a terminal: escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL/ST`, and
/// two-byte `ESC x`) are removed, and every other control character except tab, C1 ones
/// included, becomes `�`. A service cannot move the cursor, retitle the window, rewrite
/// the lines above or type into the operator's shell through `sysctr logs`.
pub fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    let is_control = |c: char| (c.is_control() && c != '\t') || c == '\u{7f}';
    if !text.chars().any(is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Any other ESC x (charset selection, keypad modes…): both go.
                Some(_) | None => {}
            },
            // The 8-bit CSI.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            c if is_control(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_two_units() {
        assert_eq!(duration_ms(0), "0s");
        assert_eq!(duration_ms(59_999), "59s");
        assert_eq!(duration_ms(60_000), "1m00s");
        assert_eq!(duration_ms(192_000), "3m12s");
        assert_eq!(duration_ms(2 * 3_600_000 + 5 * 60_000 + 7_000), "2h05m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn cpu_time_units() {
        assert_eq!(cpu_usec(0), "0us");
        assert_eq!(cpu_usec(850), "850us");
        assert_eq!(cpu_usec(120_400), "120ms");
        assert_eq!(cpu_usec(4_250_000), "4.25s");
        assert_eq!(cpu_usec(192_000_000), "3m12s");
    }

    #[test]
    fn byte_sizes_are_binary() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(12_900_000), "12.3MiB");
        assert_eq!(bytes(245 << 20), "245MiB");
        assert_eq!(bytes(3 << 30), "3.0GiB");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(timestamp_ms(1_795_395_723_456), "2026-11-23T01:02:03.456Z");
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-800_000, -1, 0, 1, 10_957, 11_016, 20_415, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn table_columns_align_without_trailing_space() {
        let rows = vec![
            vec![Cell::plain("ssh"), Cell::plain("running"), Cell::plain("1")],
            vec![
                Cell::plain("network"),
                Cell::colored("failed", Some(Color::Red)),
                Cell::plain("-"),
            ],
        ];
        let out = table(&["NAME", "STATE", "PID"], &rows, false);
        assert_eq!(
            out,
            "NAME      STATE     PID\n\
             ssh       running   1\n\
             network   failed    -\n"
        );
        assert!(!out.contains('\x1b'));
        let colored = table(&["NAME", "STATE", "PID"], &rows, true);
        assert!(colored.contains("\x1b[31mfailed\x1b[0m    -"), "{colored}");
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghijkl", 6), "abcde…");
        assert_eq!(truncate("line one\nline two", 20), "line one…");
    }

    #[test]
    fn sanitize_strips_escape_sequences() {
        assert!(matches!(
            sanitize("plain\ttext"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize("a\x1b[2J\x1b[Hb"), "ab");
        assert_eq!(sanitize("\x1b]0;pwned title\x07after"), "after");
        assert_eq!(sanitize("\x1b]52;c;ZWNobyBoaQ==\x1b\\after"), "after");
        assert_eq!(sanitize("x\x1bcy"), "xy");
        assert_eq!(
            sanitize("bell\x07 back\x08 cr\r nul\0 del\x7f"),
            "bell� back� cr� nul� del�"
        );
        assert_eq!(sanitize("c1\u{9b}31mcsi \u{85}nel"), "c1csi �nel");
        assert_eq!(sanitize("unterminated \x1b[31"), "unterminated ");
        assert_eq!(sanitize("ünïcödé ✓"), "ünïcödé ✓");
    }
}
