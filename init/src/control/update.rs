//! The update requests of the control socket (`update`, `update_status`, `rollback`; see
//! `manifest::protocol_update` and docs/update.md). The install itself runs in a helper
//! process ([`crate::update::run`]); this file only authorizes, starts it, and streams its
//! progress and result back to the client that asked.

use super::{ControlServer, Mode};
use crate::reactor::Reactor;
use crate::update::run::{self, Event};
use crate::update::{esp, UpdateError};
use manifest::protocol::{ErrorKind, PowerAction, PROTOCOL_VERSION};
use manifest::protocol_update::{Slot, UpdateOp, UpdateReply, UpdateRequest, UpdateStatus};
use std::path::Path;

impl ControlServer {
    /// A request frame that is an update request.
    pub(super) fn handle_update(&mut self, id: u64, req: UpdateRequest, r: &mut Reactor) {
        let reply_err = |this: &mut Self, kind, message: String, r: &mut Reactor| {
            this.finish(id, &UpdateReply::Error { kind, message }, r)
        };
        if req.version != PROTOCOL_VERSION {
            let m = format!(
                "protocol version {} is not supported (init speaks {PROTOCOL_VERSION})",
                req.version
            );
            return reply_err(self, ErrorKind::BadRequest, m, r);
        }
        let Some((uid, gids)) = self
            .clients
            .get(&id)
            .map(|c| (c.peer.uid, c.peer.gids.clone()))
        else {
            return;
        };
        let allowed = uid == 0
            || (req.op.is_read_only() && self.control_gid.is_some_and(|g| gids.contains(&g)));
        if !allowed {
            crate::warn!("control", "refused an update request from uid {uid}");
            let m = if req.op.is_read_only() {
                "update status needs root or the sysctr group".to_string()
            } else {
                "installing updates and rollback need root".to_string()
            };
            return reply_err(self, ErrorKind::PermissionDenied, m, r);
        }
        let booted = self.booted_slot();
        match req.op {
            UpdateOp::Update {
                allow_downgrade,
                reboot,
            } => {
                let Some(booted) = booted else {
                    let m = "this boot names no slot (sysctr.slot= on the kernel command line): \
                             not booted from a sysctr disk, nothing to update"
                        .to_string();
                    return reply_err(self, ErrorKind::Failed, m, r);
                };
                let fd = self.clients.get_mut(&id).and_then(|c| {
                    let fd = c.fds.pop();
                    c.fds.clear();
                    fd
                });
                let Some(fd) = fd else {
                    let m =
                        "update needs the bundle as a file descriptor with the request".to_string();
                    return reply_err(self, ErrorKind::BadRequest, m, r);
                };
                match self.updates.start(id, fd, booted, allow_downgrade, reboot) {
                    Ok(what) => {
                        crate::info!("update", "{what}");
                        self.set_mode(id, Mode::Update);
                    }
                    Err((kind, m)) => reply_err(self, kind, m, r),
                }
            }
            UpdateOp::UpdateStatus {} => {
                let slots = crate::bootslot::with_esp(false, |esp| {
                    esp::slot_status(esp).map_err(|e: UpdateError| e.to_string())
                });
                match slots {
                    Ok(slots) => {
                        let status = UpdateStatus {
                            booted,
                            compatible: run::read_release(Path::new(run::RELEASE_FILE))
                                .ok()
                                .map(|r| r.compatible),
                            slots,
                            last: run::read_last(Path::new(run::LAST_FILE)),
                        };
                        self.finish(id, &UpdateReply::UpdateStatus { status }, r)
                    }
                    Err(m) => reply_err(self, ErrorKind::Failed, m, r),
                }
            }
            UpdateOp::Rollback {} => {
                let Some(booted) = booted else {
                    let m = "this boot names no slot: nothing to roll back to".to_string();
                    return reply_err(self, ErrorKind::Failed, m, r);
                };
                if self.updates.busy() {
                    let m = "an update is being installed".to_string();
                    return reply_err(self, ErrorKind::Conflict, m, r);
                }
                let other = booted.other();
                let res = crate::bootslot::with_esp(true, |esp| {
                    esp::prefer(esp, other).map_err(|e| e.to_string())
                });
                match res {
                    Ok(Some(entry)) => {
                        crate::info!("update", "rollback: slot {other} ({entry}) boots next");
                        let message = format!("slot {other} ({entry}) boots next time");
                        self.finish(id, &UpdateReply::Ok { message }, r)
                    }
                    Ok(None) => {
                        let m = format!("slot {other} has no good boot entry to roll back to");
                        reply_err(self, ErrorKind::Failed, m, r)
                    }
                    Err(m) => reply_err(self, ErrorKind::Failed, m, r),
                }
            }
        }
    }

    /// The slot this boot runs from, as the boot step found it (none on a boot without slots).
    fn booted_slot(&self) -> Option<Slot> {
        match self.boot.as_ref()?.slot.as_deref()? {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// Once per boot, when the boot is not (or no longer) a trial: looks for an update disk
    /// and installs the bundle on it ([`crate::update::offline`]), rebooting into it.
    pub fn start_offline_update(&mut self) {
        let booted = self.booted_slot();
        let Some(booted) = booted else {
            return;
        };
        match self.updates.start_offline(booted) {
            Ok(what) => crate::info!("update", "offline: {what}"),
            Err((_, m)) => crate::warn!("update", "offline: not looking for an update disk: {m}"),
        }
    }

    /// Once per loop turn: the helper's progress to its client.
    pub fn poll_update(&mut self, r: &mut Reactor) {
        for ev in self.updates.poll() {
            if let Event::Progress { client, progress } = ev {
                self.send(client, &UpdateReply::UpdateProgress { progress }, r);
            }
        }
    }

    /// The reaper saw `pid` exit. Returns whether it was the update helper, and the reboot
    /// the client asked for once the install succeeded, with that client's id (the reboot
    /// waits for it to have its answer: [`ControlServer::is_connected`]).
    pub fn update_exited(
        &mut self,
        pid: i32,
        status: &str,
        r: &mut Reactor,
    ) -> (bool, Option<(PowerAction, u64)>) {
        let (client, result, reboot) = match self.updates.exited(pid, status) {
            Some(Event::Finished {
                client,
                result,
                reboot,
            }) => (client, result, reboot),
            Some(Event::Skipped { message }) => {
                crate::info!("update", "offline: {message}");
                return (true, None);
            }
            _ => return (false, None),
        };
        match result {
            Ok(mut installed) => {
                crate::info!(
                    "update",
                    "installed {} into slot {} ({}, signed by {})",
                    installed.version,
                    installed.slot,
                    installed.entry,
                    installed.key_id
                );
                installed.rebooting = reboot;
                self.finish(client, &UpdateReply::UpdateDone { installed }, r);
                (true, reboot.then_some((PowerAction::Reboot, client)))
            }
            Err((kind, message)) => {
                crate::error!("update", "not installed: {message}");
                self.finish(client, &UpdateReply::Error { kind, message }, r);
                (true, None)
            }
        }
    }
}
