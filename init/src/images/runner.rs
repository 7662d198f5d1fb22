//! PID 1's side of the image helper: starts it ([`crate::helper_proc`], as the update
//! installer does) with the archive as stdin and a pipe as stdout, at most one at a time, keeps its
//! output (bounded), and hands the result to the control client that asked once the
//! reaper reports the helper's exit. PID 1 never waits for it.

use super::helper::{Action, HelperArgs, Outcome};
use crate::helper_proc::Helper;
use std::os::fd::OwnedFd;
use std::path::Path;

/// Bound on the helper output PID 1 keeps (invariant 12).
const MAX_OUTPUT: usize = 256 * 1024;

#[derive(Default)]
pub struct Runner {
    running: Option<Running>,
}

struct Running {
    pid: i32,
    client: u64,
    image: String,
    action: Action,
    output: Helper,
    pending: Vec<u8>,
}

/// A finished helper run, for the client that asked.
pub struct Finished {
    pub client: u64,
    pub image: String,
    pub action: Action,
    pub outcome: Outcome,
}

impl Runner {
    pub fn busy(&self) -> Option<&str> {
        self.running.as_ref().map(|r| r.image.as_str())
    }

    /// Starts the helper for `action` on `image` in the store `store_dir`; `input` is the
    /// archive for an import.
    pub fn start(
        &mut self,
        client: u64,
        action: Action,
        image: &str,
        store_dir: &Path,
        input: Option<OwnedFd>,
    ) -> Result<i32, String> {
        if let Some(other) = self.busy() {
            return Err(format!(
                "the image store is busy with {other:?}; try again when it is done"
            ));
        }
        let args = HelperArgs {
            action: action.clone(),
            store: store_dir.to_path_buf(),
            image: image.to_string(),
        };
        let helper =
            crate::helper_proc::spawn("image", args.to_args(), input).map_err(|e| e.to_string())?;
        let pid = helper.pid;
        self.running = Some(Running {
            pid,
            client,
            image: image.to_string(),
            action,
            output: helper,
            pending: Vec::new(),
        });
        Ok(pid)
    }

    /// Reads what the helper printed so far (never blocks); call once per loop turn.
    pub fn poll(&mut self) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let pending = &mut r.pending;
        r.output.read_available(|chunk| {
            if pending.len() + chunk.len() <= MAX_OUTPUT {
                pending.extend_from_slice(chunk);
            }
        });
    }

    /// The reaper saw `pid` exit: if it is the helper, its result.
    pub fn exited(&mut self, pid: i32, status: &str) -> Option<Finished> {
        if self.running.as_ref().map(|r| r.pid) != Some(pid) {
            return None;
        }
        self.poll();
        let r = self.running.take()?;
        let outcome = r
            .pending
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Outcome>(l).ok())
            .next_back()
            .unwrap_or(Outcome::Error {
                message: format!("the image helper ended ({status}) without a result"),
            });
        Some(Finished {
            client: r.client,
            image: r.image,
            action: r.action,
            outcome,
        })
    }
}
