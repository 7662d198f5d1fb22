use super::nodes::exited;
use super::*;
use clap::{Args, FromArgMatches};
use std::process::Command;
use std::time::{Duration, Instant};

fn node_fragments_dir() -> PathBuf {
    workspace_root().join("kernel-config").join("node")
}

fn cluster(words: &[&str]) -> Result<ClusterArgs, clap::Error> {
    let cmd = ClusterArgs::augment_args(clap::Command::new("cluster"));
    let m = cmd.try_get_matches_from(std::iter::once("cluster").chain(words.iter().copied()))?;
    ClusterArgs::from_arg_matches(&m)
}

fn cluster_test(words: &[&str]) -> Result<ClusterTestArgs, clap::Error> {
    let cmd = ClusterTestArgs::augment_args(clap::Command::new("cluster-test"));
    let m =
        cmd.try_get_matches_from(std::iter::once("cluster-test").chain(words.iter().copied()))?;
    ClusterTestArgs::from_arg_matches(&m)
}

#[test]
fn options_default_to_three_nodes_of_one_gib() {
    let a = cluster(&[]).unwrap();
    let o = &a.node;
    assert_eq!((a.nodes, o.memory, o.cpus, o.state_gib), (3, 1024, 1, 4));
    assert_eq!(o.netns, "sysctr-cluster");
    assert!(!o.kvm && !o.no_build && a.only.is_none());
    let a = cluster(&["--nodes", "5", "--tcg", "--memory", "768"]).unwrap();
    assert_eq!((a.nodes, a.node.memory, a.node.kvm), (5, 768, false));
    assert!(cluster_test(&["--kvm"]).unwrap().node.kvm);
    assert_eq!(cluster(&["kernel"]).unwrap().only, Some(BuildOnly::Kernel));
    assert_eq!(cluster(&["image"]).unwrap().only, Some(BuildOnly::Image));
    let a = cluster(&[
        "--netns",
        "ci_7",
        "--state-gib",
        "64",
        "--cpus",
        "4",
        "--no-build",
    ])
    .unwrap();
    assert_eq!(
        (a.node.netns.as_str(), a.node.state_gib, a.node.cpus),
        ("ci_7", 64, 4)
    );
    assert!(a.node.no_build);
}

#[test]
fn bad_options_name_the_option_and_the_range() {
    let err = |r: Result<ClusterArgs, clap::Error>| r.unwrap_err().to_string();
    let e = err(cluster(&["--nodes", "0"]));
    assert!(e.contains("'--nodes <N>'") && e.contains("1..=9"), "{e}");
    let e = err(cluster(&["--nodes", "10"]));
    assert!(e.contains("'--nodes <N>'") && e.contains("1..=9"), "{e}");
    assert!(err(cluster(&["--nodes", "x"])).contains("'x' for '--nodes <N>'"));
    assert!(err(cluster(&["--nodes"])).contains("a value is required for '--nodes <N>'"));
    let e = err(cluster(&["--memory", "2048"]));
    assert!(
        e.contains("'--memory <MB>'") && e.contains("256..=1024"),
        "{e}"
    );
    assert!(err(cluster(&["--cpus", "0"])).contains("'--cpus <N>'"));
    assert!(err(cluster(&["--state-gib", "0"])).contains("'--state-gib <N>'"));
    let e = err(cluster(&["--netns", "a/b"]));
    assert!(
        e.contains("\"a/b\": expected 1-32 letters, digits, - or _"),
        "{e}"
    );
    assert!(err(cluster(&["--netns", ""])).contains("\"\": expected 1-32"));
    let long = "n".repeat(33);
    assert!(err(cluster(&["--netns", &long])).contains("expected 1-32"));
    assert!(err(cluster(&["--kvm", "--tcg"])).contains("cannot be used with"));
    assert!(err(cluster(&["--bogus"])).contains("unexpected argument '--bogus'"));
    // a build-only step takes no boot options
    assert!(cluster(&["kernel", "--nodes", "2"]).is_err());
    assert!(cluster(&["--nodes", "2", "kernel"]).is_err());
    // the test always runs 3 nodes
    let e = cluster_test(&["--nodes", "2"]).unwrap_err().to_string();
    assert!(e.contains("unexpected argument '--nodes'"), "{e}");
}

#[test]
fn a_zombie_or_missing_process_counts_as_exited() {
    let mut child = Command::new("true").spawn().unwrap();
    // not reaped yet: a zombie once it has exited
    let deadline = Instant::now() + Duration::from_secs(10);
    while exited(&child).unwrap().is_none() {
        assert!(Instant::now() < deadline, "true did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait().unwrap();
    assert!(exited(&child).unwrap().is_some());
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    assert_eq!(exited(&sleeper).unwrap(), None);
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn the_node_fragment_only_adds_to_the_default_kernel() {
    // kernel-config/node/ is a subdirectory: the default kernel's fragment list (and so
    // its cache hash) does not include it; the node appliance names every fragment in it.
    let base = kernel::fragments().unwrap();
    assert!(base.iter().all(|f| !f.starts_with(node_fragments_dir())));
    let node = kernel::fragments_in(&node_fragments_dir()).unwrap();
    let appliance = rootfs::appliance::load(&node_appliance()).unwrap();
    let named: Vec<PathBuf> = appliance
        .kernel_fragments()
        .iter()
        .map(|f| fs::canonicalize(f).unwrap())
        .collect();
    for f in &node {
        assert!(
            named.contains(&fs::canonicalize(f).unwrap()),
            "{}",
            f.display()
        );
    }
    // every option in it carries a comment line above it (kernel-config/README.md)
    for f in node {
        let text = fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("CONFIG_") {
                let above = lines[..i]
                    .iter()
                    .rev()
                    .find(|p| !p.starts_with("CONFIG_"))
                    .unwrap();
                assert!(
                    above.starts_with('#'),
                    "{}: {l} has no comment",
                    f.display()
                );
            }
        }
    }
}
