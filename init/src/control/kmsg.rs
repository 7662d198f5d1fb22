//! The kernel log for `sysctr dmesg`: /dev/kmsg opened non-blocking, its records read as
//! log entries (bounded per call), and followed by watching the same descriptor.

use manifest::protocol::{LogEntry, Stream};
use std::io::Read;

/// Opens /dev/kmsg for reading from the oldest record still in the ring.
pub fn open_kmsg() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/kmsg")
}

/// Reads the kernel log records available now (bounded), as log entries.
pub fn read_kmsg(f: &mut std::fs::File) -> Vec<LogEntry> {
    let boot_epoch_ms = crate::logs::now_ms().saturating_sub(crate::supervisor::boot_ms());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    for _ in 0..100_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let Some((head, msg)) = rec.split_once(';') else {
                    continue;
                };
                let usec: u64 = head
                    .split(',')
                    .nth(2)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let line = msg.lines().next().unwrap_or("").to_string();
                out.push(LogEntry {
                    ts_ms: boot_epoch_ms + usec / 1000,
                    stream: Stream::Kernel,
                    line,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {} // overwritten records
            Err(_) => break,
        }
    }
    out
}
