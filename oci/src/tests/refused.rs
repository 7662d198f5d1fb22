//! Images that must be refused, each error naming the image and the blob or layer at fault,
//! with nothing left at the output: wrong digests, sizes and diff_ids, a tampered config,
//! digests that are paths, corrupt or unknown layers, a bad entry.

use super::*;

#[test]
fn docker_save_with_a_wrong_layer_fails_its_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("web.tar");
    docker_save(&path);
    // Flip one byte of the busybox contents inside aaa/layer.tar.
    let mut data = fs::read(&path).unwrap();
    let at = data
        .windows(7)
        .position(|w| w == b"BUSYBOX")
        .expect("layer content in the archive");
    data[at] = b'X';
    fs::write(&path, &data).unwrap();
    let out = t.path().join("out");
    let err = import(
        &ImageRef::parse("docker-archive:web.tar:web:1.0", t.path()).unwrap(),
        &out,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::DiffIdMismatch { .. }), "{msg}");
    assert!(
        msg.contains("aaa/layer.tar") && msg.contains("web.tar"),
        "{msg}"
    );
    assert!(!out.exists());
    assert!(!t.path().join(".out.partial").exists());
}

#[test]
fn digest_mismatch_is_refused_before_unpacking() {
    let t = tempfile::tempdir().unwrap();
    let b = layout_with_web(&t.path().join("img"));
    let blob = t.path().join("img").join(b.layers[1].blob_path());
    let mut data = fs::read(&blob).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    fs::write(&blob, &data).unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(b.layers[1].as_str()) && msg.contains("img"),
        "{msg}"
    );
    assert!(!out.exists());
    assert!(!t.path().join(".out.partial").exists());
}

#[test]
fn size_mismatch_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let mut b = write_image(&w, &web_layers(), web_config(), "1.0");
    // The manifest descriptor says one byte more than the manifest has.
    let size = b.desc["size"].as_u64().unwrap();
    b.desc["size"] = json!(size + 1);
    w.write_index(&[b.desc.clone()]).unwrap();
    let err = import(
        &ImageRef::parse("oci:img", t.path()).unwrap(),
        &t.path().join("out"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::SizeMismatch { .. }), "{msg}");
    assert!(msg.contains(b.desc["digest"].as_str().unwrap()), "{msg}");
}

#[test]
fn truncated_gzip_layer_is_an_error_naming_the_layer() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let tar = tar_of(&[E::File("big", &vec![7u8; 100_000])]);
    let mut layer = LayerBlob::gzip(&tar).unwrap();
    let half = layer.data.len() / 2;
    layer.data.truncate(half);
    // The descriptor matches the truncated bytes, so only decompression can notice.
    let d = Digest::of(&layer.data);
    w.write_index(&[w.add_image(&[layer], json!({}), "amd64").unwrap()])
        .unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::Layer { .. }), "{msg}");
    assert!(msg.contains(d.as_str()), "{msg}");
    assert!(!out.exists());
}

/// The config blob is checked like a layer: a tampered one is refused by its digest.
#[test]
fn tampered_config_is_refused_by_its_digest() {
    let t = tempfile::tempdir().unwrap();
    let b = layout_with_web(&t.path().join("img"));
    let manifest_blob = t.path().join("img").join(
        Digest::parse(b.desc["digest"].as_str().unwrap())
            .unwrap()
            .blob_path(),
    );
    let manifest: Value = serde_json::from_slice(&fs::read(manifest_blob).unwrap()).unwrap();
    let config = Digest::parse(manifest["config"]["digest"].as_str().unwrap()).unwrap();
    let path = t.path().join("img").join(config.blob_path());
    // Same size, another user: only the digest can tell.
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"www\"", "\"wwx\"");
    fs::write(&path, text).unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{msg}");
    assert!(msg.contains(config.as_str()), "{msg}");
    assert!(!out.exists());
}

/// A descriptor's digest names a file in `blobs/`: one that is not `sha256:<64 hex>` (a path
/// out of the layout, another algorithm, a short one) is refused, and nothing is written.
#[test]
fn descriptor_digest_that_is_a_path_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let secret = t.path().join("secret");
    fs::write(&secret, b"not a blob").unwrap();
    for digest in [
        "sha256:../../../secret".to_string(),
        format!("sha512:{}", "0".repeat(128)),
        format!("sha256:{}", "0".repeat(63)),
    ] {
        w.write_index(&[
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": digest, "size": 10}),
        ])
        .unwrap();
        let out = t.path().join("out");
        let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
        let msg = err.to_string();
        // oci-spec's parser already refuses some (naming index.json), the rest are refused
        // by the blob lookup; either way the message quotes the bad value.
        assert!(
            matches!(err, OciError::BadDigest { .. } | OciError::Format { .. }),
            "{digest}: {msg}"
        );
        assert!(
            msg.contains(digest.split_once(':').unwrap().1) || msg.contains("index.json"),
            "{msg}"
        );
        assert!(!out.exists());
    }
}

#[test]
fn corrupt_zstd_layer_is_an_error_naming_the_layer() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let tar = tar_of(&[E::File("big", &vec![7u8; 100_000])]);
    let mut layer = LayerBlob::zstd(&tar).unwrap();
    // Damage the compressed stream; the descriptor matches the damaged bytes, so only
    // decompression (or the diff_id after it) can notice.
    let mid = layer.data.len() / 2;
    layer.data.truncate(mid);
    let d = Digest::of(&layer.data);
    w.write_index(&[w.add_image(&[layer], json!({}), "amd64").unwrap()])
        .unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::Layer { .. }), "{msg}");
    assert!(msg.contains(d.as_str()), "{msg}");
    assert!(!out.exists());
    assert!(!t.path().join(".out.partial").exists());
}

/// A zstd layer that decompresses cleanly to other content than the config's diff_id says.
#[test]
fn zstd_layer_with_a_wrong_diff_id_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let mut layer = LayerBlob::zstd(&tar_of(&[E::File("a", b"the real content")])).unwrap();
    let claimed = Digest::of(&tar_of(&[E::File("a", b"what the config says")]));
    layer.diff_id = claimed.clone();
    let d = Digest::of(&layer.data);
    w.write_index(&[w.add_image(&[layer], json!({}), "amd64").unwrap()])
        .unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OciError::DiffIdMismatch { .. }), "{msg}");
    assert!(
        msg.contains(d.as_str()) && msg.contains(claimed.as_str()),
        "{msg}"
    );
    assert!(!out.exists());
    assert!(!t.path().join(".out.partial").exists());
}

#[test]
fn unknown_layer_media_type_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let b = write_image(
        &w,
        &[(tar_of(&[E::File("a", b"a")]), "application/x-weird")],
        json!({}),
        "1",
    );
    w.write_index(&[b.desc]).unwrap();
    let err = import(
        &ImageRef::parse("oci:img", t.path()).unwrap(),
        &t.path().join("out"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("application/x-weird"), "{err}");
}

#[test]
fn layer_count_must_match_diff_ids() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let layer = tar_of(&[E::File("a", b"a")]);
    let d = w.put_blob(&layer).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap();
    let cd = w.put_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": TAR, "digest": d.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let md = w.put_blob(&manifest).unwrap();
    w.write_index(&[
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": md.to_string(), "size": manifest.len()}),
    ])
    .unwrap();
    let err = import(
        &ImageRef::parse("oci:img", t.path()).unwrap(),
        &t.path().join("out"),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::LayerCount { .. }), "{err}");
}

#[test]
fn bad_entry_fails_the_import_and_leaves_no_output() {
    let t = tempfile::tempdir().unwrap();
    let w = LayoutWriter::create(&t.path().join("img")).unwrap();
    let b = write_image(
        &w,
        &[(
            tar_of(&[E::File("ok", b"fine"), E::File("../../escape", b"x")]),
            GZ,
        )],
        json!({}),
        "1",
    );
    w.write_index(&[b.desc]).unwrap();
    let out = t.path().join("out");
    let err = import(&ImageRef::parse("oci:img", t.path()).unwrap(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("../../escape") && msg.contains(b.layers[0].as_str()),
        "{msg}"
    );
    assert!(!out.exists() && !t.path().join(".out.partial").exists());
    assert!(!t.path().join("escape").exists());
}
