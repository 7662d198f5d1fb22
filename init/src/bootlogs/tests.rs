//! Unit tests of the per-boot logs on temp directories: numbering and pruning, reading
//! back, rotation, bad requests, planted symlinks, the read budget.

use super::*;

fn root() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().join("log");
    (t, r)
}

fn put(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(SERVICES_DIR).join(name), text).unwrap();
}

#[test]
fn boots_count_up_and_old_ones_are_removed() {
    let (_t, r) = root();
    let first = start(&r, "id-1", 1000).unwrap();
    assert_eq!(first, r.join("boots/1"));
    put(&first, "ssh.log", "1000 stdout first boot\n");
    for i in 2..=KEEP_BOOTS + 2 {
        let d = start(&r, &format!("id-{i}"), 1000 * i as u64).unwrap();
        assert_eq!(d, r.join(format!("boots/{i}")));
    }
    let boots = list(&r).unwrap();
    assert_eq!(boots.len(), KEEP_BOOTS);
    assert_eq!(boots.first().unwrap().seq, 3);
    assert_eq!(boots.first().unwrap().index, 1 - KEEP_BOOTS as i64);
    let last = boots.last().unwrap();
    assert_eq!((last.index, last.seq), (0, KEEP_BOOTS as u64 + 2));
    assert_eq!(last.boot_id, format!("id-{}", KEEP_BOOTS + 2));
    assert!(!r.join("boots/1").exists() && !r.join("boots/2").exists());
}

#[test]
fn the_previous_boot_is_read_back() {
    let (_t, r) = root();
    let one = start(&r, "a", 1).unwrap();
    put(&one, "ssh.log", "10 stdout old one\n11 stderr old two\n");
    fs::write(one.join(INIT_LOG), "12 stdout INFO [init] starting\n").unwrap();
    let two = start(&r, "b", 2).unwrap();
    put(&two, "ssh.log", "20 stdout new\n");
    let prev = read(&r, -1, Some("ssh"), None).unwrap();
    let lines: Vec<(u64, &str)> = prev.iter().map(|e| (e.ts_ms, e.line.as_str())).collect();
    assert_eq!(lines, vec![(10, "old one"), (11, "old two")]);
    assert_eq!(prev[1].stream, Stream::Stderr);
    assert_eq!(read(&r, 0, Some("ssh"), None).unwrap()[0].line, "new");
    assert_eq!(
        read(&r, -1, Some("ssh"), Some(1)).unwrap()[0].line,
        "old two"
    );
    assert_eq!(
        read(&r, -1, None, None).unwrap()[0].line,
        "INFO [init] starting"
    );
    let boots = list(&r).unwrap();
    assert_eq!(boots[0].services, vec!["ssh".to_string()]);
    assert_eq!(boots[0].index, -1);
}

#[test]
fn rotated_files_are_read_oldest_first() {
    let (_t, r) = root();
    let d = start(&r, "a", 1).unwrap();
    put(&d, "w.log.2", "1 stdout a\n");
    put(&d, "w.log.1", "2 stdout b\n");
    put(&d, "w.log", "3 stdout c\n");
    let got: Vec<String> = read(&r, 0, Some("w"), None)
        .unwrap()
        .into_iter()
        .map(|e| e.line)
        .collect();
    assert_eq!(got, ["a", "b", "c"]);
}

#[test]
fn bad_requests_name_what_is_wrong() {
    let (_t, r) = root();
    start(&r, "a", 1).unwrap();
    start(&r, "b", 2).unwrap();
    let e = read(&r, -2, Some("ssh"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "boot -2 is not kept: --boot takes 0 (this boot) down to -1"
    );
    assert!(matches!(
        read(&r, 1, Some("ssh"), None),
        Err(BootLogError::NoSuchBoot { boot: 1, .. })
    ));
    assert!(matches!(
        read(&r, i64::MIN, None, None),
        Err(BootLogError::NoSuchBoot { .. })
    ));
    for name in ["../../etc/passwd", "..", ".", "", "a/b", "x\0y"] {
        assert!(
            matches!(
                read(&r, 0, Some(name), None),
                Err(BootLogError::BadName { .. })
            ),
            "{name:?}"
        );
    }
    let e = read(&r, -1, Some("ghost"), None).unwrap_err();
    assert_eq!(e.to_string(), "boot -1 has no log of service ghost");
}

#[test]
fn planted_symlinks_are_refused() {
    let (t, r) = root();
    let d = start(&r, "a", 1).unwrap();
    let secret = t.path().join("secret");
    fs::write(&secret, "1 stdout the host's secret\n").unwrap();
    std::os::unix::fs::symlink(&secret, d.join(SERVICES_DIR).join("ssh.log")).unwrap();
    let e = read(&r, 0, Some("ssh"), None).unwrap_err();
    assert!(e.to_string().contains("a symlink is refused"), "{e}");
    // A symlinked boot directory is not a kept boot; a symlinked boots dir is refused.
    let other = t.path().join("other");
    fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(&other, r.join("boots/7")).unwrap();
    assert_eq!(list(&r).unwrap().len(), 1);
    let r2 = t.path().join("log2");
    fs::create_dir(&r2).unwrap();
    std::os::unix::fs::symlink(&other, r2.join("boots")).unwrap();
    assert!(matches!(
        start(&r2, "a", 1),
        Err(BootLogError::Unsafe { .. })
    ));
    assert!(fs::read_dir(&other).unwrap().next().is_none());
}

#[test]
fn a_huge_log_is_read_only_to_the_budget_and_torn_lines_survive() {
    let (_t, r) = root();
    let d = start(&r, "a", 1).unwrap();
    let line = format!("5 stdout {}\n", "x".repeat(100));
    let n = (MAX_READ_BYTES as usize / line.len()) + 100;
    let mut text = line.repeat(n);
    text.push_str("torn-without-time\n");
    put(&d, "big.log", &text);
    let got = read(&r, 0, Some("big"), None).unwrap();
    assert!(got.len() < n, "{} of {n}", got.len());
    assert!(got[..got.len() - 1]
        .iter()
        .all(|e| e.ts_ms == 5 && e.line.len() == 100));
    // and never more than MAX_LINES lines
    let many = "6 stdout y\n".repeat(MAX_LINES + 50);
    put(&d, "many.log", &many);
    assert_eq!(read(&r, 0, Some("many"), None).unwrap().len(), MAX_LINES);
    assert_eq!(
        read(&r, 0, Some("many"), Some(usize::MAX)).unwrap().len(),
        MAX_LINES
    );
    let last = got.last().unwrap();
    assert_eq!((last.ts_ms, last.line.as_str()), (0, "torn-without-time"));
}
