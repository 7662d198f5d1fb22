//! Value types of the manifest, each parsed once when the file is read: byte sizes, signal
//! names (nix's `Signal`), capability names (the `caps` crate's `Capability`). A value that
//! does not parse is a problem naming its field, never a silent fallback later.

use serde::{Deserialize, Serialize};
use std::fmt;

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

/// A byte size written as text (`"64M"`), parsed when the manifest is read. The text is
/// kept so the value serializes back the way it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    text: String,
    bytes: u64,
}

impl Size {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(text: String) -> Result<Size, String> {
        let bytes = parse_size(&text)?;
        Ok(Size { text, bytes })
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.text
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A signal given by name (`"SIGTERM"`, `"term"`, `"SIGhup"`), with or without the `SIG`
/// prefix, in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignalName(pub nix::sys::signal::Signal);

impl SignalName {
    pub fn signal(self) -> nix::sys::signal::Signal {
        self.0
    }

    /// The signal's number, for `kill(2)`.
    pub fn number(self) -> i32 {
        self.0 as i32
    }
}

impl std::str::FromStr for SignalName {
    type Err = String;
    fn from_str(name: &str) -> Result<SignalName, String> {
        let upper = name.trim().to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        full.parse::<nix::sys::signal::Signal>()
            .map(SignalName)
            .map_err(|_| format!("unknown signal {name:?}"))
    }
}

impl TryFrom<String> for SignalName {
    type Error = String;
    fn try_from(name: String) -> Result<SignalName, String> {
        name.parse()
    }
}

impl From<SignalName> for String {
    fn from(s: SignalName) -> String {
        s.0.as_str().to_string()
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// The name of a signal number, for exit reports (`"SIGKILL"`), or `"signal N"`.
pub fn signal_name(num: i32) -> String {
    nix::sys::signal::Signal::try_from(num)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {num}"))
}

/// A Linux capability given by name (`"CAP_NET_ADMIN"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CapabilityName(pub caps::Capability);

impl CapabilityName {
    pub fn capability(self) -> caps::Capability {
        self.0
    }

    /// The name as the kernel and the OCI spec write it: `CAP_NET_ADMIN`.
    pub fn as_str(&self) -> String {
        self.0.to_string()
    }
}

impl TryFrom<String> for CapabilityName {
    type Error = String;
    fn try_from(name: String) -> Result<CapabilityName, String> {
        name.parse::<caps::Capability>()
            .map(CapabilityName)
            .map_err(|_| format!("unknown capability {name:?}"))
    }
}

impl From<CapabilityName> for String {
    fn from(c: CapabilityName) -> String {
        c.0.to_string()
    }
}

impl fmt::Display for CapabilityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The capabilities every container gets: enough for a daemon that starts as root to drop
/// privileges and own its files, nothing that reaches outside its namespaces. This is the
/// set runc and containerd grant by default minus `CAP_NET_RAW`, `CAP_MKNOD`,
/// `CAP_SYS_CHROOT` and `CAP_AUDIT_WRITE`, which a service asks for by name when it needs them.
pub const DEFAULT_CAPABILITIES: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
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
        let s: Size = serde_json::from_str("\"256K\"").unwrap();
        assert_eq!(s.bytes(), 256 << 10);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"256K\"");
    }

    #[test]
    fn signals() {
        let p = |s: &str| s.parse::<SignalName>().map(SignalName::number);
        assert_eq!(p("SIGTERM"), Ok(15));
        assert_eq!(p("hup"), Ok(1));
        assert_eq!(p("SigUsr1"), Ok(10));
        assert_eq!(p("SIGBOGUS"), Err("unknown signal \"SIGBOGUS\"".into()));
        assert_eq!(p(""), Err("unknown signal \"\"".into()));
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(63), "signal 63");
        let s: SignalName = serde_json::from_str("\"term\"").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"SIGTERM\"");
    }

    #[test]
    fn capabilities() {
        let c = CapabilityName::try_from("CAP_NET_ADMIN".to_string()).unwrap();
        assert_eq!(c.capability(), caps::Capability::CAP_NET_ADMIN);
        assert_eq!(c.as_str(), "CAP_NET_ADMIN");
        assert_eq!(
            CapabilityName::try_from("CAP_FLY".to_string()),
            Err("unknown capability \"CAP_FLY\"".into())
        );
    }
}
