//! Who may ask what: root may do anything; members of the control group (`sysctr`, the
//! peer's primary group or one of its supplementary groups, both as the kernel recorded
//! them at connect time) may read; everyone else is refused. Refusals are written to the
//! console at a bounded rate.

use crate::ratelimit::{RateLimit, Verdict};
use manifest::protocol::Op;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
    /// Primary group first, then the supplementary groups.
    pub gids: Vec<u32>,
}

impl Peer {
    /// SO_PEERCRED for uid, pid and primary group; SO_PEERGROUPS for the rest.
    pub fn of(sock: &impl AsFd) -> std::io::Result<Peer> {
        let cred = getsockopt(sock, PeerCredentials)?;
        let mut gids = vec![cred.gid()];
        gids.extend(crate::sys::peer_groups(sock.as_fd())?);
        Ok(Peer {
            uid: cred.uid(),
            pid: cred.pid(),
            gids,
        })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Version {} => "version",
        Op::Ps {} => "ps",
        Op::Inspect { .. } => "inspect",
        Op::Logs { .. } => "logs",
        Op::BootLogs { .. } => "boot_logs",
        Op::ListBoots {} => "list_boots",
        Op::KernelLog { .. } => "kernel_log",
        Op::Events {} => "events",
        Op::Start { .. } => "start",
        Op::Stop { .. } => "stop",
        Op::Restart { .. } => "restart",
        Op::Exec { .. } => "exec",
        Op::Power { .. } => "power",
        Op::Apply { .. } => "apply",
        Op::Rm { .. } => "rm",
        Op::ImageImport { .. } => "image_import",
        Op::ImageLs {} => "image_ls",
        Op::ImageRm { .. } => "image_rm",
    }
}

/// Root may do anything; members of the control group may read; everyone else is refused.
pub fn authorize(peer: &Peer, control_gid: Option<u32>, op: &Op) -> Result<(), String> {
    if peer.is_root() {
        return Ok(());
    }
    let (uid, gids) = (peer.uid, &peer.gids);
    let in_group = control_gid.is_some_and(|g| gids.contains(&g));
    if op.is_read_only() && in_group {
        return Ok(());
    }
    if op.is_read_only() {
        Err(format!(
            "{} needs root or the sysctr group (peer uid {uid}, groups {gids:?})",
            op_name(op)
        ))
    } else {
        Err(format!(
            "{} changes the system and needs root (peer uid {uid})",
            op_name(op)
        ))
    }
}

/// The console lines for refused requests: a few per window, the rest counted.
pub struct Refusals(RateLimit);

impl Default for Refusals {
    fn default() -> Self {
        Refusals(RateLimit::new(5, Duration::from_secs(10)))
    }
}

impl Refusals {
    pub fn log(&mut self, what: std::fmt::Arguments<'_>) {
        if let Verdict::Write { suppressed } = self.0.check(Instant::now()) {
            if suppressed > 0 {
                crate::warn!("control", "{what} ({suppressed} more refused before it)");
            } else {
                crate::warn!("control", "{what}");
            }
        }
    }
}

/// The gid of the `sysctr` group, from /etc/group.
pub fn sysctr_gid() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    group_gid(&text, "sysctr")
}

fn group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gids: &[u32]) -> Peer {
        Peer {
            uid,
            pid: 1,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn authorization_table() {
        let ps = Op::Ps {};
        let stop = Op::Stop {
            service: "ssh".into(),
        };
        assert!(authorize(&peer(0, &[0]), None, &stop).is_ok());
        assert!(authorize(&peer(1000, &[990]), Some(990), &ps).is_ok());
        assert!(
            authorize(&peer(1000, &[100, 990]), Some(990), &ps).is_ok(),
            "a supplementary group counts"
        );
        assert_eq!(
            authorize(&peer(1000, &[990]), Some(990), &stop).unwrap_err(),
            "stop changes the system and needs root (peer uid 1000)"
        );
        assert_eq!(
            authorize(&peer(1000, &[100]), Some(990), &ps).unwrap_err(),
            "ps needs root or the sysctr group (peer uid 1000, groups [100])"
        );
        assert!(
            authorize(&peer(1000, &[990]), None, &ps).is_err(),
            "no group: root only"
        );
    }

    #[test]
    fn groups_come_from_the_socket() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = Peer::of(&a).unwrap();
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert_eq!(p.gids[0], nix::unistd::getgid().as_raw());
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut theirs = p.gids[1..].to_vec();
        ours.sort();
        theirs.sort();
        assert_eq!(theirs, ours);
    }

    #[test]
    fn etc_group_lookup() {
        let text = "root:x:0:\nsysctrl:x:5:\nsysctr:x:990:alice,bob\n";
        assert_eq!(group_gid(text, "sysctr"), Some(990));
        assert_eq!(group_gid(text, "nope"), None);
        assert_eq!(group_gid("sysctr:x:notanumber:\n", "sysctr"), None);
    }
}
