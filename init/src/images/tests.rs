use super::helper::{run, Action, HelperArgs, Outcome};
use super::*;

/// A one-layer oci-archive with `/bin/x` holding `content`.
fn archive(dir: &Path, content: &[u8]) -> PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("bin/x").unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    layer.append(&h, content).unwrap();
    let layer = layer.into_inner().unwrap();
    let layout = dir.join(format!("layout-{}", content.len()));
    let w = oci::layout::LayoutWriter::create(&layout).unwrap();
    let blob = oci::layout::LayerBlob::tar(&layer);
    let desc = w
        .add_image(&[blob], serde_json::json!({"Cmd": ["/bin/x"]}), "amd64")
        .unwrap();
    w.write_index(&[desc]).unwrap();
    let file = dir.join(format!("image-{}.tar", content.len()));
    let mut b = tar::Builder::new(fs::File::create(&file).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    file
}

fn args(action: Action, store: &Path, image: &str) -> HelperArgs {
    HelperArgs {
        action,
        store: store.to_path_buf(),
        image: image.into(),
    }
}

#[test]
fn import_then_rm_keeps_refs_and_layers_in_step() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let store = Store::new(&state);
    let a = archive(t.path(), b"one");
    let b = archive(t.path(), b"twotwo");
    let mut input = fs::File::open(&a).unwrap();
    let out = run(&args(Action::Import, store.dir(), "app:1"), &mut input).unwrap();
    let Outcome::Imported { unpacked, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(unpacked, 1);
    assert!(store.has("app:1"));
    assert_eq!(
        fs::read(store.root_of("app:1").unwrap().join("bin/x")).unwrap(),
        b"one"
    );
    // The same tag again with other content: the old layer is collected.
    let mut input = fs::File::open(&b).unwrap();
    let out = run(&args(Action::Import, store.dir(), "app:1"), &mut input).unwrap();
    assert!(
        matches!(out, Outcome::Imported { collected: 1, .. }),
        "{out:?}"
    );
    assert_eq!(
        fs::read(store.root_of("app:1").unwrap().join("bin/x")).unwrap(),
        b"twotwo"
    );
    // Nothing left in tmp/.
    assert_eq!(fs::read_dir(store.dir().join("tmp")).unwrap().count(), 0);
    let out = run(
        &args(Action::Rm, store.dir(), "app:1"),
        &mut std::io::empty(),
    )
    .unwrap();
    assert_eq!(out, Outcome::Removed { collected: 1 });
    assert!(!store.has("app:1"));
    assert_eq!(fs::read_dir(store.layers_dir()).unwrap().count(), 0);
    let e = run(
        &args(Action::Rm, store.dir(), "app:1"),
        &mut std::io::empty(),
    )
    .unwrap_err();
    assert!(e.contains("no image \"app:1\""), "{e}");
}

#[test]
fn a_bad_archive_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::new(&t.path().join("state"));
    let a = archive(t.path(), b"one");
    let mut input = fs::File::open(&a).unwrap();
    run(&args(Action::Import, store.dir(), "app:1"), &mut input).unwrap();
    let refs_before = fs::read(store.dir().join(REFS_FILE)).unwrap();
    for junk in [&b""[..], b"not a tar at all", &[0x1f, 0x8b, 0, 0][..]] {
        let e = run(&args(Action::Import, store.dir(), "app:2"), &mut &junk[..]).unwrap_err();
        assert!(!e.is_empty());
    }
    // A tar with a layer whose bytes do not match its digest.
    let mut data = fs::read(&a).unwrap();
    let pos = data.windows(3).position(|w| w == b"one").unwrap();
    data[pos] = b'X';
    let e = run(&args(Action::Import, store.dir(), "app:2"), &mut &data[..]).unwrap_err();
    assert!(e.contains("app:2"), "{e}");
    assert_eq!(fs::read(store.dir().join(REFS_FILE)).unwrap(), refs_before);
    assert!(!store.has("app:2"));
    assert_eq!(fs::read_dir(store.layers_dir()).unwrap().count(), 1);
}

#[test]
fn helper_arguments_round_trip_and_refuse_junk() {
    let a = args(
        Action::Import,
        Path::new("/var/lib/sysctr/images"),
        "web:1.0",
    );
    assert_eq!(HelperArgs::parse(&a.to_args()).unwrap(), a);
    assert!(HelperArgs::parse(&["import".into(), "--store".into(), "/s".into()]).is_err());
    let bad = HelperArgs::parse(&[
        "rm".into(),
        "--store".into(),
        "/s".into(),
        "--image".into(),
        "../x:1".into(),
    ]);
    assert!(bad.is_err());
}
