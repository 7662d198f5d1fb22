//! The checks of one field each, shared by every service and field that holds that kind of
//! value (argument lists, environments, absolute paths, text, counts, ranges, ids); each
//! problem names the service and the field.

use super::{limits, Problem};

pub(super) fn check_args(problems: &mut Vec<Problem>, svc: &str, field: &str, args: &[String]) {
    if args.is_empty() || args[0].is_empty() {
        problems.push(Problem::new(svc, field, "must name a command"));
    }
    if args.len() > limits::ARGS {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} entries is above the maximum of {}",
                args.len(),
                limits::ARGS
            ),
        ));
        return;
    }
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            problems.push(Problem::new(
                svc,
                format!("{field}[{i}]"),
                "contains a NUL byte",
            ));
        } else if a.len() > limits::ARG_BYTES {
            problems.push(Problem::new(
                svc,
                format!("{field}[{i}]"),
                format!(
                    "{} bytes is above the maximum of {}",
                    a.len(),
                    limits::ARG_BYTES
                ),
            ));
        }
    }
}

pub(super) fn check_env(problems: &mut Vec<Problem>, svc: &str, field: &str, env: &[String]) {
    if env.len() > limits::ARGS {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} entries is above the maximum of {}",
                env.len(),
                limits::ARGS
            ),
        ));
        return;
    }
    for (i, e) in env.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if e.contains('\0') {
            problems.push(Problem::new(svc, f, format!("{e:?} contains a NUL byte")));
        } else if e.len() > limits::ARG_BYTES {
            problems.push(Problem::new(
                svc,
                f,
                format!(
                    "{} bytes is above the maximum of {}",
                    e.len(),
                    limits::ARG_BYTES
                ),
            ));
        } else {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                Some(_) => problems.push(Problem::new(svc, f, format!("{e:?} has an empty name"))),
                None => problems.push(Problem::new(svc, f, format!("{e:?} is not KEY=VALUE"))),
            }
        }
    }
}

pub(super) fn absolute(problems: &mut Vec<Problem>, svc: &str, field: &str, path: &str) {
    if path.contains('\0') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} contains a NUL byte"),
        ));
    } else if path.len() > limits::PATH_BYTES {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} bytes is above the maximum of {}",
                path.len(),
                limits::PATH_BYTES
            ),
        ));
    } else if !path.starts_with('/') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} must be an absolute path"),
        ));
    } else if path.split('/').any(|c| c == "..") {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} must not contain \"..\""),
        ));
    }
}

/// A plain string field: no NUL byte (the kernel cuts there), bounded length.
pub(super) fn text(problems: &mut Vec<Problem>, svc: &str, field: &str, value: &str) {
    if value.contains('\0') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value:?} contains a NUL byte"),
        ));
    } else if value.len() > limits::PATH_BYTES {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} bytes is above the maximum of {}",
                value.len(),
                limits::PATH_BYTES
            ),
        ));
    }
}

pub(super) fn count(problems: &mut Vec<Problem>, svc: &str, field: &str, n: usize) {
    if n > limits::LIST {
        problems.push(Problem::new(
            svc,
            field,
            format!("{n} entries is above the maximum of {}", limits::LIST),
        ));
    }
}

/// `value` must lie in `min..=max`; the message names both ends.
pub(super) fn range(
    problems: &mut Vec<Problem>,
    svc: &str,
    field: &str,
    value: u64,
    min: u64,
    max: u64,
) {
    if value < min {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is below the minimum of {min}"),
        ));
    } else if value > max {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is above the maximum of {max}"),
        ));
    }
}

pub(super) fn id(problems: &mut Vec<Problem>, svc: &str, field: &str, value: u32) {
    if value == limits::NO_ID {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is (uid_t)-1, which the kernel reads as \"no change\" (the service would stay root)"),
        ));
    }
}
