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

use super::BootConfigError;
use serde::{Deserialize, Deserializer};
use std::net::{IpAddr, Ipv6Addr};

/// The port `docker swarm join` uses when the manager address names none.
pub const DEFAULT_MANAGER_PORT: u16 = 2377;

/// What is wrong with one swarm value. In a JSON source it becomes the parse error of the
/// field (`…: field swarm.manager: …`); on the kernel command line
/// [`BootConfigError::SwarmCmdline`] names the word. No variant holds a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmValueError {
    #[error("{value:?}: expected manager or worker")]
    Role { value: String },
    #[error("{value:?}: {why} (expected HOST[:PORT], e.g. 10.0.0.1:2377)")]
    Manager { value: String, why: &'static str },
    #[error(
        "{value:?}: expected an IP address or an interface name (the address other nodes reach this one at)"
    )]
    Advertise { value: String },
    #[error(
        "not a swarm join token: it must start with SWMTKN-1- (`docker swarm join-token -q worker`)"
    )]
    TokenPrefix,
    #[error("a swarm join token has 10 to 200 characters after SWMTKN-1-; this one has {len}")]
    TokenLength { len: usize },
    #[error("a swarm join token holds only letters, digits and dashes after SWMTKN-1-")]
    TokenCharacters,
}

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
    pub fn check(&self) -> Result<(), BootConfigError> {
        let given = |f: &'static str, set: bool| set.then_some(f);
        match self.role {
            None => Err(BootConfigError::SwarmNoRole),
            Some(Role::Worker) => {
                let missing: Vec<&'static str> = [
                    given("manager", self.manager.is_none()),
                    given("token", self.token.is_none()),
                ]
                .into_iter()
                .flatten()
                .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(BootConfigError::SwarmWorkerNeeds { missing })
                }
            }
            Some(Role::Manager) => {
                let extra: Vec<&'static str> = [
                    given("manager", self.manager.is_some()),
                    given("token", self.token.is_some()),
                ]
                .into_iter()
                .flatten()
                .collect();
                if extra.is_empty() {
                    Ok(())
                } else {
                    Err(BootConfigError::SwarmManagerGiven { extra })
                }
            }
        }
    }

    /// One `sysctr.swarm.KEY=VALUE` word of the kernel command line, checked like the JSON
    /// field. Returns false for a word that is not a swarm setting.
    pub fn set_from_cmdline(&mut self, word: &str) -> Result<bool, BootConfigError> {
        let Some(setting) = word.strip_prefix("sysctr.swarm.") else {
            return Ok(false);
        };
        let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
        let bad = |key: &'static str| {
            move |reason: SwarmValueError| BootConfigError::SwarmCmdline { key, reason }
        };
        match key {
            "role" => {
                self.role = Some(match value {
                    "manager" => Role::Manager,
                    "worker" => Role::Worker,
                    _ => {
                        return Err(bad("role")(SwarmValueError::Role {
                            value: value.to_string(),
                        }))
                    }
                })
            }
            "manager" => self.manager = Some(manager_addr(value).map_err(bad("manager"))?),
            "advertise" => self.advertise = Some(advertise_addr(value).map_err(bad("advertise"))?),
            "token" => return Err(BootConfigError::SwarmTokenOnCmdline),
            _ => {
                return Err(BootConfigError::SwarmUnknownSetting {
                    key: key.to_string(),
                })
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
pub fn manager_addr(s: &str) -> Result<String, SwarmValueError> {
    let bad = |why: &'static str| SwarmValueError::Manager {
        value: s.to_string(),
        why,
    };
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
pub fn advertise_addr(s: &str) -> Result<String, SwarmValueError> {
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
        Err(SwarmValueError::Advertise {
            value: s.to_string(),
        })
    }
}

/// A swarm join token: `SWMTKN-1-` then letters, digits and dashes. The error never holds
/// the value.
pub fn join_token(s: &str) -> Result<Token, SwarmValueError> {
    let body = s
        .strip_prefix("SWMTKN-1-")
        .ok_or(SwarmValueError::TokenPrefix)?;
    if body.len() < 10 || body.len() > 200 {
        return Err(SwarmValueError::TokenLength { len: body.len() });
    }
    if !body.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(SwarmValueError::TokenCharacters);
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
    check: fn(&str) -> Result<T, SwarmValueError>,
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
mod tests;
