use super::*;
use crate::load_str;

fn system() -> Loaded {
    load_str(
        r#"{"version":1,"services":[
            {"name":"net","root":"/containers/net","args":["/bin/net"]},
            {"name":"ssh","root":"/containers/ssh","args":["/bin/ssh"],"depends_on":["net"]}
        ]}"#,
        "/etc/sysctr/manifest.json",
    )
    .unwrap()
}

fn applied(services: &str) -> String {
    format!(r#"{{"version":1,"services":[{services}]}}"#)
}

fn join(system: &Loaded, text: String, image_known: &dyn Fn(&str) -> bool) -> Joined {
    super::join(system, &text, "applied.json", image_known).unwrap()
}

fn any_image(_: &str) -> bool {
    true
}

fn problems_of<'a>(j: &'a Joined, name: &str) -> Vec<&'a Problem> {
    j.rejected
        .iter()
        .filter(|r| r.name == name)
        .flat_map(|r| r.problems.iter())
        .collect()
}

#[test]
fn a_name_of_the_image_manifest_cannot_be_applied() {
    let j = join(
        &system(),
        applied(r#"{"name":"ssh","root":"/x","args":["/y"]}"#),
        &any_image,
    );
    assert!(j.services.is_empty());
    let p = problems_of(&j, "ssh");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "name");
    assert!(
        p[0].message.contains("system services cannot be replaced"),
        "{}",
        p[0]
    );
    assert!(
        p[0].message.contains("/etc/sysctr/manifest.json"),
        "{}",
        p[0]
    );
}

#[test]
fn a_clash_is_reported_even_for_an_entry_that_does_not_parse() {
    let j = join(
        &system(),
        applied(r#"{"name":"net","root":"/x","args":["/y"],"bogus":1}"#),
        &any_image,
    );
    let p = problems_of(&j, "net");
    assert!(p.iter().any(|p| p.field == "name"), "{p:?}");
    assert!(p.iter().any(|p| p.field == "bogus"), "{p:?}");
}

#[test]
fn applied_services_may_depend_on_system_services_but_not_on_unknown_ones() {
    let j = join(
        &system(),
        applied(
            r#"{"name":"web","root":"/x","args":["/y"],"depends_on":["net"]},
               {"name":"db","root":"/x","args":["/y"],"depends_on":["nosuch"]}"#,
        ),
        &any_image,
    );
    assert_eq!(j.services.len(), 1);
    assert_eq!(j.services[0].name, "web");
    let p = problems_of(&j, "db");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].message.contains("unknown dependency \"nosuch\""),
        "{}",
        p[0]
    );
}

#[test]
fn a_cycle_among_applied_services_rejects_each_member() {
    let j = join(
        &system(),
        applied(
            r#"{"name":"a","root":"/x","args":["/y"],"depends_on":["b"]},
               {"name":"b","root":"/x","args":["/y"],"depends_on":["a"]},
               {"name":"c","root":"/x","args":["/y"],"depends_on":["net"]}"#,
        ),
        &any_image,
    );
    assert_eq!(j.services.len(), 1);
    for n in ["a", "b"] {
        let p = problems_of(&j, n);
        assert!(p[0].message.contains("dependency cycle"), "{n}: {p:?}");
    }
}

#[test]
fn an_image_must_be_in_the_store_and_onboot_is_refused() {
    let known = |i: &str| i == "web:1";
    let j = join(
        &system(),
        applied(
            r#"{"name":"ok","image":"web:1","args":["/y"]},
               {"name":"gone","image":"web:2","args":["/y"]},
               {"name":"once","kind":"onboot","root":"/x","args":["/y"]}"#,
        ),
        &known,
    );
    assert_eq!(j.services.len(), 1);
    assert_eq!(j.services[0].name, "ok");
    let p = problems_of(&j, "gone");
    assert_eq!(p[0].field, "image");
    assert!(p[0].message.contains("no image \"web:2\""), "{}", p[0]);
    assert_eq!(problems_of(&j, "once")[0].field, "kind");
    assert!(j
        .describe("applied.json")
        .contains("applied.json: service \"gone\": image:"));
}

#[test]
fn root_and_image_are_exclusive_and_image_refs_are_checked() {
    for (entry, needle) in [
        (
            r#"{"name":"x","root":"/r","image":"a:1","args":["/y"]}"#,
            "not both",
        ),
        (r#"{"name":"x","image":"noTag","args":["/y"]}"#, "NAME:TAG"),
        (
            r#"{"name":"x","image":"UPPER:1","args":["/y"]}"#,
            "image name",
        ),
        (
            r#"{"name":"x","image":"a/../b:1","args":["/y"]}"#,
            "image name",
        ),
        (r#"{"name":"x","image":"a:b/c","args":["/y"]}"#, "tag"),
        (r#"{"name":"x","args":["/y"]}"#, "root"),
    ] {
        let j = join(&system(), applied(entry), &any_image);
        assert!(j.services.is_empty(), "{entry}");
        let text = j.describe("f");
        assert!(text.contains(needle), "{entry}: {text}");
    }
}

fn svc(name: &str, env: &str, deps: &[&str]) -> Service {
    let deps: Vec<String> = deps.iter().map(|d| format!("{d:?}")).collect();
    let text = format!(
        r#"{{"name":"{name}","root":"/r","args":["/y"],"env":["{env}"],"depends_on":[{}]}}"#,
        deps.join(",")
    );
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_plan_sorts_each_service_into_one_kind() {
    let current = vec![
        svc("keep", "A=1", &[]),
        svc("edit", "A=1", &[]),
        svc("gone", "A=1", &[]),
        svc("gone-dependent", "A=1", &["gone"]),
    ];
    let new = vec![
        svc("top", "A=1", &["edit"]),
        svc("edit", "A=2", &["new"]),
        svc("new", "A=1", &[]),
        svc("keep", "A=1", &[]),
    ];
    let p = plan(&current, &new);
    assert_eq!(p.add, vec!["new", "top"]);
    assert_eq!(p.change, vec!["edit"]);
    // Dependents go first.
    assert_eq!(p.remove, vec!["gone-dependent", "gone"]);
    assert_eq!(p.unchanged, vec!["keep"]);
    assert!(!p.is_empty());
    assert!(plan(&new, &new).is_empty());
}

#[test]
fn dependency_order_puts_dependencies_first() {
    let s = vec![
        svc("c", "A=1", &["b"]),
        svc("b", "A=1", &["a", "outside"]),
        svc("a", "A=1", &[]),
    ];
    assert_eq!(dependency_order(&s), vec!["a", "b", "c"]);
}

#[test]
fn the_file_text_loads_back_to_the_same_services() {
    let s = vec![svc("a", "A=1", &[]), svc("b", "B=2", &["a"])];
    let text = to_file_text(&s);
    let loaded = load_str(&text, "applied.json").unwrap();
    assert!(loaded.rejected.is_empty());
    assert_eq!(loaded.manifest.services, s);
}

#[test]
fn a_syntax_error_rejects_the_whole_file() {
    let e = super::join(&system(), "{\"version\":1,", "applied.json", &any_image).unwrap_err();
    assert!(e.to_string().starts_with("applied.json:1:"), "{e}");
}
