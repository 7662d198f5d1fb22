//! Unit tests of `unpack.rs`.

use super::*;
use std::os::unix::fs::MetadataExt;

/// One crafted tar entry; names are written raw, so `..` and `/x` can be tested.
pub enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Mode(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    Fifo(&'a str),
}

pub fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, data, link, mode): (&str, tar::EntryType, &[u8], &str, u32) = match e {
            E::Dir(n) => (n, tar::EntryType::Directory, b"", "", 0o755),
            E::File(n, d) => (n, tar::EntryType::Regular, d, "", 0o644),
            E::Mode(n, d, m) => (n, tar::EntryType::Regular, d, "", *m),
            E::Link(n, t) => (n, tar::EntryType::Symlink, b"", t, 0o777),
            E::Hard(n, t) => (n, tar::EntryType::Link, b"", t, 0o644),
            E::Char(n) => (n, tar::EntryType::Char, b"", "", 0o600),
            E::Fifo(n) => (n, tar::EntryType::Fifo, b"", "", 0o600),
        };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn unpack(root: &Path, layers: &[&[E]]) -> Result<Vec<String>> {
    let mut u = Unpacker::new(root, "test-image");
    for (i, l) in layers.iter().enumerate() {
        u.apply(&tar_of(l)[..], &format!("layer{i}"))?;
    }
    u.finish()
}

fn refused(layers: &[&[E]], expect: &str) -> (tempfile::TempDir, String) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = unpack(&root, layers)
        .expect_err("must be refused")
        .to_string();
    assert!(err.contains(expect), "{err}");
    assert!(err.contains("test-image"), "{err}");
    (t, err)
}

#[test]
fn dotdot_entry_is_refused() {
    let (t, err) = refused(&[&[E::File("a/../../evil", b"x")]], "`..` component");
    assert!(
        err.contains("layer0") && err.contains("a/../../evil"),
        "{err}"
    );
    assert!(!t.path().join("evil").exists());
}

#[test]
fn absolute_entry_is_refused() {
    let (t, _) = refused(&[&[E::File("/etc/evil", b"x")]], "absolute path");
    assert!(!t.path().join("root/etc/evil").exists());
}

#[test]
fn write_through_a_symlink_out_of_the_root_is_refused() {
    // `out` → the temp dir above the root; `out/evil` would land outside.
    let (t, err) = refused(
        &[&[E::Link("out", "../.."), E::File("out/evil", b"x")]],
        "leads out of the root",
    );
    assert!(err.contains("out/evil"), "{err}");
    assert!(!t.path().join("evil").exists());
    assert!(!t.path().parent().unwrap().join("evil").exists());
}

#[test]
fn symlink_escape_in_a_later_layer_is_refused() {
    let (t, _) = refused(
        &[
            &[E::Dir("usr"), E::Link("usr/lib", "../../../x")],
            &[E::File("usr/lib/evil.so", b"x")],
        ],
        "leads out of the root",
    );
    assert!(!t.path().join("x").exists());
}

#[test]
fn absolute_symlink_parents_stay_inside_the_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    // `lib` → `/usr/lib` means the image's /usr/lib, never the host's.
    unpack(
        &root,
        &[
            &[E::Dir("usr/lib"), E::Link("lib", "/usr/lib")],
            &[E::File("lib/libfoo.so", b"foo")],
        ],
    )
    .unwrap();
    assert_eq!(fs::read(root.join("usr/lib/libfoo.so")).unwrap(), b"foo");
    assert!(fs::symlink_metadata(root.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let outside = t.path().join("victim");
    fs::write(&outside, "keep").unwrap();
    unpack(
        &root,
        &[
            &[E::Link("etc-passwd", outside.to_str().unwrap())],
            &[E::File("etc-passwd", b"new")],
        ],
    )
    .unwrap();
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    assert_eq!(fs::read(root.join("etc-passwd")).unwrap(), b"new");
}

#[test]
fn device_nodes_and_fifos_are_skipped_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let warnings = unpack(
        &root,
        &[&[E::Dir("dev"), E::Char("dev/sda"), E::Fifo("dev/fifo")]],
    )
    .unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("character device") && warnings[0].contains("dev/sda"));
    assert!(warnings[1].contains("fifo"));
    assert!(!root.join("dev/sda").exists());
    assert!(root.join("dev").is_dir());
}

#[test]
fn whiteout_of_a_parent_is_refused() {
    for name in ["a/.wh...", "a/.wh.", "a/.wh.."] {
        let (t, err) = refused(
            &[&[E::Dir("a"), E::File("keep", b"x")], &[E::File(name, b"")]],
            "would remove a parent directory",
        );
        assert!(t.path().join("root/keep").exists(), "{name}: {err}");
    }
}

#[test]
fn whiteout_through_an_escaping_symlink_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = unpack(
        &root,
        &[&[E::Link("up", "..")], &[E::File("up/.wh.victim", b"")]],
    )
    .unwrap_err();
    assert!(err.to_string().contains("leads out of the root"), "{err}");
    assert!(victim.exists());
}

#[test]
fn whiteouts_remove_lower_files_and_directories() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    unpack(
        &root,
        &[
            &[
                E::Dir("etc"),
                E::File("etc/a", b"a"),
                E::File("etc/b", b"b"),
                E::Dir("var/cache"),
                E::File("var/cache/x", b"x"),
            ],
            &[E::File("etc/.wh.a", b""), E::File("var/.wh.cache", b"")],
        ],
    )
    .unwrap();
    assert!(!root.join("etc/a").exists());
    assert!(!root.join("etc/.wh.a").exists());
    assert!(root.join("etc/b").exists());
    assert!(!root.join("var/cache").exists());
    assert!(root.join("var").is_dir());
}

#[test]
fn whiteout_does_not_hide_the_same_layers_file() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    unpack(&root, &[&[E::File("a", b"1"), E::File(".wh.a", b"")]]).unwrap();
    assert_eq!(fs::read(root.join("a")).unwrap(), b"1");
}

#[test]
fn opaque_directory_hides_lower_content_only() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    unpack(
        &root,
        &[
            &[
                E::Dir("d"),
                E::File("d/old", b"o"),
                E::Dir("d/sub"),
                E::File("d/sub/old", b"o"),
                E::File("other", b"k"),
            ],
            // The marker after this layer's own entries in the same directory.
            &[
                E::Dir("d"),
                E::File("d/new", b"n"),
                E::Dir("d/sub"),
                E::File("d/sub/new", b"n"),
                E::File("d/.wh..wh..opq", b""),
            ],
        ],
    )
    .unwrap();
    assert!(!root.join("d/old").exists());
    assert!(!root.join("d/sub/old").exists());
    assert!(root.join("d/new").exists());
    assert!(root.join("d/sub/new").exists());
    assert!(!root.join("d/.wh..wh..opq").exists());
    assert!(root.join("other").exists());
}

#[test]
fn hard_links_share_an_inode_and_must_stay_inside() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    unpack(
        &root,
        &[&[
            E::File("bin/busybox", b"bb"),
            E::Hard("bin/sh", "bin/busybox"),
        ]],
    )
    .unwrap();
    let a = fs::metadata(root.join("bin/busybox")).unwrap();
    let b = fs::metadata(root.join("bin/sh")).unwrap();
    assert_eq!(a.ino(), b.ino());

    refused(
        &[&[E::Hard("passwd", "../../etc/passwd")]],
        "`..` component",
    );
    refused(&[&[E::Hard("passwd", "/etc/passwd")]], "absolute path");
    refused(&[&[E::Hard("x", "missing")]], "is not in the layers so far");
    refused(
        &[&[E::Dir("d"), E::Hard("x", "d")]],
        "hard link to a directory",
    );
    refused(
        &[&[E::Link("up", "../.."), E::Hard("x", "up/etc/passwd")]],
        "leads out of the root",
    );
}

#[test]
fn modes_are_kept_and_read_only_directories_set_last() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut tar_entries = vec![E::Mode("bin/prog", b"#!", 0o4755)];
    tar_entries.push(E::Dir("ro"));
    tar_entries.push(E::File("ro/f", b"f"));
    let mut u = Unpacker::new(&root, "img");
    // Make `ro` read-only in the tar itself.
    let mut data = tar_of(&tar_entries);
    let mut archive = tar::Archive::new(&data[..]);
    let offset = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("ro"))
        .unwrap()
        .raw_header_position() as usize;
    let mut h = tar::Header::from_byte_slice(&data[offset..offset + 512]).clone();
    h.set_mode(0o555);
    h.set_cksum();
    data[offset..offset + 512].copy_from_slice(h.as_bytes());
    u.apply(&data[..], "l0").unwrap();
    u.apply(&tar_of(&[E::File("ro/g", b"g")])[..], "l1")
        .unwrap();
    u.finish().unwrap();
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("bin/prog"), 0o4755);
    assert_eq!(mode("ro"), 0o555);
    assert!(root.join("ro/g").exists());
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_file_in_place_of_a_parent_directory_is_refused() {
    refused(
        &[&[E::File("a", b"x"), E::File("a/b", b"y")]],
        "is not a directory",
    );
}

#[test]
fn corrupt_tar_is_an_error_naming_the_layer() {
    let t = tempfile::tempdir().unwrap();
    let mut data = tar_of(&[E::File("a", b"hello")]);
    data[148..156].copy_from_slice(b"0000000\0"); // bad header checksum
    let mut u = Unpacker::new(t.path(), "img");
    let err = u.apply(&data[..], "sha256:feed").unwrap_err().to_string();
    assert!(err.contains("img") && err.contains("sha256:feed"), "{err}");
}
