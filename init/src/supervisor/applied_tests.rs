//! Carrying out an apply's plan with the recording fake: unchanged services keep their
//! run and pid, changed ones are stopped and started again with the new entry (after
//! what they depend on), removed ones are stopped and hidden, new ones are scheduled.

use super::effects::{Call, Recording};
use super::*;
use manifest::applied::plan;
use manifest::protocol::ExitStatus;
use manifest::Service;
use serde_json::json;

fn loaded(services: serde_json::Value) -> manifest::Loaded {
    let text = json!({"version": 1, "services": services}).to_string();
    manifest::load_str(&text, "test.json").expect("manifest loads")
}

fn svc(name: &str, env: &str, deps: &[&str]) -> serde_json::Value {
    json!({"name": name, "root": "/roots/busybox", "args": ["/bin/sh"], "env": [env],
           "depends_on": deps})
}

fn entries(v: serde_json::Value) -> Vec<Service> {
    serde_json::from_value(v).unwrap()
}

struct W {
    sup: Supervisor,
    r: Reactor,
    calls: std::rc::Rc<std::cell::RefCell<Vec<Call>>>,
    _dir: tempfile::TempDir,
}

fn world(system: serde_json::Value, applied: serde_json::Value) -> W {
    let fx = Recording::default();
    fx.dirs.borrow_mut().insert("/roots/busybox".into());
    let calls = fx.calls.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut sup =
        Supervisor::with_effects(loaded(system), Box::new(fx), &dir.path().join("run"), None);
    sup.add_applied_at_boot(
        manifest::applied::Joined {
            services: entries(applied),
            rejected: vec![],
        },
        "applied.json",
    );
    let mut r = Reactor::new().unwrap();
    sup.schedule(&mut r);
    W {
        sup,
        r,
        calls,
        _dir: dir,
    }
}

impl W {
    fn pid(&self, name: &str) -> Option<i32> {
        self.sup.service(self.sup.find(name)?).pid()
    }
    fn state(&self, name: &str) -> Option<State> {
        self.sup.find(name).map(|i| self.sup.service(i).state())
    }
    fn exit(&mut self, name: &str) {
        let pid = self.pid(name).unwrap();
        assert!(self.sup.on_exit(pid, ExitStatus::Signal(15), &mut self.r));
    }
    fn apply(&mut self, new: serde_json::Value) -> manifest::applied::Plan {
        let new = entries(new);
        let p = plan(&self.sup.applied_services(), &new);
        self.sup.apply_plan(&new, &p, &mut self.r);
        p
    }
    fn creates(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Create(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn each_kind_of_change_does_only_what_it_says() {
    let mut w = world(
        json!([svc("net", "A=1", &[])]),
        json!([
            svc("keep", "A=1", &[]),
            svc("edit", "A=1", &[]),
            svc("gone", "A=1", &[])
        ]),
    );
    let (net, keep, edit, gone) = (
        w.pid("net").unwrap(),
        w.pid("keep").unwrap(),
        w.pid("edit").unwrap(),
        w.pid("gone").unwrap(),
    );
    let p = w.apply(json!([
        svc("keep", "A=1", &[]),
        svc("edit", "A=2", &[]),
        svc("new", "A=1", &["net"])
    ]));
    assert_eq!((p.add.len(), p.change.len(), p.remove.len()), (1, 1, 1));
    // New starts at once (net is Ready); edit and gone were sent their stop signal.
    assert!(w.pid("new").is_some());
    assert_eq!(w.state("edit"), Some(State::Stopping));
    assert!(w.state("gone").is_none(), "removed is hidden at once");
    let kills: Vec<i32> = w
        .calls
        .borrow()
        .iter()
        .filter_map(|c| match c {
            Call::Kill(p, _) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(kills.len(), 2, "{kills:?}");
    assert!(kills.contains(&edit) && kills.contains(&gone));
    // The old runs exit: edit starts again with its new entry, gone stays down.
    w.exit("edit");
    assert!(w.sup.on_exit(gone, ExitStatus::Signal(15), &mut w.r));
    let new_edit = w.pid("edit").expect("edit runs again");
    assert_ne!(new_edit, edit);
    let i = w.sup.find("edit").unwrap();
    assert_eq!(w.sup.service(i).def().unwrap().env, vec!["A=2".to_string()]);
    assert_eq!(w.pid("keep"), Some(keep));
    assert_eq!(w.pid("net"), Some(net));
    let names: Vec<String> = w.sup.list().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["net", "keep", "edit", "new"]);
    assert_eq!(
        w.sup
            .applied_services()
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["keep", "edit", "new"]
    );
}

#[test]
fn changed_services_restart_after_what_they_depend_on() {
    let mut w = world(
        json!([]),
        json!([
            {"name": "db", "root": "/roots/busybox", "args": ["/bin/sh"], "env": ["A=1"],
             "readiness": {"kind": "file", "path": "/ready", "interval_ms": 10}},
            svc("web", "A=1", &["db"])
        ]),
    );
    // db never becomes Ready in the fake: web waits for it.
    assert!(w.pid("db").is_some());
    assert!(w.pid("web").is_none());
    w.apply(json!([
        {"name": "db", "root": "/roots/busybox", "args": ["/bin/sh"], "env": ["A=2"],
         "readiness": {"kind": "started"}},
        svc("web", "A=2", &["db"])
    ]));
    w.exit("db");
    // db started again (Ready at once now), and then web.
    let creates = w.creates();
    assert_eq!(creates, ["db", "db", "web"], "{creates:?}");
}

#[test]
fn a_removed_name_applied_again_takes_over_its_old_entry() {
    let mut w = world(json!([]), json!([svc("a", "A=1", &[])]));
    let old = w.pid("a").unwrap();
    w.apply(json!([]));
    assert!(w.state("a").is_none());
    w.apply(json!([svc("a", "A=2", &[])]));
    // The old run is still stopping; the new entry waits for its exit.
    assert_eq!(w.state("a"), Some(State::Stopping));
    assert!(w.sup.on_exit(old, ExitStatus::Signal(15), &mut w.r));
    assert!(w.pid("a").is_some_and(|p| p != old));
    assert_eq!(w.sup.list().len(), 1);
}

#[test]
fn system_services_are_told_apart() {
    let w = world(
        json!([svc("net", "A=1", &[])]),
        json!([svc("app", "A=1", &[])]),
    );
    assert!(w.sup.is_system_service("net"));
    assert!(!w.sup.is_system_service("app"));
    assert!(!w.sup.is_system_service("nosuch"));
}

#[test]
fn a_writable_applied_root_is_an_overlay_with_its_upper_on_the_state_partition() {
    let mut w = world(json!([]), json!([]));
    let state = w._dir.path().join("state");
    w.sup.set_state_dir(Some(state));
    let mut e = svc("rw", "A=1", &[]);
    e["readonly_root"] = json!(false);
    w.apply(json!([e, svc("ro", "A=1", &[])]));
    let mounts: Vec<Call> = w
        .calls
        .borrow()
        .iter()
        .filter(|c| matches!(c, Call::MountOverlay { .. }))
        .cloned()
        .collect();
    assert_eq!(mounts.len(), 1, "only the writable one: {mounts:?}");
    let Call::MountOverlay { lower, target } = &mounts[0] else {
        unreachable!()
    };
    assert_eq!(lower, "/roots/busybox");
    assert!(target.ends_with("run/roots/rw"), "{target}");
}
