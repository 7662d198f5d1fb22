//! Unit tests of `bundle.rs`.

use super::*;
use manifest::bundle::pe;
use std::process::Command;

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("-h").output().is_ok();
    if !ok {
        eprintln!("{tool} not installed: skipping");
    }
    ok
}

fn spec(dir: &Path, root: PathBuf, verity: Option<PathBuf>, salt: Option<&str>) -> Spec {
    let uki = dir.join("uki.efi");
    fs::write(&uki, b"not a PE file, but a payload all the same").unwrap();
    let ukis = [uki.clone(), uki];
    Spec {
        version: "1.4.0".into(),
        compatible: "sysctr-test".into(),
        ukis,
        root,
        verity,
        salt: salt.map(str::to_string),
        superblock: false,
        key: workspace_root().join("keys/test-only.key"),
    }
}

/// The image build's way: mksquashfs, then `veritysetup format --no-superblock` into a
/// separate tree; the bundle's root hash must be veritysetup's, and Debian's minisign
/// must accept the extracted manifest.
#[test]
fn a_bundle_of_a_squashfs_matches_veritysetup_and_minisign_verifies_it() {
    if !have("mksquashfs") || !have("veritysetup") || !have("minisign") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // Incompressible, so the squashfs has hundreds of blocks and a real tree.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..50 {
        let body: Vec<u8> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        fs::write(src.join(format!("f{i}")), body).unwrap();
    }
    let sq = dir.path().join("root.squashfs");
    let st = Command::new("mksquashfs")
        .arg(&src)
        .arg(&sq)
        .args(["-noappend", "-quiet", "-no-progress", "-comp", "gzip"])
        .status()
        .unwrap();
    assert!(st.success());
    let tree = dir.path().join("root.verity");
    let salt = "00112233";
    let out = Command::new("veritysetup")
        .args(["format", "--no-superblock", "--salt", salt])
        .arg(&sq)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let want = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim();

    let bundle_path = dir.path().join("os.bundle");
    let made = build(
        &spec(dir.path(), sq.clone(), Some(tree.clone()), Some(salt)),
        &bundle_path,
    )
    .unwrap();
    assert_eq!(made.manifest.verity.root_hash, want);
    assert_eq!(made.key_id, "DB070B3F9EF07E44");
    assert!(!made.manifest.verity.superblock);
    assert_eq!(fs::metadata(&bundle_path).unwrap().len(), made.bytes);

    // A tree made with another salt is refused.
    let err = build(
        &spec(dir.path(), sq.clone(), Some(tree), Some("ff")),
        &bundle_path,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("not the tree"), "{err:#}");

    let m = dir.path().join("manifest.json");
    let id = extract_manifest(
        &bundle_path,
        &m,
        &workspace_root().join("keys/test-only.pub"),
    )
    .unwrap();
    assert_eq!(id, "DB070B3F9EF07E44");
    let ok = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(workspace_root().join("keys/test-only.pub"))
        .arg("-m")
        .arg(&m)
        .output()
        .unwrap();
    assert!(ok.status.success(), "minisign -V: {ok:?}");
    // And minisign notices a changed manifest.
    let mut bytes = fs::read(&m).unwrap();
    bytes[10] ^= 1;
    fs::write(&m, bytes).unwrap();
    let bad = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(workspace_root().join("keys/test-only.pub"))
        .arg("-m")
        .arg(&m)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn a_slot_image_with_a_superblock_needs_no_salt_and_bad_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut data: Vec<u8> = (0..20 * 4096u32)
        .map(|i| (i / 4096) as u8 ^ (i as u8))
        .collect();
    // Enough of a squashfs superblock for the size: magic and bytes_used.
    data[..4].copy_from_slice(b"hsqs");
    data[40..48].copy_from_slice(&(20 * 4096 - 100u64).to_le_bytes());
    let params = verity::Params {
        salt: vec![0xaa; 32],
        data_blocks: 20,
        superblock: true,
        uuid: [5; 16],
    };
    let tree = verity::compute(&mut &data[..], &params).unwrap();
    let slot = dir.path().join("root-a.img");
    let mut img = data.clone();
    img.extend_from_slice(&tree.area);
    img.extend_from_slice(&[0u8; 8192]); // partition padding
    fs::write(&slot, &img).unwrap();
    let out = dir.path().join("os.bundle");
    let made = build(&spec(dir.path(), slot.clone(), None, None), &out).unwrap();
    assert_eq!(
        made.manifest.verity.root_hash,
        bundle::to_hex(&tree.root_hash)
    );
    assert_eq!(made.manifest.verity.salt, "aa".repeat(32));
    assert_eq!(
        made.manifest.root().size,
        (data.len() + tree.area.len()) as u64
    );

    // Plain data without a salt anywhere.
    data[..4].copy_from_slice(b"data");
    let plain = dir.path().join("plain.img");
    fs::write(&plain, &data).unwrap();
    let err = build(&spec(dir.path(), plain.clone(), None, None), &out)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--salt"), "{err:#}");
    let mut s = spec(dir.path(), plain, None, Some("01"));
    s.version = "v1".into();
    let err = build(&s, &out).err().unwrap();
    assert!(err.to_string().contains("--version"), "{err:#}");
}

/// A minimal PE (no optional header) with `.osrel` and `.cmdline` sections.
fn tiny_uki(dir: &Path, name: &str, osrel: &str, cmdline: &str) -> PathBuf {
    let mut pe = vec![0u8; 0x200];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe[0x46..0x48].copy_from_slice(&2u16.to_le_bytes());
    for (i, (sec, body)) in [(".osrel", osrel), (".cmdline", cmdline)]
        .iter()
        .enumerate()
    {
        let s = 0x40 + 24 + i * 40;
        let at = pe.len();
        pe[s..s + sec.len()].copy_from_slice(sec.as_bytes());
        pe[s + 8..s + 12].copy_from_slice(&(body.len() as u32).to_le_bytes());
        pe[s + 16..s + 20].copy_from_slice(&(body.len().div_ceil(512) as u32 * 512).to_le_bytes());
        pe[s + 20..s + 24].copy_from_slice(&(at as u32).to_le_bytes());
        pe.extend_from_slice(body.as_bytes());
        pe.resize(at + body.len().div_ceil(512) * 512, 0);
    }
    let path = dir.join(name);
    fs::write(&path, pe).unwrap();
    path
}

#[test]
fn each_uki_must_name_its_slot_the_version_and_the_root_hash() {
    let hash = "ab".repeat(32);
    let line = |h: &str| {
        format!("console=ttyS0 dm-mod.create=\"sysctr-root,,,ro,0 8 verity 1 PARTUUID=x PARTUUID=x 4096 4096 1 1 sha256 {h} 0011\" root=/dev/dm-0")
    };
    assert_eq!(
        cmdline_verity(&line(&hash)),
        Some((hash.clone(), "0011".to_string()))
    );
    let dir = tempfile::tempdir().unwrap();
    let osrel =
        |slot: &str, v: &str| format!("ID=sysctr\nSYSCTR_VERSION={v}\nSYSCTR_SLOT={slot}\n");
    let good = read_uki(&tiny_uki(
        dir.path(),
        "b.efi",
        &osrel("b", "1.4.0"),
        &line(&hash),
    ))
    .unwrap();
    assert_eq!(good.cmdline.as_deref(), Some(line(&hash).as_str()));
    check_uki(&good, Slot::B, "1.4.0", &hash).unwrap();
    let err = check_uki(&good, Slot::A, "1.4.0", &hash)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SYSCTR_SLOT=b") && err.contains("slot a"),
        "{err}"
    );
    let err = check_uki(&good, Slot::B, "1.5.0", &hash)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SYSCTR_VERSION=1.4.0") && err.contains("1.5.0"),
        "{err}"
    );
    let err = check_uki(&good, Slot::B, "1.4.0", &"cd".repeat(32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("would not boot this root"), "{err}");
    // Not a PE at all: only warnings, nothing to check against.
    let plain = dir.path().join("plain.efi");
    fs::write(&plain, b"payload").unwrap();
    check_uki(&read_uki(&plain).unwrap(), Slot::A, "1.4.0", &hash).unwrap();
}

/// The image build's own pipeline: `rootfs::disk::append_verity` on a squashfs and
/// `make_uki` for both slots (objcopy on Debian's systemd stub). The bundle finds the
/// salt in the UKIs' command lines and checks their root hash, slot and version.
#[test]
fn a_bundle_of_the_image_build_s_slot_and_ukis() {
    if !have("mksquashfs") || !have("veritysetup") || !Path::new(rootfs::disk::UKI_STUB).exists() {
        eprintln!("no systemd-boot-efi stub: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let body: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(src.join("blob"), body).unwrap();
    let slot_img = dir.path().join("root-a.img");
    let st = Command::new("mksquashfs")
        .arg(&src)
        .arg(&slot_img)
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .unwrap();
    assert!(st.success());
    let verity = rootfs::disk::append_verity(&slot_img).unwrap();
    let kernel = dir.path().join("bzImage");
    fs::write(&kernel, vec![0x90u8; 70_000]).unwrap();
    let mut ukis = Vec::new();
    for slot in [rootfs::disk::Slot::A, rootfs::disk::Slot::B] {
        let out = dir.path().join(format!("uki-{}.efi", slot.letter()));
        rootfs::disk::make_uki(
            &kernel,
            None,
            &verity.cmdline(slot, ""),
            &rootfs::disk::os_release("sysctr", "2.0.0", slot),
            &out,
        )
        .unwrap();
        ukis.push(out);
    }
    let spec = |ukis: [PathBuf; 2], version: &str| Spec {
        version: version.into(),
        compatible: "sysctr-test".into(),
        ukis,
        root: slot_img.clone(),
        verity: None,
        salt: None,
        superblock: false,
        key: workspace_root().join("keys/test-only.key"),
    };
    let out = dir.path().join("os.bundle");
    let made = build(&spec([ukis[0].clone(), ukis[1].clone()], "2.0.0"), &out).unwrap();
    assert_eq!(made.manifest.verity.root_hash, verity.root_hash);
    assert_eq!(made.manifest.verity.hash_offset, verity.data_bytes);
    let osrel = pe::section(&mut File::open(&ukis[1]).unwrap(), ".osrel")
        .unwrap()
        .unwrap();
    let osrel = String::from_utf8(osrel).unwrap();
    assert_eq!(
        pe::os_release_value(&osrel, "SYSCTR_SLOT").as_deref(),
        Some("b")
    );

    let swapped = build(&spec([ukis[1].clone(), ukis[0].clone()], "2.0.0"), &out);
    assert!(swapped.err().unwrap().to_string().contains("SYSCTR_SLOT=b"));
    let other_version = build(&spec([ukis[0].clone(), ukis[1].clone()], "2.0.1"), &out);
    assert!(other_version
        .err()
        .unwrap()
        .to_string()
        .contains("SYSCTR_VERSION=2.0.0"));
}
