//! Whole-image tests: images crafted here as layouts, oci-archives and docker saves. The
//! images that must be refused (digests, sizes, diff_ids, media types, bad entries) are in
//! `tests/refused.rs`.

mod refused;

use super::digest::Digest;
use super::layout::{tagged, LayerBlob, LayoutWriter};
use super::unpack::tests::{tar_of, E};
use super::*;
use serde_json::{json, Value};

const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

fn gzip(data: &[u8]) -> Vec<u8> {
    LayerBlob::gzip(data).unwrap().data
}

/// A layer blob of this media type (an unknown one stored as is).
fn blob(tar: &[u8], media: &str) -> LayerBlob {
    match media {
        GZ => LayerBlob::gzip(tar).unwrap(),
        ZST => LayerBlob::zstd(tar).unwrap(),
        TAR => LayerBlob::tar(tar),
        other => LayerBlob {
            data: tar.to_vec(),
            media_type: other.into(),
            diff_id: Digest::of(tar),
        },
    }
}

struct Built {
    /// The manifest's descriptor (as in index.json).
    desc: Value,
    layers: Vec<Digest>,
}

/// Writes one image (layers as (uncompressed tar, media type)) into the layout.
fn write_image(w: &LayoutWriter, layers: &[(Vec<u8>, &str)], cfg: Value, tag: &str) -> Built {
    write_image_for(w, layers, cfg, tag, "amd64")
}

fn write_image_for(
    w: &LayoutWriter,
    layers: &[(Vec<u8>, &str)],
    cfg: Value,
    tag: &str,
    arch: &str,
) -> Built {
    let blobs: Vec<LayerBlob> = layers.iter().map(|(t, m)| blob(t, m)).collect();
    Built {
        desc: tagged(w.add_image(&blobs, cfg, arch).unwrap(), tag),
        layers: blobs.iter().map(|b| Digest::of(&b.data)).collect(),
    }
}

/// A two-layer web image: busybox-like base, then an app layer with a whiteout.
fn web_layers() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            tar_of(&[
                E::Dir("bin"),
                E::Mode("bin/busybox", b"BUSYBOX", 0o755),
                E::Link("bin/sh", "busybox"),
                E::Dir("etc"),
                E::File(
                    "etc/passwd",
                    b"root:x:0:0::/root:/bin/sh\nwww:x:33:33::/srv:/bin/sh\n",
                ),
                E::File("etc/motd", b"old"),
            ]),
            GZ,
        ),
        (
            tar_of(&[
                E::Dir("srv"),
                E::File("srv/index.html", b"<h1>hi</h1>"),
                E::File("etc/.wh.motd", b""),
            ]),
            ZST,
        ),
    ]
}

fn web_config() -> Value {
    json!({"Entrypoint": ["/bin/busybox", "httpd", "-f"], "Cmd": ["-p", "8080"],
           "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "www"})
}

fn layout_with_web(dir: &Path) -> Built {
    let w = LayoutWriter::create(dir).unwrap();
    let b = write_image(&w, &web_layers(), web_config(), "1.0");
    w.write_index(std::slice::from_ref(&b.desc)).unwrap();
    b
}

fn check_web_root(root: &Path, imported: &Imported) {
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"BUSYBOX");
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read(root.join("srv/index.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    assert!(!root.join("etc/motd").exists());
    assert_eq!(imported.layers, 2);
    let d = &imported.defaults;
    assert_eq!(d.args, ["/bin/busybox", "httpd", "-f", "-p", "8080"]);
    assert_eq!(d.env, ["PATH=/bin"]);
    assert_eq!(d.cwd.as_deref(), Some("/srv"));
    assert_eq!(d.user, Some(UserIds { uid: 33, gid: 33 }));
}

#[test]
fn layout_with_gzip_and_zstd_layers_imports() {
    let t = tempfile::tempdir().unwrap();
    let b = layout_with_web(&t.path().join("img"));
    let out = t.path().join("out");
    let image = ImageRef::parse("oci:img:1.0", t.path()).unwrap();
    let imported = import(&image, &out).unwrap();
    check_web_root(&out, &imported);
    assert_eq!(
        imported.manifest_digest.as_deref(),
        b.desc["digest"].as_str()
    );
    // The only image is found without its tag, too.
    let again = import(
        &ImageRef::parse("img", t.path()).unwrap(),
        &t.path().join("out2"),
    )
    .unwrap();
    check_web_root(&t.path().join("out2"), &again);
}

#[test]
fn oci_archive_imports() {
    let t = tempfile::tempdir().unwrap();
    layout_with_web(&t.path().join("img"));
    let archive = t.path().join("img.tar");
    let mut b = tar::Builder::new(fs::File::create(&archive).unwrap());
    b.append_dir_all(".", t.path().join("img")).unwrap();
    b.finish().unwrap();
    let out = t.path().join("out");
    let imported = import(
        &ImageRef::parse("oci-archive:img.tar:1.0", t.path()).unwrap(),
        &out,
    )
    .unwrap();
    check_web_root(&out, &imported);
}

/// `docker save` (before docker 25): `<id>/layer.tar`, `<config hex>.json`, manifest.json;
/// the second image's base layer is a symlink to the first's.
fn docker_save(path: &Path) {
    let layers = web_layers();
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(t, _)| Digest::of(t).to_string())
        .collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": web_config(),
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    add(&config_name, &config);
    add("aaa/layer.tar", &layers[0].0);
    // docker save stores layers uncompressed; a gzipped one is detected by its magic.
    add("bbb/layer.tar", &gzip(&layers[1].0));
    let manifest = json!([
        {"Config": config_name, "RepoTags": ["web:1.0"],
         "Layers": ["aaa/layer.tar", "bbb/layer.tar"]},
        {"Config": config_name, "RepoTags": ["web:copy"],
         "Layers": ["ccc/layer.tar", "bbb/layer.tar"]}
    ]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .unwrap();
    b.finish().unwrap();
}

#[test]
fn docker_save_imports_by_tag() {
    let t = tempfile::tempdir().unwrap();
    docker_save(&t.path().join("web.tar"));
    for (tag, out) in [("web:1.0", "out1"), ("web:copy", "out2")] {
        let image = ImageRef::parse(&format!("docker-archive:web.tar:{tag}"), t.path()).unwrap();
        let out = t.path().join(out);
        let imported = import(&image, &out).unwrap();
        check_web_root(&out, &imported);
    }
    // Two images and no tag: which one is meant is not guessed.
    let err = import(
        &ImageRef::parse("web.tar", t.path()).unwrap(),
        &t.path().join("out3"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("name one by tag"), "{err}");
    let err = import(
        &ImageRef::parse("docker-archive:web.tar:web:2.0", t.path()).unwrap(),
        &t.path().join("out4"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no image tagged \"web:2.0\""),
        "{err}"
    );
}

#[test]
fn index_picks_linux_amd64_and_tags_select() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let amd = write_image_for(
        &w,
        &[(tar_of(&[E::File("arch", b"amd64")]), GZ)],
        json!({}),
        "x",
        "amd64",
    );
    let arm = write_image_for(
        &w,
        &[(tar_of(&[E::File("arch", b"arm64")]), GZ)],
        json!({}),
        "x",
        "arm64",
    );
    // A nested index (as a multi-platform tag is), tagged "multi".
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm.desc, amd.desc]
    }))
    .unwrap();
    let id = w.put_blob(&index).unwrap();
    let other = write_image(
        &w,
        &[(tar_of(&[E::File("other", b"")]), GZ)],
        json!({}),
        "other",
    );
    w.write_index(&[
        json!({"mediaType": "application/vnd.oci.image.index.v1+json",
               "digest": id.to_string(), "size": index.len(),
               "annotations": {"org.opencontainers.image.ref.name": "multi"}}),
        other.desc,
    ])
    .unwrap();
    let out = t.path().join("out");
    import(&ImageRef::parse("oci:img:multi", t.path()).unwrap(), &out).unwrap();
    assert_eq!(fs::read(out.join("arch")).unwrap(), b"amd64");

    let err = import(
        &ImageRef::parse("oci:img:nope", t.path()).unwrap(),
        &t.path().join("o2"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no manifest tagged \"nope\"") && msg.contains("multi"),
        "{msg}"
    );
}

#[test]
fn existing_output_is_not_overwritten() {
    let t = tempfile::tempdir().unwrap();
    layout_with_web(&t.path().join("img"));
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("mine"), "keep").unwrap();
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    assert!(err.to_string().contains("not an empty directory"), "{err}");
    assert!(out.join("mine").exists());
    // An empty directory is fine.
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    import(&ImageRef::parse("oci:img", t.path()).unwrap(), &empty).unwrap();
    assert!(empty.join("bin/busybox").exists());
}

#[test]
fn identical_files_across_imported_roots_are_linked() {
    use std::os::unix::fs::MetadataExt;
    let t = tempfile::tempdir().unwrap();
    layout_with_web(&t.path().join("img"));
    let image = ImageRef::parse("oci:img", t.path()).unwrap();
    let tree = t.path().join("containers");
    import(&image, &tree.join("a/rootfs")).unwrap();
    import(&image, &tree.join("b/rootfs")).unwrap();
    let done = dedup::link_identical(&tree).unwrap();
    assert!(done.files_linked >= 3, "{done:?}");
    let ino = |p: &str| fs::metadata(tree.join(p)).unwrap().ino();
    assert_eq!(ino("a/rootfs/bin/busybox"), ino("b/rootfs/bin/busybox"));
}

#[test]
fn image_references_parse() {
    let base = Path::new("/base");
    assert_eq!(
        ImageRef::parse("oci:img:1.0", base).unwrap(),
        ImageRef::Layout {
            dir: "/base/img".into(),
            tag: Some("1.0".into())
        }
    );
    assert_eq!(
        ImageRef::parse("docker-archive:/x/web.tar:web:1.0", base).unwrap(),
        ImageRef::DockerArchive {
            file: "/x/web.tar".into(),
            tag: Some("web:1.0".into())
        }
    );
    assert!(ImageRef::parse("ftp://x/y", base)
        .unwrap_err()
        .contains("unknown transport"));
    assert!(ImageRef::parse("missing-dir", base)
        .unwrap_err()
        .contains("does not exist"));
}
