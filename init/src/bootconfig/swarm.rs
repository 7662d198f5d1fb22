//! The boot config's `swarm` object: how a node image (docs/cluster.md) joins a Docker Swarm
//! at boot without a person. Init checks every value here and writes the result to
//! `swarm.env` for the engine's container; the engine only reads it.
//!
//! ```json
//! "swarm": { "role": "manager", "advertise": "10.77.0.11" }
//! "swarm": { "role": "worker", "manager": "10.77.0.11:2377", "token": "SWMTKN-1-…" }
//! ```
//!
//! The join token is a secret: it is never repeated in an error, `swarm.env` is mode 600,
//! and the kernel command line (readable by every container) may not carry it.

use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv6Addr};

/// The port `docker swarm join` uses when the manager address names none.
pub const DEFAULT_MANAGER_PORT: u16 = 2377;

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    #[serde(default)]
    pub role: Option<Role>,
    /// `HOST[:PORT]`, stored with its port (`[V6]:PORT` for an IPv6 address).
    #[serde(default, deserialize_with = "manager_field")]
    pub manager: Option<String>,
    #[serde(default, deserialize_with = "token_field")]
    pub token: Option<Token>,
    /// An IP address or an interface name (docker's `--advertise-addr`).
    #[serde(default, deserialize_with = "advertise_field")]
    pub advertise: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `docker swarm init` when the node is in no swarm yet.
    Manager,
    /// `docker swarm join` to `manager` with `token`, retried until the manager answers.
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

/// A join token; its Debug form hides the secret part.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(SWMTKN-1-…)")
    }
}

impl Swarm {
    /// Takes every field `later` sets.
    pub fn merge(&mut self, later: Swarm) {
        if later.role.is_some() {
            self.role = later.role;
        }
        if later.manager.is_some() {
            self.manager = later.manager;
        }
        if later.token.is_some() {
            self.token = later.token;
        }
        if later.advertise.is_some() {
            self.advertise = later.advertise;
        }
    }

    /// The checks across fields, once every source is merged: a role, and for a worker the
    /// manager and token it joins with (a manager initialises and needs neither).
    pub fn check(&self) -> Result<(), String> {
        match self.role {
            None => Err(
                "swarm: no role (expected \"manager\", which initialises a swarm, or \"worker\", which joins one)"
                    .into(),
            ),
            Some(Role::Worker) => {
                let missing: Vec<&str> = [
                    ("manager", self.manager.is_none()),
                    ("token", self.token.is_none()),
                ]
                .into_iter()
                .filter_map(|(f, gone)| gone.then_some(f))
                .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "swarm: role worker needs {} (the manager's ADDR[:PORT] and `docker swarm join-token -q worker`)",
                        missing.join(" and ")
                    ))
                }
            }
            Some(Role::Manager) => {
                let extra: Vec<&str> = [
                    ("manager", self.manager.is_some()),
                    ("token", self.token.is_some()),
                ]
                .into_iter()
                .filter_map(|(f, set)| set.then_some(f))
                .collect();
                if extra.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "swarm: role manager initialises a swarm; {} only apply to role worker",
                        extra.join(" and ")
                    ))
                }
            }
        }
    }

    /// One `sysctr.swarm.KEY=VALUE` word of the kernel command line, checked like the JSON
    /// field. Returns false for a word that is not a swarm setting.
    pub fn set_from_cmdline(&mut self, word: &str) -> Result<bool, String> {
        let Some(setting) = word.strip_prefix("sysctr.swarm.") else {
            return Ok(false);
        };
        let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
        let bad = |e: String| format!("kernel command line: sysctr.swarm.{key}: {e}");
        match key {
            "role" => {
                self.role = Some(match value {
                    "manager" => Role::Manager,
                    "worker" => Role::Worker,
                    _ => {
                        return Err(bad(format!(
                            "{value:?}: expected manager or worker"
                        )))
                    }
                })
            }
            "manager" => self.manager = Some(manager_addr(value).map_err(bad)?),
            "advertise" => self.advertise = Some(advertise_addr(value).map_err(bad)?),
            "token" => {
                return Err(bad(
                    "a join token may not be on the kernel command line (every container can read /proc/cmdline); put it in the boot config's swarm.token (ESP sysctr/config.json or fw_cfg opt/sysctr/config)"
                        .into(),
                ))
            }
            _ => {
                return Err(bad(
                    "unknown swarm setting (expected role, manager or advertise)".into(),
                ))
            }
        }
        Ok(true)
    }

    /// `swarm.env` for the engine: `KEY=value` lines, every value already checked to hold
    /// no quote, space or shell character.
    pub fn env(&self) -> String {
        let mut out = String::new();
        if let Some(r) = self.role {
            out.push_str(&format!("ROLE={}\n", r.as_str()));
        }
        if let Some(m) = &self.manager {
            out.push_str(&format!("MANAGER={m}\n"));
        }
        if let Some(t) = &self.token {
            out.push_str(&format!("TOKEN={}\n", t.expose()));
        }
        if let Some(a) = &self.advertise {
            out.push_str(&format!("ADVERTISE={a}\n"));
        }
        out
    }
}

/// `HOST[:PORT]` with HOST an IPv4 address, `[IPv6]` (a bare IPv6 address has no port) or a
/// DNS name; returned with its port.
pub fn manager_addr(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{s:?}: {why} (expected HOST[:PORT], e.g. 10.0.0.1:2377)");
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]:{DEFAULT_MANAGER_PORT}"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("no ] after the IPv6 address"))?;
        let v6: Ipv6Addr = v6.parse().map_err(|_| bad("not an IPv6 address in [ ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (format!("[{v6}]"), port)
    } else {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
            return Err(bad("the host is neither an IP address nor a DNS name"));
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => DEFAULT_MANAGER_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
    };
    Ok(format!("{host}:{port}"))
}

/// An IP address or a network interface name (at most 15 characters).
pub fn advertise_addr(s: &str) -> Result<String, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let ifname = !s.is_empty()
        && s.len() <= 15
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ifname {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: expected an IP address or an interface name (the address other nodes reach this one at)"
        ))
    }
}

/// A swarm join token: `SWMTKN-1-` then letters, digits and dashes. The error never holds
/// the value.
pub fn join_token(s: &str) -> Result<Token, String> {
    let body = s.strip_prefix("SWMTKN-1-").ok_or(
        "not a swarm join token: it must start with SWMTKN-1- (`docker swarm join-token -q worker`)",
    )?;
    if body.len() < 10 || body.len() > 200 {
        return Err(format!(
            "a swarm join token has 10 to 200 characters after SWMTKN-1-; this one has {}",
            body.len()
        ));
    }
    if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(
            "a swarm join token holds only letters, digits and dashes after SWMTKN-1-".into(),
        );
    }
    Ok(Token(s.to_string()))
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn string_field<'de, D, T>(
    d: D,
    check: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    check(&s).map(Some).map_err(serde::de::Error::custom)
}

fn manager_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_field(d, manager_addr)
}

fn token_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Token>, D::Error> {
    string_field(d, join_token)
}

fn advertise_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_field(d, advertise_addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootconfig::{parse, BootConfig};

    const TOKEN: &str =
        "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";

    fn swarm_of(json: &str) -> Result<Option<Swarm>, String> {
        parse(json.as_bytes(), "fw_cfg opt/sysctr/config")
            .map(|c| c.swarm)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_worker_and_a_manager_are_accepted_and_written_out() {
        let w = swarm_of(&format!(
            r#"{{"swarm":{{"role":"worker","manager":"10.77.0.11","token":"{TOKEN}","advertise":"10.77.0.12"}}}}"#
        ))
        .unwrap()
        .unwrap();
        w.check().unwrap();
        assert_eq!(
            w.env(),
            format!("ROLE=worker\nMANAGER=10.77.0.11:2377\nTOKEN={TOKEN}\nADVERTISE=10.77.0.12\n")
        );
        let m = swarm_of(r#"{"swarm":{"role":"manager","advertise":"eth0"}}"#)
            .unwrap()
            .unwrap();
        m.check().unwrap();
        assert_eq!(m.env(), "ROLE=manager\nADVERTISE=eth0\n");
        // the token never shows in Debug output (logs, test failures)
        assert!(!format!("{w:?}").contains("3pu6hszj"));
    }

    #[test]
    fn bad_values_name_the_field_and_never_the_token() {
        let err = swarm_of(r#"{"swarm":{"role":"boss"}}"#).unwrap_err();
        assert!(
            err.starts_with("fw_cfg opt/sysctr/config: field swarm.role: unknown variant `boss`"),
            "{err}"
        );
        assert!(err.contains("expected `manager` or `worker`"), "{err}");

        let err =
            swarm_of(r#"{"swarm":{"role":"worker","manager":"10.77.0.11:99999"}}"#).unwrap_err();
        assert!(err.contains("field swarm.manager: \"10.77.0.11:99999\": the port is not a number from 1 to 65535"), "{err}");
        let err = swarm_of(r#"{"swarm":{"manager":"bad_host!:2377"}}"#).unwrap_err();
        assert!(
            err.contains("field swarm.manager")
                && err.contains("neither an IP address nor a DNS name"),
            "{err}"
        );
        let err = swarm_of(r#"{"swarm":{"manager":"[fe80::1:2377"}}"#).unwrap_err();
        assert!(err.contains("no ] after the IPv6 address"), "{err}");

        let secret = "SWMTKN-1-abc$(reboot)defghijkl";
        let err = swarm_of(&format!(r#"{{"swarm":{{"token":"{secret}"}}}}"#)).unwrap_err();
        assert!(
            err.contains("field swarm.token: a swarm join token holds only letters"),
            "{err}"
        );
        assert!(!err.contains("reboot"), "the token leaked into {err}");
        let err = swarm_of(r#"{"swarm":{"token":"hunter2hunter2"}}"#).unwrap_err();
        assert!(
            err.contains("must start with SWMTKN-1-") && !err.contains("hunter2"),
            "{err}"
        );
        let err = swarm_of(r#"{"swarm":{"token":"SWMTKN-1-short"}}"#).unwrap_err();
        assert!(
            err.contains("10 to 200 characters") && !err.contains("short"),
            "{err}"
        );

        let err = swarm_of(r#"{"swarm":{"advertise":"10.77.0.300"}}"#).unwrap_err();
        assert!(err.contains("field swarm.advertise: \"10.77.0.300\": expected an IP address or an interface name"), "{err}");
        let err = swarm_of(r#"{"swarm":{"role":"manager","tokn":"x"}}"#).unwrap_err();
        assert!(err.contains("unknown field `tokn`"), "{err}");
        let err = swarm_of(r#"{"swarm":{"manager":7}}"#).unwrap_err();
        assert!(err.contains("field swarm.manager: invalid type"), "{err}");
    }

    #[test]
    fn addresses_get_their_port() {
        assert_eq!(manager_addr("10.0.0.1").unwrap(), "10.0.0.1:2377");
        assert_eq!(manager_addr("10.0.0.1:4000").unwrap(), "10.0.0.1:4000");
        assert_eq!(manager_addr("mgr.lan").unwrap(), "mgr.lan:2377");
        assert_eq!(manager_addr("fd00::1").unwrap(), "[fd00::1]:2377");
        assert_eq!(manager_addr("[fd00::1]:4000").unwrap(), "[fd00::1]:4000");
        assert_eq!(manager_addr("[fd00::1]").unwrap(), "[fd00::1]:2377");
        for bad in [
            "",
            ":2377",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:x",
            "[fd00::1]x",
            "-a.lan",
            "a..b",
        ] {
            assert!(manager_addr(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(advertise_addr("fd00::2").unwrap(), "fd00::2");
        for bad in ["", "0eth", "a very long interface", "eth0;reboot"] {
            assert!(advertise_addr(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn checks_across_fields_after_the_merge() {
        let err = Swarm {
            role: Some(Role::Worker),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(err.contains("role worker needs manager and token"), "{err}");
        let err = Swarm {
            role: Some(Role::Worker),
            manager: Some("10.0.0.1:2377".into()),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(err.contains("role worker needs token"), "{err}");
        let err = Swarm {
            role: Some(Role::Manager),
            token: Some(join_token(TOKEN).unwrap()),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(
            err.contains("role manager initialises a swarm; token only apply"),
            "{err}"
        );
        let err = Swarm {
            advertise: Some("eth0".into()),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(err.contains("swarm: no role"), "{err}");
    }

    #[test]
    fn the_command_line_sets_fields_but_never_the_token() {
        // the ESP says worker with a token; the command line moves it to another manager
        let mut cfg = parse(
            format!(r#"{{"swarm":{{"role":"worker","manager":"10.0.0.1","token":"{TOKEN}"}}}}"#)
                .as_bytes(),
            "esp",
        )
        .unwrap();
        cfg.merge(
            BootConfig::from_cmdline(
                "quiet sysctr.swarm.manager=10.0.0.9:3000 sysctr.swarm.advertise=10.0.0.5",
            )
            .unwrap(),
        );
        let s = cfg.swarm.clone().unwrap();
        assert_eq!(s.role, Some(Role::Worker));
        assert_eq!(s.manager.as_deref(), Some("10.0.0.9:3000"));
        assert_eq!(s.advertise.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.token.as_ref().map(Token::expose), Some(TOKEN));

        let err = BootConfig::from_cmdline(&format!("sysctr.swarm.token={TOKEN}")).unwrap_err();
        assert!(
            err.contains("sysctr.swarm.token: a join token may not be on the kernel command line"),
            "{err}"
        );
        assert!(!err.contains("3pu6hszj"), "{err}");
        let err = BootConfig::from_cmdline("sysctr.swarm.role=leader").unwrap_err();
        assert!(
            err.contains("sysctr.swarm.role: \"leader\": expected manager or worker"),
            "{err}"
        );
        let err = BootConfig::from_cmdline("sysctr.swarm.managr=10.0.0.1").unwrap_err();
        assert!(
            err.contains("sysctr.swarm.managr: unknown swarm setting"),
            "{err}"
        );
        let err = BootConfig::from_cmdline("sysctr.swarm.manager=10.0.0.1:0").unwrap_err();
        assert!(
            err.contains("sysctr.swarm.manager: \"10.0.0.1:0\""),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_merged_swarm_is_dropped_with_the_reason() {
        let mut cfg = parse(br#"{"hostname":"n1","swarm":{"role":"worker"}}"#, "esp").unwrap();
        let err = cfg.drop_invalid_swarm().unwrap();
        assert!(err.contains("role worker needs manager and token"), "{err}");
        assert_eq!(cfg.swarm, None);
        assert_eq!(cfg.hostname.as_deref(), Some("n1"));
        let mut cfg = parse(br#"{"swarm":{"role":"manager"}}"#, "esp").unwrap();
        assert_eq!(cfg.drop_invalid_swarm(), None);
        assert!(cfg.swarm.is_some());
        assert_eq!(BootConfig::default().drop_invalid_swarm(), None);
    }
}
