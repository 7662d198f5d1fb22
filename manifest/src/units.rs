//! Value vocabularies used by the manifest: sizes, signal names, capability names.

/// Parses a byte size: a plain number of bytes or a number with a binary suffix
/// (`K`, `M`, `G`, optionally followed by `i`/`iB`/`B`), e.g. `"64M"`, `"512KiB"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!(
            "{text:?} is not a size (expected e.g. \"64M\" or \"1048576\")"
        ));
    }
    let (num, suffix) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is too large"))?;
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KI" | "KB" | "KIB" => 1 << 10,
        "M" | "MI" | "MB" | "MIB" => 1 << 20,
        "G" | "GI" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit {suffix:?} (use K, M or G)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Signal names accepted as a stop signal, with their numbers on Linux x86_64.
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGPIPE", 13),
    ("SIGALRM", 14),
    ("SIGTERM", 15),
    ("SIGCONT", 18),
    ("SIGSTOP", 19),
    ("SIGWINCH", 28),
    ("SIGPWR", 30),
];

/// The number of a signal given by name, with or without the `SIG` prefix.
pub fn signal_number(name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS.iter().find(|(n, _)| *n == full).map(|(_, v)| *v)
}

/// The name of a signal number, for exit reports (`"SIGKILL"`), or `"signal N"`.
pub fn signal_name(num: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == num)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_else(|| format!("signal {num}"))
}

/// Every Linux capability name known to this build.
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities every container gets: enough for a daemon that starts as root to drop
/// privileges and own its files, nothing that reaches outside its namespaces. This is the
/// set runc and containerd grant by default minus `CAP_NET_RAW`, `CAP_MKNOD`,
/// `CAP_SYS_CHROOT` and `CAP_AUDIT_WRITE`, which a service asks for by name when it needs them.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(
            parse_size("lots"),
            Err("\"lots\" is not a size (expected e.g. \"64M\" or \"1048576\")".into())
        );
        assert_eq!(
            parse_size("5T"),
            Err("\"5T\" has an unknown unit \"T\" (use K, M or G)".into())
        );
        assert_eq!(
            parse_size("99999999999999999999G"),
            Err("\"99999999999999999999G\" is too large".into())
        );
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("hup"), Some(1));
        assert_eq!(signal_number("SIGBOGUS"), None);
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(63), "signal 63");
    }
}
