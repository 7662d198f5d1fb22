//! One test per kind of manifest problem, each asserting the exact message an operator sees.

use manifest::{load_str, LoadError, Loaded};

fn load(services: &str) -> Loaded {
    load_str(
        &format!(r#"{{"version": 1, "services": [{services}]}}"#),
        "m.json",
    )
    .expect("file-level load succeeds")
}

/// The messages of the rejected entry `name`, as `describe` prints them.
fn problems(loaded: &Loaded, name: &str) -> Vec<String> {
    loaded
        .rejected
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{name} was not rejected: {loaded:#?}"))
        .problems
        .iter()
        .map(|p| p.describe("m.json"))
        .collect()
}

const OK: &str = r#"{"name": "ok", "root": "/c/ok", "args": ["/bin/ok"]}"#;

#[test]
fn syntax_error_has_line_and_column() {
    let err = load_str(
        "{\n  \"version\": 1,\n  \"services\": [\n    {\"name\": \"a\",}\n  ]\n}",
        "m.json",
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Syntax { line: 4, .. }), "{err:?}");
    assert_eq!(err.to_string(), "m.json:4:18: syntax error: trailing comma");
}

#[test]
fn wrong_version_rejects_the_file() {
    let err = load_str(r#"{"version": 2, "services": []}"#, "m.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.json: version: version 2 is not supported (this build reads version 1)"
    );
}

#[test]
fn duplicate_names() {
    let l = load(&format!("{OK}, {OK}"));
    assert_eq!(
        problems(&l, "ok"),
        ["m.json: service \"ok\": name: duplicate service name (names must be unique)"]
    );
    assert!(l.manifest.services.is_empty());
}

#[test]
fn unknown_dependency() {
    let l = load(&format!(
        r#"{OK}, {{"name": "web", "root": "/c/web", "args": ["/w"], "depends_on": ["db"]}}"#
    ));
    assert_eq!(
        problems(&l, "web"),
        ["m.json: service \"web\": depends_on: unknown dependency \"db\""]
    );
    assert_eq!(l.manifest.services.len(), 1, "the valid service still runs");
}

#[test]
fn dependency_cycle_is_printed() {
    let l = load(
        r#"{"name": "a", "root": "/c", "args": ["/a"], "depends_on": ["b"]},
           {"name": "b", "root": "/c", "args": ["/b"], "depends_on": ["c"]},
           {"name": "c", "root": "/c", "args": ["/c"], "depends_on": ["a"]}"#,
    );
    assert_eq!(
        problems(&l, "a"),
        ["m.json: service \"a\": depends_on: dependency cycle: a -> b -> c -> a"]
    );
    assert_eq!(
        problems(&l, "c"),
        ["m.json: service \"c\": depends_on: dependency cycle: a -> b -> c -> a"]
    );
}

#[test]
fn bad_restart_policy() {
    let l =
        load(r#"{"name": "a", "root": "/c", "args": ["/a"], "restart": {"policy": "sometimes"}}"#);
    assert_eq!(
        problems(&l, "a"),
        ["m.json: service \"a\": restart.policy: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"]
    );
}

#[test]
fn malformed_resource_values() {
    let l = load(
        r#"{"name": "a", "root": "/c", "args": ["/a"], "resources": {"memory_max": "lots", "pids_max": 0, "cpu_weight": 20000}}"#,
    );
    assert_eq!(
        problems(&l, "a"),
        [
            "m.json: service \"a\": resources.memory_max: \"lots\" is not a size (expected e.g. \"64M\" or \"1048576\")",
            "m.json: service \"a\": resources.pids_max: 0 is below the minimum of 1",
            "m.json: service \"a\": resources.cpu_weight: 20000 is outside 1..=10000",
        ]
    );
    let l = load(r#"{"name": "b", "root": "/c", "args": ["/b"], "resources": {"memory_max": 12}}"#);
    assert_eq!(problems(&l, "b"), ["m.json: service \"b\": resources.memory_max: invalid type: integer `12`, expected a string"]);
}

#[test]
fn relative_paths() {
    let l = load(
        r#"{"name": "a", "root": "containers/a", "args": ["/a"], "cwd": "srv",
            "mounts": [{"source": "data", "destination": "/data"}], "devices": ["ttyS0"],
            "readiness": {"kind": "file", "path": "run/ready"}}"#,
    );
    assert_eq!(
        problems(&l, "a"),
        [
            "m.json: service \"a\": root: \"containers/a\" must be an absolute path",
            "m.json: service \"a\": cwd: \"srv\" must be an absolute path",
            "m.json: service \"a\": mounts[0].source: \"data\" must be an absolute path",
            "m.json: service \"a\": devices[0]: \"ttyS0\" must be an absolute path",
            "m.json: service \"a\": readiness.path: \"run/ready\" must be an absolute path",
        ]
    );
}

#[test]
fn unknown_field_and_missing_field() {
    let l = load(
        r#"{"name": "a", "root": "/c", "args": ["/a"], "restat": {}}, {"name": "b", "args": ["/b"]}"#,
    );
    let a = problems(&l, "a");
    assert_eq!(a.len(), 1);
    assert!(
        a[0].starts_with(
            "m.json: service \"a\": restat: unknown field, expected one of `name`, `kind`, `root`"
        ),
        "{a:?}"
    );
    assert_eq!(
        problems(&l, "b"),
        ["m.json: service \"b\": root: required field is missing (or name an \"image\" of the store instead)"]
    );
}

#[test]
fn names_signals_capabilities_env() {
    let l = load(
        r#"{"name": "Bad Name", "root": "/c", "args": ["/a"]},
           {"name": "x", "root": "/c", "args": ["/x"], "stop": {"signal": "SIGNOPE"},
            "capabilities": ["CAP_FLY"], "env": ["NOEQUALS"], "log_buffer": "1K"}"#,
    );
    assert_eq!(
        problems(&l, "Bad Name"),
        ["m.json: service \"Bad Name\": name: must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit"]
    );
    assert_eq!(
        problems(&l, "x"),
        [
            "m.json: service \"x\": capabilities[0]: unknown capability \"CAP_FLY\"",
            "m.json: service \"x\": stop.signal: unknown signal \"SIGNOPE\"",
            "m.json: service \"x\": env[0]: \"NOEQUALS\" is not KEY=VALUE",
            "m.json: service \"x\": log_buffer: \"1K\" is below the 4K minimum",
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_and_good_services_survive() {
    let l = load(&format!(
        r#"{OK}, {{"name": "a", "root": "rel", "args": [], "resources": {{"cpu_weight": 0}}}}"#
    ));
    assert_eq!(problems(&l, "a").len(), 3);
    assert_eq!(l.manifest.services.len(), 1);
    assert_eq!(l.manifest.services[0].name, "ok");
}

#[test]
fn the_documented_example_is_valid() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/manifest.md"))
        .unwrap();
    let start = doc
        .find("```json\n{\n  \"version\"")
        .expect("complete example in docs/manifest.md")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let l = load_str(&doc[start..end], "docs/manifest.md").unwrap();
    assert!(l.rejected.is_empty(), "{:#?}", l.rejected);
    assert_eq!(l.manifest.services.len(), 2);
}

#[test]
fn host_dirs_outside_run_and_var_or_on_pid1s_paths_are_refused() {
    let l = load(
        r#"{"name": "d", "root": "/c/d", "args": ["/bin/d"], "host_dirs": [
            "run/net", "/var/../etc", "/etc/x", "/run", "/var/", "/runner/x",
            "/run/sysctr", "/run/sysctr/containers/x", "/var/log/sysctr/x", "/var/lib/sysctr"]}"#,
    );
    assert_eq!(
        problems(&l, "d"),
        [
            r#"m.json: service "d": host_dirs[0]: "run/net" must be an absolute path"#,
            r#"m.json: service "d": host_dirs[1]: "/var/../etc" must not contain "..""#,
            r#"m.json: service "d": host_dirs[2]: "/etc/x" must be below /run or /var"#,
            r#"m.json: service "d": host_dirs[3]: "/run" must be below /run or /var"#,
            r#"m.json: service "d": host_dirs[4]: "/var/" must be below /run or /var"#,
            r#"m.json: service "d": host_dirs[5]: "/runner/x" must be below /run or /var"#,
            r#"m.json: service "d": host_dirs[6]: "/run/sysctr": /run/sysctr contains /run/sysctr/control.sock, which belongs to the kernel or PID 1; mount a directory below it instead"#,
            r#"m.json: service "d": host_dirs[7]: "/run/sysctr/containers/x": /run/sysctr/containers belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged"#,
            r#"m.json: service "d": host_dirs[8]: "/var/log/sysctr/x": /var/log/sysctr belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged"#,
            r#"m.json: service "d": host_dirs[9]: "/var/lib/sysctr": /var/lib/sysctr contains /var/lib/sysctr/boot, which belongs to the kernel or PID 1; mount a directory below it instead"#,
        ]
    );
}

#[test]
fn host_dirs_below_run_and_var_are_kept() {
    let l = load(
        r#"{"name": "d", "root": "/c/d", "args": ["/bin/d"],
            "host_dirs": ["/run/sysctr/net", "/var/lib/sysctr/ssh", "/var/log/syslog/"]}"#,
    );
    assert!(l.rejected.is_empty(), "{:#?}", l.rejected);
    assert_eq!(
        l.manifest.services[0].host_dirs,
        ["/run/sysctr/net", "/var/lib/sysctr/ssh", "/var/log/syslog/"]
    );
}

/// A service may depend on an entry that is rejected (it shows as failed, and its dependents
/// wait for it): the accepted part, written out, loads again beside the rejected names, as
/// the load_manifest fuzz target checks (its corpus keeps the input that found this).
#[test]
fn a_dependency_on_a_rejected_entry_is_not_unknown() {
    let loaded = load(
        r#"{"name": "web", "root": "/c/web", "args": ["/bin/httpd"], "depends_on": ["net"]},
           {"name": "net", "root": "/c/net", "args": ["/bin/net"], "timekind": "onboot"}"#,
    );
    assert_eq!(
        loaded
            .manifest
            .services
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert!(
        problems(&loaded, "net")[0].contains("timekind"),
        "{:?}",
        problems(&loaded, "net")
    );
    let again = serde_json::to_string(&loaded.manifest).unwrap();
    let alone = load_str(&again, "again.json").unwrap();
    assert_eq!(
        problems(&alone, "web"),
        ["m.json: service \"web\": depends_on: unknown dependency \"net\""]
    );
    let beside =
        manifest::load::load_str_beside(&again, "again.json", &["net".to_string()].into()).unwrap();
    assert!(beside.rejected.is_empty(), "{:?}", beside.rejected);
    assert_eq!(beside.manifest, loaded.manifest);
}
