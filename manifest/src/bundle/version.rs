//! Versions and ids as a manifest carries them: what they may look like (both end up in
//! file names on the ESP) and how two versions compare.

use super::MAX_ID_LEN;
use std::cmp::Ordering;

/// A version or id as the manifest carries it: 1 to 64 of `A-Za-z0-9._-`, starting with a
/// letter or digit. Both end up in file names on the ESP.
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(format!("{s:?} must be 1 to {MAX_ID_LEN} characters"));
    }
    if !s.chars().next().unwrap().is_ascii_alphanumeric() {
        return Err(format!("{s:?} must start with a letter or digit"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "{s:?} has {c:?}; only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// [`check_id`], and it must start with a digit (`1.4.0`, `2026.12.1-rc1`).
pub fn check_version(s: &str) -> Result<(), String> {
    check_id(s)?;
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("{s:?} must start with a digit"));
    }
    Ok(())
}

/// Compares versions the semver way, leniently: the part before the first `-` is compared
/// component by component (numbers as numbers, missing ones as 0, so `1.2` = `1.2.0`); a
/// version with a pre-release suffix (`1.2.0-rc1`) is older than the same one without it;
/// two suffixes compare by their `.`-separated identifiers, numbers before words.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_core, a_pre) = a.split_once('-').map_or((a, None), |(c, p)| (c, Some(p)));
    let (b_core, b_pre) = b.split_once('-').map_or((b, None), |(c, p)| (c, Some(p)));
    let ac: Vec<&str> = a_core.split('.').collect();
    let bc: Vec<&str> = b_core.split('.').collect();
    for i in 0..ac.len().max(bc.len()) {
        let x = ac.get(i).copied().unwrap_or("0");
        let y = bc.get(i).copied().unwrap_or("0");
        match compare_ident(x, y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (a_pre, b_pre) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let xs: Vec<&str> = x.split(['.', '-']).collect();
            let ys: Vec<&str> = y.split(['.', '-']).collect();
            for (p, q) in xs.iter().zip(&ys) {
                match compare_ident(p, q) {
                    Ordering::Equal => {}
                    o => return o,
                }
            }
            xs.len().cmp(&ys.len())
        }
    }
}

fn compare_ident(x: &str, y: &str) -> Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (num(x), num(y)) {
        (true, true) => {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}
