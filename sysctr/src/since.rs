//! `--since` for `sysctr logs`: a duration back from now (`10m`, `2h`, `1h30m`, `45s`, `2d`),
//! a point in time in UTC (`2026-11-23T01:02:03Z`, `2026-11-23 01:02`, `2026-11-23`, with an
//! optional `+HH:MM` offset), or milliseconds since the Unix epoch (`1795395723000`).

use crate::format::days_from_civil;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This many milliseconds before now.
    Ago(u64),
    /// Milliseconds since the Unix epoch.
    At(u64),
}

impl Since {
    /// The point in time, in milliseconds since the Unix epoch, given the current time.
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            Since::Ago(ms) => now_ms.saturating_sub(ms),
            Since::At(ms) => ms,
        }
    }
}

/// The clap value parser for `--since`.
pub fn parse(text: &str) -> Result<Since, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty time".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Since::At)
            .map_err(|_| format!("{text:?} is too large"));
    }
    if t.len() >= 10 && t.as_bytes()[4] == b'-' {
        return parse_datetime(t)
            .map(Since::At)
            .ok_or_else(|| format!("{text:?} is not a time (expected e.g. 2026-11-23T01:02:03Z)"));
    }
    parse_duration(t).map(Since::Ago).ok_or_else(|| {
        format!(
            "{text:?} is not a duration or time (expected e.g. 10m, 2h, 1h30m, \
             2026-11-23T01:02:03Z or milliseconds since the epoch)"
        )
    })
}

/// `1h30m`, `10m`, `45s`, `500ms`, `2d`: numbers each followed by a unit.
fn parse_duration(t: &str) -> Option<u64> {
    let mut rest = t;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(total)
}

/// `YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|±HH:MM]`, UTC when no offset is given.
fn parse_datetime(t: &str) -> Option<u64> {
    let num = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (date, time) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, ""),
    };
    let mut parts = date.split('-');
    let year: i64 = num(parts.next()?)?.into();
    let month = num(parts.next()?)?;
    let day = num(parts.next()?)?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Split off the zone: Z, or a sign after the time of day.
    let (clock, offset_min): (&str, i64) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (h, m) = time[i + 1..]
            .split_once(':')
            .unwrap_or((&time[i + 1..], "0"));
        let off = i64::from(num(h)?) * 60 + i64::from(num(m)?);
        (&time[..i], if &time[i..=i] == "-" { -off } else { off })
    } else {
        (time, 0)
    };
    let mut secs_of_day: u64 = 0;
    let mut millis: u64 = 0;
    if !clock.is_empty() {
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut f = hms.split(':');
        let h = num(f.next()?)?;
        let m = num(f.next()?)?;
        let s = match f.next() {
            Some(s) => num(s)?,
            None => 0,
        };
        if f.next().is_some() || h > 23 || m > 59 || s > 60 {
            return None;
        }
        if !frac.is_empty() {
            let digits: String = frac.chars().chain("000".chars()).take(3).collect();
            millis = u64::from(num(&digits)?);
        }
        secs_of_day = u64::from(h * 3600 + m * 60 + s);
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + secs_of_day as i64 - offset_min * 60;
    u64::try_from(secs).ok().map(|s| s * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("10m"), Ok(Since::Ago(600_000)));
        assert_eq!(parse("2h"), Ok(Since::Ago(7_200_000)));
        assert_eq!(parse("1h30m"), Ok(Since::Ago(5_400_000)));
        assert_eq!(parse("45s"), Ok(Since::Ago(45_000)));
        assert_eq!(parse("1d"), Ok(Since::Ago(86_400_000)));
        assert_eq!(parse("250ms"), Ok(Since::Ago(250)));
    }

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(parse("1795395723000"), Ok(Since::At(1_795_395_723_000)));
    }

    #[test]
    fn date_times() {
        let at = 1_795_395_723_000;
        assert_eq!(parse("2026-11-23T01:02:03Z"), Ok(Since::At(at)));
        assert_eq!(parse("2026-11-23T01:02:03"), Ok(Since::At(at)));
        assert_eq!(parse("2026-11-23 01:02:03"), Ok(Since::At(at)));
        assert_eq!(parse("2026-11-23T01:02:03.5Z"), Ok(Since::At(at + 500)));
        assert_eq!(parse("2026-11-23T02:02:03+01:00"), Ok(Since::At(at)));
        assert_eq!(parse("2026-11-23T00:02:03-01:00"), Ok(Since::At(at)));
        assert_eq!(parse("2026-11-23T01:02Z"), Ok(Since::At(at - 3000)));
        assert_eq!(parse("2026-11-23"), Ok(Since::At(at - 3_723_000)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "m10",
            "10x",
            "yesterday",
            "2026-13-01",
            "2026-11-23T25:00",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let msg = parse("yesterday").unwrap_err();
        assert!(msg.contains("10m"), "{msg}");
    }

    #[test]
    fn resolve_against_now() {
        assert_eq!(Since::Ago(1000).resolve(5000), 4000);
        assert_eq!(Since::Ago(9000).resolve(5000), 0);
        assert_eq!(Since::At(42).resolve(5000), 42);
    }
}
