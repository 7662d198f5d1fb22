//! Keeps `docs/api.md` honest: every JSON example in it must decode as the request or reply
//! it shows, and every op and reply must have an example.

use manifest::protocol::{self, Op, Request, Response};
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../docs/api.md");

/// The bodies of the ```json blocks.
fn json_blocks() -> Vec<&'static str> {
    DOC.split("```json\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap())
        .collect()
}

#[test]
fn every_json_example_decodes() {
    let mut ops = BTreeSet::new();
    let mut replies = BTreeSet::new();
    let blocks = json_blocks();
    assert!(blocks.len() > 20, "found only {} examples", blocks.len());
    for block in blocks {
        let value: serde_json::Value =
            serde_json::from_str(block).unwrap_or_else(|e| panic!("{e} in\n{block}"));
        if let Some(op) = value.get("op").and_then(|v| v.as_str()) {
            protocol::decode_request(block.as_bytes())
                .unwrap_or_else(|e| panic!("request example does not decode: {e}\n{block}"));
            ops.insert(op.to_string());
        } else if let Some(reply) = value.get("reply").and_then(|v| v.as_str()) {
            serde_json::from_str::<Response>(block)
                .unwrap_or_else(|e| panic!("reply example does not decode: {e}\n{block}"));
            replies.insert(reply.to_string());
        } else {
            panic!("example is neither a request nor a reply:\n{block}");
        }
    }
    let all_ops = [
        "version",
        "ps",
        "inspect",
        "logs",
        "kernel_log",
        "events",
        "start",
        "stop",
        "restart",
        "exec",
        "power",
    ];
    let all_replies = [
        "version",
        "services",
        "inspect",
        "log",
        "event",
        "ok",
        "exec_started",
        "exec_exited",
        "error",
        "end",
    ];
    for op in all_ops {
        assert!(ops.contains(op), "docs/api.md has no example of op {op:?}");
    }
    for reply in all_replies {
        assert!(
            replies.contains(reply),
            "docs/api.md has no example of reply {reply:?}"
        );
    }
}

#[test]
fn the_framing_example_is_exact() {
    let frame = protocol::encode(&Request::new(Op::Ps {}));
    let hex: Vec<String> = frame.iter().map(|b| format!("{b:02x}")).collect();
    let (len, body) = hex.split_at(4);
    let line = format!("{}  {}", len.join(" "), body.join(" "));
    assert!(
        DOC.contains(&line),
        "docs/api.md should show the frame\n{line}"
    );
    assert!(DOC.contains(&format!(
        "{}   ({} bytes)",
        std::str::from_utf8(&frame[4..]).unwrap(),
        frame.len() - 4
    )));
}
