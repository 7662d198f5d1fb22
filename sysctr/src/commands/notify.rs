//! `sysctr notify`: the sd_notify protocol from a shell script, like systemd-notify. A
//! service with `"readiness": {"kind": "notify"}` runs it (from inside its container) to
//! tell init it is ready or what it is doing; it talks to `$NOTIFY_SOCKET`, not to the
//! control socket.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::net::UnixDatagram;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  sysctr notify --ready
  sysctr notify --status 'loading 3 of 10'
  sysctr notify --ready --status serving")]
pub struct Args {
    /// Tell init the service is ready (READY=1).
    #[arg(long)]
    pub ready: bool,
    /// A one-line status shown by `sysctr ps --json` (STATUS=…).
    #[arg(long, value_name = "TEXT")]
    pub status: Option<String>,
}

/// The datagram sent: one `KEY=VALUE` per line.
pub fn message(args: &Args) -> String {
    let mut msg = String::new();
    if args.ready {
        msg.push_str("READY=1\n");
    }
    if let Some(s) = &args.status {
        msg.push_str(&format!("STATUS={}\n", s.replace('\n', " ")));
    }
    msg
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let msg = message(args);
    if msg.is_empty() {
        bail!("nothing to send: give --ready and/or --status");
    }
    let path = std::env::var_os("NOTIFY_SOCKET")
        .context("NOTIFY_SOCKET is not set: the service's readiness kind is not \"notify\"")?;
    let sock = UnixDatagram::unbound().context("create a datagram socket")?;
    sock.send_to(msg.as_bytes(), &path).with_context(|| {
        format!(
            "send to NOTIFY_SOCKET {}",
            std::path::Path::new(&path).display()
        )
    })?;
    let _ = out;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_and_status_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let args = Args {
            ready: true,
            status: Some("serving\nnow".into()),
        };
        assert_eq!(message(&args), "READY=1\nSTATUS=serving now\n");
        std::env::set_var("NOTIFY_SOCKET", &path);
        run(&args, &mut Vec::new()).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving now\n");
        assert!(run(
            &Args {
                ready: false,
                status: None
            },
            &mut Vec::new()
        )
        .is_err());
    }
}
