//! One request, decoded and authorized, turned into its reply (or into a stream: logs,
//! kernel log, events, exec). Everything a request can fail with is an [`ApiError`].

use super::auth::{authorize, op_name};
use super::conn::Mode;
use super::{kmsg, ControlServer};
use crate::bootlogs::BootLogError;
use crate::reactor::{Reactor, Source};
use crate::runtime::Stdio;
use crate::supervisor::{ApiError, Supervisor};
use manifest::protocol::{self, Op, PowerAction, Request, Response, PROTOCOL_VERSION};
use std::os::fd::AsFd;

impl ControlServer {
    pub(super) fn handle(
        &mut self,
        id: u64,
        body: &[u8],
        sup: &mut Supervisor,
        r: &mut Reactor,
    ) -> Option<PowerAction> {
        let req: Request = match protocol::decode_request(body) {
            Ok(req) => req,
            Err(e) => {
                if let Ok(u) = manifest::protocol_update::decode_update_request(body) {
                    self.handle_update(id, u, r);
                    return None;
                }
                self.error(id, ApiError::Malformed(e), r);
                return None;
            }
        };
        if req.version != PROTOCOL_VERSION {
            let e = ApiError::Version {
                got: req.version,
                want: PROTOCOL_VERSION,
            };
            self.error(id, e, r);
            return None;
        }
        let c = self.clients.get_mut(&id)?;
        // Descriptors are for an exec or an image import only; any others are closed here.
        let fds = std::mem::take(&mut c.fds);
        let peer = c.peer.clone();
        if let Err(why) = authorize(&peer, self.control_gid, &req.op) {
            self.refusals.log(format_args!(
                "refused {:?} from uid {} (pid {}): {why}",
                op_name(&req.op),
                peer.uid,
                peer.pid
            ));
            self.error(id, ApiError::Refused(why), r);
            return None;
        }
        match self.dispatch(id, req.op, fds, sup, r) {
            Ok(power) => power,
            Err(e) => {
                self.error(id, e, r);
                None
            }
        }
    }

    fn dispatch(
        &mut self,
        id: u64,
        op: Op,
        mut fds: Vec<std::os::fd::OwnedFd>,
        sup: &mut Supervisor,
        r: &mut Reactor,
    ) -> Result<Option<PowerAction>, ApiError> {
        let reply = |this: &mut Self, message: String, r: &mut Reactor| {
            this.finish(id, &Response::Ok { message }, r)
        };
        match op {
            Op::Version {} => {
                let resp = Response::Version {
                    version: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    init_boot_ms: self.init_boot_ms,
                    boot: self.boot.clone(),
                };
                self.finish(id, &resp, r)
            }
            Op::Ps {} => {
                let services = sup.list();
                self.finish(id, &Response::Services { services }, r)
            }
            Op::Inspect { service } => {
                let i = sup.lookup(&service)?;
                let s = sup.service(i);
                let manifest = s
                    .def()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or(serde_json::Value::Null);
                let resp = Response::Inspect {
                    status: sup.status(i),
                    manifest,
                    spec: s.spec(),
                    cgroup: sup.cgroup_dir(i),
                    bundle: sup.bundle_path(i),
                };
                self.finish(id, &resp, r)
            }
            Op::Logs {
                service,
                lines,
                since_ms,
                follow,
            } => {
                let i = sup.lookup(&service)?;
                for entry in sup.service(i).logs().tail(lines, since_ms) {
                    self.send(id, &Response::Log { entry }, r);
                }
                if follow {
                    self.set_mode(id, Mode::FollowLogs { svc: i });
                } else {
                    self.finish(id, &Response::End, r);
                }
            }
            Op::BootLogs {
                boot,
                service,
                lines,
            } => {
                let root = self
                    .log_root
                    .as_deref()
                    .ok_or(BootLogError::NotPersistent)?;
                let entries = match crate::bootlogs::read(root, boot, service.as_deref(), lines) {
                    // This boot's log of a service that has not written a line yet (its
                    // file is made with its first line): empty, as `sysctr logs` says.
                    Err(BootLogError::NoLog { boot: 0, .. })
                        if service.as_deref().is_some_and(|n| sup.find(n).is_some()) =>
                    {
                        Vec::new()
                    }
                    read => read?,
                };
                for entry in entries {
                    self.send(id, &Response::Log { entry }, r);
                }
                self.finish(id, &Response::End, r);
            }
            Op::ListBoots {} => {
                let root = self
                    .log_root
                    .as_deref()
                    .ok_or(BootLogError::NotPersistent)?;
                let boots = crate::bootlogs::list(root)?;
                self.finish(id, &Response::Boots { boots }, r);
            }
            Op::KernelLog { lines, follow } => {
                let mut f = kmsg::open_kmsg().map_err(ApiError::Kmsg)?;
                let entries = kmsg::read_kmsg(&mut f);
                let skip = lines.map_or(0, |n| entries.len().saturating_sub(n));
                for entry in entries.into_iter().skip(skip) {
                    self.send(id, &Response::Log { entry }, r);
                }
                if !follow {
                    self.finish(id, &Response::End, r);
                    return Ok(None);
                }
                // Follow: the same descriptor, now at the end, is watched for new records.
                let token = r
                    .add(f.as_fd(), Source::Kmsg(id))
                    .map_err(ApiError::WatchKmsg)?;
                self.set_mode(id, Mode::FollowKernel);
                if let Some(c) = self.clients.get_mut(&id) {
                    c.kmsg = Some((token, f));
                }
            }
            Op::Events {} => self.set_mode(id, Mode::Events),
            Op::Start { service } => {
                let i = sup.lookup(&service)?;
                let msg = sup.start(i, r)?;
                reply(self, msg, r)
            }
            Op::Stop { service } => {
                let i = sup.lookup(&service)?;
                let msg = sup.stop(i, r)?;
                reply(self, msg, r)
            }
            Op::Restart { service } => {
                let i = sup.lookup(&service)?;
                let msg = sup.restart(i, r)?;
                reply(self, msg, r)
            }
            Op::Exec {
                service,
                args,
                env,
                tty: _,
            } => {
                let i = sup.lookup(&service)?;
                if let Err(p) = manifest::validate::exec_request(&args, &env) {
                    return Err(ApiError::ExecRequest(p.to_string()));
                }
                if fds.len() != super::conn::EXEC_FDS || args.is_empty() {
                    return Err(ApiError::ExecStdio { fds: fds.len() });
                }
                let (Some(stderr), Some(stdout), Some(stdin)) = (fds.pop(), fds.pop(), fds.pop())
                else {
                    unreachable!("three descriptors were checked above");
                };
                let stdio = Stdio {
                    stdin,
                    stdout,
                    stderr,
                };
                let pid = sup.exec(i, args, env, stdio, id)?;
                self.set_mode(id, Mode::Exec);
                self.send(id, &Response::ExecStarted { pid }, r)
            }
            Op::Apply { text, dry_run } => {
                let set = self.applied.as_ref().ok_or(ApiError::NoStateDir)?;
                let new = set
                    .check(&text)
                    .map_err(|e| ApiError::ApplyInvalid(e.to_string()))?;
                self.apply(id, new, dry_run, sup, r)?;
            }
            Op::Rm { service } => {
                if sup.is_system_service(&service) {
                    return Err(ApiError::SystemService(service));
                }
                let current = sup.applied_services();
                if !current.iter().any(|s| s.name == service) {
                    return Err(ApiError::UnknownService(service));
                }
                let new: Vec<_> = current.into_iter().filter(|s| s.name != service).collect();
                self.apply(id, new, false, sup, r)?;
            }
            Op::ImageLs {} => self.image_ls(id, sup, r)?,
            Op::ImageImport { image } => self.image_import(id, image, fds)?,
            Op::ImageRm { image } => self.image_rm(id, image, sup)?,
            Op::Power { action } => {
                let message = format!("{action:?} requested").to_lowercase();
                self.finish(id, &Response::Ok { message }, r);
                return Ok(Some(action));
            }
        }
        Ok(None)
    }

    /// Plans the change from the applied set in force to `new`, writes `new` to the state
    /// partition (unless `dry_run`) and then carries the plan out. A failed write changes
    /// nothing, on disk or running.
    fn apply(
        &mut self,
        id: u64,
        new: Vec<manifest::Service>,
        dry_run: bool,
        sup: &mut Supervisor,
        r: &mut Reactor,
    ) -> Result<(), ApiError> {
        let set = self.applied.as_ref().ok_or(ApiError::NoStateDir)?;
        let plan = manifest::applied::plan(&sup.applied_services(), &new);
        if !dry_run {
            set.write(&new)
                .map_err(|e| ApiError::ApplyWrite(e.to_string()))?;
            crate::info!(
                "apply",
                "{}: add {:?}, change {:?}, remove {:?}, {} unchanged",
                set.file().display(),
                plan.add,
                plan.change,
                plan.remove,
                plan.unchanged.len()
            );
            sup.apply_plan(&new, &plan, r);
        }
        self.finish(id, &Response::Applied { plan, dry_run }, r);
        Ok(())
    }
}
