//! Talking to the nodes from the host side of the namespace: ssh, polling with a bound, and
//! what the manager and the routing mesh answer.

use super::nodes::{exited, Cluster, Node};
use super::WEB_PORT;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Cluster {
    /// Runs `cmd` on a node through ssh (the client runs inside the namespace).
    pub(super) fn ssh(&self, node: &Node, cmd: &str) -> Result<String> {
        self.ssh_inner(node, cmd, None)
    }

    pub(super) fn ssh_stdin(&self, node: &Node, cmd: &str, input: &Path) -> Result<String> {
        self.ssh_inner(node, cmd, Some(input))
    }

    fn ssh_inner(&self, node: &Node, cmd: &str, input: Option<&Path>) -> Result<String> {
        let mut c = Command::new("ip");
        // The boot tests' ssh options (no host key checks, no prompt, a bounded connect) on
        // the node's own port 22: the namespace needs no forward.
        c.args(["netns", "exec", &self.netns, "ssh"])
            .args(harness::qemu::ssh_options(&self.key, 22))
            .arg(format!("root@{}", node.addr))
            .arg(cmd);
        c.stdin(match input {
            Some(p) => Stdio::from(
                fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            None => Stdio::null(),
        });
        let out = c.output().context("cannot run ssh")?;
        if !out.status.success() {
            bail!(
                "{}: `{cmd}` failed ({}): {}",
                node.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `f` every 2 s until it gives a value or `timeout` passes; the error names what was
    /// awaited, the last failure and where the consoles are.
    pub(super) fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut last: String;
        let mut reported = Instant::now();
        loop {
            match f() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = "(not yet)".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {}s waiting for {what}; last: {last}; consoles in {}",
                    timeout.as_secs(),
                    self.dir.display()
                );
            }
            if reported.elapsed() > Duration::from_secs(30) {
                reported = Instant::now();
                eprintln!(
                    "cluster: still waiting for {what} ({}s; last: {})",
                    start.elapsed().as_secs(),
                    last.lines().next().unwrap_or_default()
                );
            }
            // A node whose QEMU died will not come back: say so at once.
            for (i, child) in self.children.iter().enumerate() {
                if let Some(c) = child {
                    if let Ok(Some(status)) = exited(c) {
                        bail!(
                            "{}'s QEMU exited ({status}) while waiting for {what}; see {}",
                            self.nodes[i].name,
                            self.nodes[i].console.display()
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The swarm nodes the manager sees as Ready.
    pub(super) fn ready_nodes(&self, manager: &Node) -> Result<Vec<String>> {
        let out = self.ssh(
            manager,
            "docker node ls --format '{{.Hostname}} {{.Status}}'",
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (name, status) = (w.next()?, w.next()?);
                (status == "Ready").then(|| name.to_string())
            })
            .collect())
    }

    /// The nodes of web's tasks that are Running and meant to be (one entry per task).
    pub(super) fn running_tasks(&self, manager: &Node) -> Result<Vec<String>> {
        let out = self.ssh(
            manager,
            "docker service ps web --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'",
        )?;
        let mut nodes: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (node, state) = (w.next()?, w.next()?);
                (state == "Running").then(|| node.to_string())
            })
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Fetches the published port of every node 6 times from the host side of the namespace
    /// (curl inside it). Each answer is the replica's hostname (`nodeX-SLOT`).
    pub(super) fn mesh_answers(&self, nodes: &[Node]) -> Result<Vec<(String, Vec<String>)>> {
        let mut all = Vec::new();
        for node in nodes {
            let mut answers = Vec::new();
            for _ in 0..6 {
                let out = Command::new("ip")
                    .args(["netns", "exec", &self.netns, "curl", "-sS", "-m", "5"])
                    .arg(format!("http://{}:{WEB_PORT}/", node.addr))
                    .output()
                    .context("cannot run curl")?;
                let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || !body.starts_with("node") {
                    bail!(
                        "http://{}:{WEB_PORT}/ ({}): {} {}",
                        node.addr,
                        node.name,
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                answers.push(body);
            }
            answers.sort();
            answers.dedup();
            all.push((node.name.clone(), answers));
        }
        Ok(all)
    }
}
