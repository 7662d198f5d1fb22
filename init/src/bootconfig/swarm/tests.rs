use super::*;
use crate::bootconfig::{parse, BootConfig, BootConfigError};

const TOKEN: &str =
    "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx";

fn swarm_of(json: &str) -> Result<Option<Swarm>, String> {
    parse(json.as_bytes(), "fw_cfg opt/sysctr/config")
        .map(|c| c.swarm)
        .map_err(|e| e.to_string())
}

#[test]
fn a_worker_and_a_manager_are_accepted_and_written_out() {
    let w = swarm_of(&format!(
        r#"{{"swarm":{{"role":"worker","manager":"10.77.0.11","token":"{TOKEN}","advertise":"10.77.0.12"}}}}"#
    ))
    .unwrap()
    .unwrap();
    w.check().unwrap();
    assert_eq!(
        w.env(),
        format!("ROLE=worker\nMANAGER=10.77.0.11:2377\nTOKEN={TOKEN}\nADVERTISE=10.77.0.12\n")
    );
    let m = swarm_of(r#"{"swarm":{"role":"manager","advertise":"eth0"}}"#)
        .unwrap()
        .unwrap();
    m.check().unwrap();
    assert_eq!(m.env(), "ROLE=manager\nADVERTISE=eth0\n");
    // the token never shows in Debug output (logs, test failures)
    assert!(!format!("{w:?}").contains("3pu6hszj"));
}

#[test]
fn bad_values_name_the_field_and_never_the_token() {
    let err = swarm_of(r#"{"swarm":{"role":"boss"}}"#).unwrap_err();
    assert!(
        err.starts_with("fw_cfg opt/sysctr/config: field swarm.role: unknown variant `boss`"),
        "{err}"
    );
    assert!(err.contains("expected `manager` or `worker`"), "{err}");

    let err = swarm_of(r#"{"swarm":{"role":"worker","manager":"10.77.0.11:99999"}}"#).unwrap_err();
    assert!(
        err.contains(
            "field swarm.manager: \"10.77.0.11:99999\": the port is not a number from 1 to 65535"
        ),
        "{err}"
    );
    let err = swarm_of(r#"{"swarm":{"manager":"bad_host!:2377"}}"#).unwrap_err();
    assert!(
        err.contains("field swarm.manager") && err.contains("neither an IP address nor a DNS name"),
        "{err}"
    );
    let err = swarm_of(r#"{"swarm":{"manager":"[fe80::1:2377"}}"#).unwrap_err();
    assert!(err.contains("no ] after the IPv6 address"), "{err}");

    let secret = "SWMTKN-1-abc$(reboot)defghijkl";
    let err = swarm_of(&format!(r#"{{"swarm":{{"token":"{secret}"}}}}"#)).unwrap_err();
    assert!(
        err.contains("field swarm.token: a swarm join token holds only letters"),
        "{err}"
    );
    assert!(!err.contains("reboot"), "the token leaked into {err}");
    let err = swarm_of(r#"{"swarm":{"token":"hunter2hunter2"}}"#).unwrap_err();
    assert!(
        err.contains("must start with SWMTKN-1-") && !err.contains("hunter2"),
        "{err}"
    );
    let err = swarm_of(r#"{"swarm":{"token":"SWMTKN-1-short"}}"#).unwrap_err();
    assert!(
        err.contains("10 to 200 characters") && !err.contains("short"),
        "{err}"
    );

    let err = swarm_of(r#"{"swarm":{"advertise":"10.77.0.300"}}"#).unwrap_err();
    assert!(
        err.contains(
            "field swarm.advertise: \"10.77.0.300\": expected an IP address or an interface name"
        ),
        "{err}"
    );
    let err = swarm_of(r#"{"swarm":{"role":"manager","tokn":"x"}}"#).unwrap_err();
    assert!(err.contains("unknown field `tokn`"), "{err}");
    let err = swarm_of(r#"{"swarm":{"manager":7}}"#).unwrap_err();
    assert!(err.contains("field swarm.manager: invalid type"), "{err}");
}

#[test]
fn addresses_get_their_port() {
    assert_eq!(manager_addr("10.0.0.1").unwrap(), "10.0.0.1:2377");
    assert_eq!(manager_addr("10.0.0.1:4000").unwrap(), "10.0.0.1:4000");
    assert_eq!(manager_addr("mgr.lan").unwrap(), "mgr.lan:2377");
    assert_eq!(manager_addr("fd00::1").unwrap(), "[fd00::1]:2377");
    assert_eq!(manager_addr("[fd00::1]:4000").unwrap(), "[fd00::1]:4000");
    assert_eq!(manager_addr("[fd00::1]").unwrap(), "[fd00::1]:2377");
    for bad in [
        "",
        ":2377",
        "10.0.0.1:",
        "10.0.0.1:0",
        "10.0.0.1:x",
        "[fd00::1]x",
        "-a.lan",
        "a..b",
    ] {
        assert!(manager_addr(bad).is_err(), "{bad:?} was accepted");
    }
    assert_eq!(advertise_addr("fd00::2").unwrap(), "fd00::2");
    for bad in ["", "0eth", "a very long interface", "eth0;reboot"] {
        assert!(advertise_addr(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn checks_across_fields_after_the_merge() {
    let check = |s: Swarm| s.check().unwrap_err();
    let err = check(Swarm {
        role: Some(Role::Worker),
        ..Default::default()
    });
    assert!(
        matches!(&err, BootConfigError::SwarmWorkerNeeds { missing } if *missing == ["manager", "token"]),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("swarm: role worker needs swarm.manager and swarm.token (the manager's"),
        "{err}"
    );
    let err = check(Swarm {
        role: Some(Role::Worker),
        manager: Some("10.0.0.1:2377".into()),
        ..Default::default()
    });
    assert!(
        err.to_string().contains("role worker needs swarm.token ("),
        "{err}"
    );
    let err = check(Swarm {
        role: Some(Role::Manager),
        token: Some(join_token(TOKEN).unwrap()),
        ..Default::default()
    });
    assert!(
        matches!(&err, BootConfigError::SwarmManagerGiven { extra } if *extra == ["token"]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "swarm: role manager initialises a swarm; swarm.token only apply to role worker"
    );
    assert!(!err.to_string().contains("3pu6hszj"));
    let err = check(Swarm {
        advertise: Some("eth0".into()),
        ..Default::default()
    });
    assert!(matches!(err, BootConfigError::SwarmNoRole), "{err:?}");
    assert!(err.to_string().starts_with("swarm.role: missing"), "{err}");
}

#[test]
fn the_command_line_sets_fields_but_never_the_token() {
    // the ESP says worker with a token; the command line moves it to another manager
    let mut cfg = parse(
        format!(r#"{{"swarm":{{"role":"worker","manager":"10.0.0.1","token":"{TOKEN}"}}}}"#)
            .as_bytes(),
        "esp",
    )
    .unwrap();
    cfg.merge(
        BootConfig::from_cmdline(
            "quiet sysctr.swarm.manager=10.0.0.9:3000 sysctr.swarm.advertise=10.0.0.5",
        )
        .unwrap(),
    );
    let s = cfg.swarm.clone().unwrap();
    assert_eq!(s.role, Some(Role::Worker));
    assert_eq!(s.manager.as_deref(), Some("10.0.0.9:3000"));
    assert_eq!(s.advertise.as_deref(), Some("10.0.0.5"));
    assert_eq!(s.token.as_ref().map(Token::expose), Some(TOKEN));

    let cmdline_err = |line: &str| BootConfig::from_cmdline(line).unwrap_err();
    let err = cmdline_err(&format!("sysctr.swarm.token={TOKEN}"));
    assert!(
        matches!(err, BootConfigError::SwarmTokenOnCmdline),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(
            "kernel command line: sysctr.swarm.token: a join token may not be on the kernel command line"
        ),
        "{text}"
    );
    assert!(!text.contains("3pu6hszj"), "{text}");
    let err = cmdline_err("sysctr.swarm.role=leader");
    assert!(
        matches!(
            &err,
            BootConfigError::SwarmCmdline { key: "role", reason: SwarmValueError::Role { value } }
                if value == "leader"
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "kernel command line: sysctr.swarm.role: \"leader\": expected manager or worker"
    );
    // an unknown key is named, its value (maybe a token under a misspelt key) is not
    let err = cmdline_err(&format!("sysctr.swarm.tokn={TOKEN}"));
    assert!(
        matches!(&err, BootConfigError::SwarmUnknownSetting { key } if key == "tokn"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("sysctr.swarm.tokn: unknown swarm setting") && !text.contains("3pu6hszj"),
        "{text}"
    );
    let err = cmdline_err("sysctr.swarm.manager=10.0.0.1:0");
    assert!(
        matches!(
            &err,
            BootConfigError::SwarmCmdline {
                key: "manager",
                reason: SwarmValueError::Manager { .. }
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("sysctr.swarm.manager: \"10.0.0.1:0\": the port is not a number"),
        "{err}"
    );
    let err = cmdline_err("quiet sysctr.swarm.advertise=");
    assert!(
        matches!(
            &err,
            BootConfigError::SwarmCmdline {
                key: "advertise",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_invalid_merged_swarm_is_dropped_with_the_reason() {
    let mut cfg = parse(br#"{"hostname":"n1","swarm":{"role":"worker"}}"#, "esp").unwrap();
    let err = cfg.drop_invalid_swarm().unwrap();
    assert!(
        matches!(err, BootConfigError::SwarmWorkerNeeds { .. }),
        "{err:?}"
    );
    assert_eq!(cfg.swarm, None);
    assert_eq!(cfg.hostname.as_deref(), Some("n1"));
    let mut cfg = parse(br#"{"swarm":{"role":"manager"}}"#, "esp").unwrap();
    assert!(cfg.drop_invalid_swarm().is_none());
    assert!(cfg.swarm.is_some());
    assert!(BootConfig::default().drop_invalid_swarm().is_none());
}
