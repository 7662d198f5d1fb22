//! A budget for console lines that an outsider can cause (refused control requests,
//! forged notify datagrams): writing to a serial console takes up to a quarter of a second
//! per line, so a flood of them must not become a flood of lines. The first few lines of a
//! window are written; the rest are counted and summed up in the next line that is.

use std::time::{Duration, Instant};

pub struct RateLimit {
    window: Duration,
    max: u32,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// The verdict for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` lines were dropped since the last one written.
    Write {
        suppressed: u64,
    },
    Drop,
}

impl RateLimit {
    pub const fn new(max: u32, window: Duration) -> RateLimit {
        RateLimit {
            window,
            max,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if fresh {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.max {
            self.used += 1;
            let suppressed = std::mem::take(&mut self.suppressed);
            Verdict::Write { suppressed }
        } else {
            self.suppressed += 1;
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_writes_a_few_lines_and_counts_the_rest() {
        let mut rl = RateLimit::new(2, Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(rl.check(t), Verdict::Write { suppressed: 0 });
        assert_eq!(rl.check(t), Verdict::Write { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(rl.check(t + Duration::from_secs(1)), Verdict::Drop);
        }
        assert_eq!(
            rl.check(t + Duration::from_secs(10)),
            Verdict::Write { suppressed: 1000 }
        );
        assert_eq!(
            rl.check(t + Duration::from_secs(10)),
            Verdict::Write { suppressed: 0 }
        );
    }
}
