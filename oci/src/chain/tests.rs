use super::*;
use crate::layout::{tagged, LayerBlob, LayoutWriter};
use crate::unpack::tests::{tar_of, E};
use serde_json::json;

fn base() -> Vec<u8> {
    tar_of(&[
        E::Dir("bin"),
        E::Mode("bin/busybox", b"BUSYBOX", 0o755),
        E::Link("bin/sh", "busybox"),
        E::Dir("etc"),
        E::File("etc/motd", b"old"),
    ])
}

/// An oci-archive of one image: `layers` as gzip blobs, tagged `tag`.
fn archive(dir: &Path, name: &str, layers: &[Vec<u8>], tag: &str) -> PathBuf {
    let layout = dir.join(format!("{name}.layout"));
    let w = LayoutWriter::create(&layout).unwrap();
    let blobs: Vec<LayerBlob> = layers.iter().map(|t| LayerBlob::gzip(t).unwrap()).collect();
    let desc = w
        .add_image(&blobs, json!({"Cmd": ["/bin/sh"]}), "amd64")
        .unwrap();
    w.write_index(&[tagged(desc, tag)]).unwrap();
    let file = dir.join(format!("{name}.tar"));
    let mut b = tar::Builder::new(fs::File::create(&file).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    file
}

#[test]
fn images_on_the_same_base_share_its_layer_and_a_whiteout_stays_in_its_chain() {
    let t = tempfile::tempdir().unwrap();
    let layers = t.path().join("layers");
    let app = tar_of(&[
        E::Dir("srv"),
        E::File("srv/index.html", b"hi"),
        E::File("etc/.wh.motd", b""),
    ]);
    let other = tar_of(&[E::File("etc/motd", b"new")]);
    let a = archive(t.path(), "a", &[base(), app], "1");
    let b = archive(t.path(), "b", &[base(), other], "1");
    let sa = import_archive(&a, "a:1", None, &layers).unwrap();
    assert_eq!((sa.unpacked, sa.shared, sa.chain.len()), (2, 0, 2));
    let sb = import_archive(&b, "b:1", None, &layers).unwrap();
    assert_eq!((sb.unpacked, sb.shared), (1, 1));
    assert_eq!(sa.chain[0], sb.chain[0]);
    assert_ne!(sa.chain[1], sb.chain[1]);
    let root_a = layers.join(&sa.chain[1]);
    let root_b = layers.join(&sb.chain[1]);
    let bottom = layers.join(&sa.chain[0]);
    assert!(!root_a.join("etc/motd").exists());
    assert_eq!(fs::read(root_a.join("srv/index.html")).unwrap(), b"hi");
    assert_eq!(fs::read(root_b.join("etc/motd")).unwrap(), b"new");
    // The shared bottom layer is untouched by what the upper layers did.
    assert_eq!(fs::read(bottom.join("etc/motd")).unwrap(), b"old");
    assert_eq!(
        fs::read_link(root_a.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // Its files are shared, not copied.
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&bottom.join("bin/busybox")),
        ino(&root_b.join("bin/busybox"))
    );
    // The same image again unpacks nothing.
    let again = import_archive(&a, "a:1", None, &layers).unwrap();
    assert_eq!((again.unpacked, again.shared), (0, 2));
    assert_eq!((&again.id, &again.chain), (&sa.id, &sa.chain));
    // Collecting with only b kept removes a's top chain, keeps the shared one.
    let keep: BTreeSet<String> = sb.chain.iter().cloned().collect();
    assert_eq!(collect(&layers, &keep).unwrap(), vec![sa.chain[1].clone()]);
    assert!(root_b.join("etc/motd").exists() && bottom.is_dir() && !root_a.exists());
}

#[test]
fn a_read_only_directory_of_a_lower_layer_takes_the_next_layer_and_keeps_its_mode() {
    let t = tempfile::tempdir().unwrap();
    let layers = t.path().join("layers");
    let lower = tar_of(&[E::Dir("ro"), E::File("ro/a", b"a")]);
    // Make ro/ mode 0555 in the lower layer.
    let mut ar = tar::Archive::new(&lower[..]);
    let mut b = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        if h.entry_type().is_dir() {
            h.set_mode(0o555);
            h.set_cksum();
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    let lower = b.into_inner().unwrap();
    let upper = tar_of(&[E::File("ro/b", b"b")]);
    let a = archive(t.path(), "a", &[lower, upper], "1");
    let s = import_archive(&a, "a:1", None, &layers).unwrap();
    let root = layers.join(&s.chain[1]);
    assert_eq!(fs::read(root.join("ro/b")).unwrap(), b"b");
    assert_eq!(
        fs::metadata(root.join("ro")).unwrap().permissions().mode() & 0o777,
        0o555
    );
    // Removal works on read-only trees.
    collect(&layers, &BTreeSet::new()).unwrap();
    assert_eq!(fs::read_dir(&layers).unwrap().count(), 0);
}

#[test]
fn a_corrupt_layer_leaves_no_chain_and_no_partial_directory() {
    let t = tempfile::tempdir().unwrap();
    let layers = t.path().join("layers");
    let a = archive(t.path(), "a", &[base(), tar_of(&[E::File("x", b"1")])], "1");
    // Flip a byte in the archive's second layer blob: find it by its digest name.
    let layout = t.path().join("a.layout");
    let manifest_dir = layout.join("blobs/sha256");
    let top = LayerBlob::gzip(&tar_of(&[E::File("x", b"1")])).unwrap();
    let hex = crate::digest::Digest::of(&top.data).hex().to_string();
    let mut data = fs::read(manifest_dir.join(&hex)).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(manifest_dir.join(&hex), data).unwrap();
    let mut b = tar::Builder::new(fs::File::create(&a).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    let e = import_archive(&a, "a:1", None, &layers)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a:1"), "{e}");
    let names: Vec<String> = fs::read_dir(&layers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Only the good bottom layer is there, whole; no partial one.
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].starts_with('.'));
}

#[test]
fn chain_ids_follow_containerd() {
    let d = crate::digest::Digest::of(b"x");
    assert_eq!(chain_id(None, &d), d);
    let p = crate::digest::Digest::of(b"p");
    assert_eq!(
        chain_id(Some(&p), &d),
        crate::digest::Digest::of(format!("{p} {d}").as_bytes())
    );
}

#[test]
fn a_tampered_blob_of_a_layer_already_unpacked_is_still_refused() {
    let t = tempfile::tempdir().unwrap();
    let layers = t.path().join("layers");
    let a = archive(t.path(), "a", &[base()], "1");
    import_archive(&a, "a:1", None, &layers).unwrap();
    let layout = t.path().join("a.layout");
    let hex = crate::digest::Digest::of(&LayerBlob::gzip(&base()).unwrap().data)
        .hex()
        .to_string();
    let blob = layout.join("blobs/sha256").join(&hex);
    let mut data = fs::read(&blob).unwrap();
    let n = data.len();
    data[n - 9] ^= 0x01;
    fs::write(&blob, data).unwrap();
    let mut b = tar::Builder::new(fs::File::create(&a).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    let e = import_archive(&a, "a:2", None, &layers)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a:2") && e.contains(&hex), "{e}");
}
