use super::*;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::process::Command;

/// A fresh ext4 image as PID 1 formats the state partition (`mke2fs -t ext4`), of `mib` MiB.
fn mkfs_sized(dir: &Path, name: &str, mib: u64, extra: &[&str]) -> std::path::PathBuf {
    let img = dir.join(name);
    let f = File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    let st = Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-L", "SYSCTR_STATE"])
        .args(extra)
        .arg(&img)
        .status()
        .expect("mke2fs (e2fsprogs)");
    assert!(st.success(), "mke2fs {extra:?}");
    img
}

/// 64 MiB, the size of the image's state partition.
fn mkfs(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    mkfs_sized(dir, name, 64, extra)
}

fn debugfs(img: &Path, req: &str) {
    let out = Command::new("debugfs")
        .args(["-w", "-R", req])
        .arg(img)
        .output()
        .expect("debugfs (e2fsprogs)");
    assert!(out.status.success(), "debugfs {req}: {out:?}");
}

/// Whether the real `e2fsck -p` finds `img` clean and does nothing else (its one line is
/// "NAME: clean, …"; a journal replay or a repair says more), run on a copy (it repairs).
fn e2fsck_skips(img: &Path) -> bool {
    let copy = img.with_extension("fsck");
    fs::copy(img, &copy).unwrap();
    let out = Command::new("e2fsck")
        .arg("-p")
        .arg(&copy)
        .output()
        .expect("e2fsck (e2fsprogs)");
    let _ = fs::remove_file(&copy);
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.len() == 1 && lines[0].contains(": clean, ")
}

fn now() -> u64 {
    crate::logs::now_ms() / 1000
}

/// Every way a superblock can ask for a check, on real ext4 images (1 KiB blocks as the
/// 64 MiB state partition gets; 4 KiB, one block group), decided by PID 1 as by `e2fsck -p`.
#[test]
fn the_skip_decision_is_the_real_e2fscks() {
    let dir = tempfile::tempdir().unwrap();
    let future = now() + 10 * 86400;
    let cases: &[(&str, &[&str], Option<&str>)] = &[
        ("fresh", &[], None),
        (
            "not-cleanly-unmounted",
            &["ssv state 0"],
            Some("not cleanly unmounted"),
        ),
        ("errors", &["ssv state 3"], Some("recorded errors")),
        (
            "journal-to-replay",
            &["feature needs_recovery"],
            Some("journal"),
        ),
        ("orphans", &["ssv last_orphan 12"], Some("orphan")),
        (
            "mount-count-reached",
            &["ssv mnt_count 20", "ssv max_mnt_count 20"],
            Some("mounted 20 times"),
        ),
        (
            "mount-count-below",
            &["ssv mnt_count 19", "ssv max_mnt_count 20"],
            None,
        ),
        (
            "interval-passed",
            &["ssv checkinterval 3600", "ssv lastcheck 1000000"],
            Some("interval"),
        ),
        (
            "interval-not-passed",
            &["ssv checkinterval 3600", "ssv lastcheck now"],
            None,
        ),
        (
            "last-check-in-the-future",
            &[
                "ssv checkinterval 100000000",
                &format!("ssv lastcheck {future}"),
            ],
            Some("future"),
        ),
    ];
    for blocks in ["1024", "4096"] {
        for (name, reqs, want) in cases {
            let img = mkfs(dir.path(), &format!("{name}-{blocks}.img"), &["-b", blocks]);
            for r in *reqs {
                debugfs(&img, r);
            }
            let ours = needs_check(&img, now()).unwrap();
            let real_skips = e2fsck_skips(&img);
            assert_eq!(
                ours.is_none(),
                real_skips,
                "{name} ({blocks}-byte blocks): PID 1 says {ours:?}, e2fsck -p skips: {real_skips}"
            );
            match (want, &ours) {
                (None, None) => {}
                (Some(w), Some(why)) => assert!(why.contains(w), "{name}: {why}"),
                _ => panic!("{name} ({blocks}): expected {want:?}, got {ours:?}"),
            }
        }
    }
}

/// A backup superblock that disagrees with the primary (an interrupted resize, a damaged
/// primary rewritten by hand) is e2fsck's reason to check; so it is PID 1's.
#[test]
fn a_backup_superblock_that_disagrees_means_a_check() {
    let dir = tempfile::tempdir().unwrap();
    for (blocks, group1_at) in [(1024u64, 8193u64 * 1024), (4096, 32768 * 4096)] {
        // Big enough for a second block group at either block size.
        let img = mkfs_sized(
            dir.path(),
            &format!("backup-{blocks}.img"),
            256,
            &["-b", &blocks.to_string()],
        );
        assert_eq!(needs_check(&img, now()).unwrap(), None);
        // The backup's inode count, one more.
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let mut four = [0u8; 4];
        f.seek(SeekFrom::Start(group1_at)).unwrap();
        f.read_exact(&mut four).unwrap();
        let n = u32::from_le_bytes(four) + 1;
        f.seek(SeekFrom::Start(group1_at)).unwrap();
        f.write_all(&n.to_le_bytes()).unwrap();
        drop(f);
        let why = needs_check(&img, now()).unwrap();
        assert!(
            why.as_deref().is_some_and(|w| w.contains("backup")),
            "{blocks}: {why:?}"
        );
        assert!(!e2fsck_skips(&img), "{blocks}: e2fsck -p checks it too");
    }
}

/// Not ext4 at all, a truncated device, a nonsensical geometry: never "clean".
#[test]
fn what_cannot_be_read_is_never_clean() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = dir.path().join("zeros");
    fs::write(&zeros, vec![0u8; 8192]).unwrap();
    assert!(needs_check(&zeros, now())
        .unwrap()
        .is_some_and(|w| w.contains("unreadable")));
    let short = dir.path().join("short");
    fs::write(&short, vec![0u8; 1500]).unwrap();
    assert!(needs_check(&short, now()).is_err());
    // A valid, clean superblock whose block size is absurd.
    let img = mkfs(dir.path(), "geometry.img", &[]);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    f.seek(SeekFrom::Start(SB_OFFSET + 0x18)).unwrap();
    f.write_all(&40u32.to_le_bytes()).unwrap();
    drop(f);
    assert!(needs_check(&img, now())
        .unwrap()
        .is_some_and(|w| w.contains("implausible")));
    assert!(needs_check(Path::new("/nonexistent/dev"), now()).is_err());
}
