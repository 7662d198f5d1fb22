//! `cargo xtask bundle`: an update bundle (`docs/update.md`) from a slot's UKI and root
//! filesystem, signed with a minisign key; and `--extract-manifest`, which writes a
//! bundle's manifest and its signature as two files Debian's `minisign -V` checks.
//!
//! The root is a squashfs, optionally followed by its dm-verity area (as the image build
//! writes a slot: tree right after the squashfs, with or without a veritysetup superblock),
//! or given as two files (`--verity`). The tree is always recomputed in Rust; an area that
//! came with the root must equal it, and a root hash in the UKI's command line must be the
//! computed one, so a bundle never carries a slot its own kernel would refuse.

mod uki;

use crate::util::workspace_root;
use anyhow::{bail, Context, Result};
use manifest::bundle::signature::{self, TrustedKey};
use manifest::bundle::{self, verity, Manifest, Verity};
use manifest::protocol_update::Slot;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use uki::{check_uki, cmdline_verity, read_uki};

/// Pointed to by the errors about missing inputs.
const USAGE: &str = "(`cargo xtask bundle --help` lists the options)";

/// `cargo xtask bundle`'s options.
#[derive(clap::Args, Debug, Default)]
#[command(
    override_usage = "cargo xtask bundle --version V (--uki-a FILE --uki-b FILE --root FILE [--verity FILE] | --from-image DIR)\n                          [--key FILE] [--compatible ID] [--salt HEX] [--superblock] --out FILE\n       cargo xtask bundle --extract-manifest BUNDLE --out FILE [--pub FILE]"
)]
pub struct Args {
    /// The bundle's OS version (semver).
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// minisign secret key (default: keys/test-only.key, TEST ONLY). A password-protected
    /// key reads its password from SYSCTR_BUNDLE_KEY_PASSWORD or asks.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// With --extract-manifest: the public key to check the signature with (default
    /// keys/test-only.pub).
    #[arg(long = "pub", value_name = "FILE")]
    public: Option<PathBuf>,
    /// The appliance id the bundle installs on (default: the image's, with --from-image;
    /// else sysctr-x86_64).
    #[arg(long, value_name = "ID")]
    compatible: Option<String>,
    /// One UKI for both slots.
    #[arg(long, value_name = "FILE")]
    uki: Option<PathBuf>,
    /// Slot A's UKI (its command line names slot A's partition).
    #[arg(long = "uki-a", value_name = "FILE")]
    uki_a: Option<PathBuf>,
    /// Slot B's UKI.
    #[arg(long = "uki-b", value_name = "FILE")]
    uki_b: Option<PathBuf>,
    /// The root: a squashfs, optionally followed by its dm-verity area (a slot image).
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
    /// The dm-verity area in a file of its own (veritysetup's hash device).
    #[arg(long, value_name = "FILE")]
    verity: Option<PathBuf>,
    /// Take uki-a.efi, uki-b.efi and root-a.img (or root.squashfs + root.verity) from a
    /// built image directory.
    #[arg(long = "from-image", value_name = "DIR")]
    from_image: Option<PathBuf>,
    /// dm-verity salt when neither a superblock nor the UKI's command line has it.
    #[arg(long, value_name = "HEX")]
    salt: Option<String>,
    /// When the tree is made here, start it with a veritysetup superblock.
    #[arg(long)]
    superblock: bool,
    /// The bundle to write (with --extract-manifest: the manifest; its signature goes to
    /// OUT.minisig).
    #[arg(long, value_name = "FILE", required = true)]
    out: Option<PathBuf>,
    /// Write BUNDLE's manifest to --out and its signature to OUT.minisig, then check it
    /// (with --pub): as `minisign -V -p keys/test-only.pub -m OUT` does.
    #[arg(long = "extract-manifest", value_name = "BUNDLE")]
    extract: Option<PathBuf>,
}

pub fn command(a: Args) -> Result<()> {
    let out = a
        .out
        .clone()
        .with_context(|| format!("--out is required\n{USAGE}"))?;
    if let Some(bundle) = &a.extract {
        let public = a
            .public
            .clone()
            .unwrap_or_else(|| workspace_root().join("keys/test-only.pub"));
        let key_id = extract_manifest(bundle, &out, &public)?;
        println!("manifest:  {}", out.display());
        println!("signature: {}.minisig (key {key_id})", out.display());
        return Ok(());
    }
    let version = a
        .version
        .clone()
        .with_context(|| format!("--version is required\n{USAGE}"))?;
    let (ukis, root, verity_file) = inputs(&a)?;
    let key = match &a.key {
        Some(k) => k.clone(),
        None => {
            eprintln!("xtask: bundle: signing with keys/test-only.key: TEST ONLY, never ship it");
            workspace_root().join("keys/test-only.key")
        }
    };
    let spec = Spec {
        version,
        // The image's own id (its /etc/sysctr/release.json) when built from one.
        compatible: a
            .compatible
            .clone()
            .or_else(|| {
                let dir = a.from_image.as_ref()?;
                let text =
                    std::fs::read_to_string(dir.join("root/etc/sysctr/release.json")).ok()?;
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                v["compatible"].as_str().map(String::from)
            })
            .unwrap_or_else(|| bundle::DEFAULT_COMPATIBLE.to_string()),
        ukis,
        root,
        verity: verity_file,
        salt: a.salt.clone(),
        superblock: a.superblock,
        key,
    };
    let made = build(&spec, &out)?;
    println!("bundle:    {} ({} bytes)", out.display(), made.bytes);
    println!(
        "version:   {} for {}",
        made.manifest.version, made.manifest.compatible
    );
    println!(
        "root:      {} bytes, dm-verity root {}",
        made.manifest.root().size,
        made.manifest.verity.root_hash
    );
    for slot in [Slot::A, Slot::B] {
        println!("uki-{slot}:     {} bytes", made.manifest.uki(slot).size);
    }
    println!("signed by: {}", made.key_id);
    Ok(())
}

/// A bundle of the image built in `dir` (as `cargo xtask bundle --from-image`), signed with
/// the test-only key: the boot tests' updates.
pub fn from_image(version: &str, dir: &Path, out: &Path) -> Result<()> {
    from_image_with(version, dir, out, None, None)
}

/// [`from_image`] signed with `key` instead of the test-only key, and/or for another
/// `compatible` id: the boot tests' bundles that must be refused.
pub fn from_image_with(
    version: &str,
    dir: &Path,
    out: &Path,
    key: Option<&Path>,
    compatible: Option<&str>,
) -> Result<()> {
    command(Args {
        version: Some(version.into()),
        from_image: Some(dir.into()),
        out: Some(out.into()),
        key: key.map(Path::to_path_buf),
        compatible: compatible.map(String::from),
        ..Args::default()
    })
}

type Inputs = ([PathBuf; 2], PathBuf, Option<PathBuf>);

fn inputs(a: &Args) -> Result<Inputs> {
    let dir = a.from_image.as_ref();
    let first =
        |names: &[&str]| dir.and_then(|d| names.iter().map(|n| d.join(n)).find(|p| p.exists()));
    let uki = |explicit: &Option<PathBuf>, slot: &str| {
        explicit
            .clone()
            .or_else(|| a.uki.clone())
            .or_else(|| first(&[&format!("uki-{slot}.efi")]))
            .with_context(|| {
                format!("no UKI for slot {slot}: give --uki-{slot} (or --uki, or --from-image with uki-{slot}.efi)\n{USAGE}")
            })
    };
    let ukis = [uki(&a.uki_a, "a")?, uki(&a.uki_b, "b")?];
    if let Some(root) = a.root.clone().or_else(|| first(&["root-a.img"])) {
        return Ok((ukis, root, a.verity.clone()));
    }
    let root = first(&["root.squashfs"]).with_context(|| {
        format!("no root: give --root (or --from-image with root-a.img or root.squashfs)\n{USAGE}")
    })?;
    Ok((
        ukis,
        root,
        a.verity.clone().or_else(|| first(&["root.verity"])),
    ))
}

pub struct Spec {
    pub version: String,
    pub compatible: String,
    /// Slot a's and slot b's UKI.
    pub ukis: [PathBuf; 2],
    pub root: PathBuf,
    pub verity: Option<PathBuf>,
    pub salt: Option<String>,
    pub superblock: bool,
    pub key: PathBuf,
}

pub struct Made {
    pub manifest: Manifest,
    pub key_id: String,
    pub bytes: u64,
}

/// How many bytes of `root` are filesystem data: a squashfs's `bytes_used` rounded up to
/// 4096, or the whole file for anything else (which must then be whole blocks).
fn data_len(root: &Path, file_len: u64) -> Result<u64> {
    let mut head = [0u8; 48];
    let mut f = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    let n = f.read(&mut head)?;
    if n == 48 && &head[..4] == b"hsqs" {
        let used = u64::from_le_bytes(head[40..48].try_into().unwrap());
        let data = bundle::align_up(used);
        if data > bundle::align_up(file_len) {
            bail!(
                "{}: squashfs says {used} bytes, the file has {file_len}",
                root.display()
            );
        }
        return Ok(data);
    }
    if !file_len.is_multiple_of(verity::BLOCK_SIZE as u64) {
        bail!(
            "{}: {file_len} bytes, not whole 4096-byte blocks (and not a squashfs)",
            root.display()
        );
    }
    Ok(file_len)
}

/// Loads a minisign secret key. Debian's minisign 0.11 leaves a password-less key's
/// checksum zero, which the crate's loader refuses, so such a key is read directly.
pub fn load_secret_key(path: &Path) -> Result<minisign::SecretKey> {
    let text =
        fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    let line = text.lines().nth(1).with_context(|| {
        format!(
            "{}: not a minisign secret key (no key line)",
            path.display()
        )
    })?;
    let bytes = bundle::base64_decode(line.trim())
        .with_context(|| format!("{}: not a minisign secret key (bad base64)", path.display()))?;
    if bytes.get(2..4) == Some(&[0, 0]) {
        return minisign::SecretKey::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let password = std::env::var("SYSCTR_BUNDLE_KEY_PASSWORD").ok();
    minisign::SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_secret_key(password))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn build(spec: &Spec, out: &Path) -> Result<Made> {
    bundle::check_version(&spec.version).map_err(|p| anyhow::anyhow!("--version: {p}"))?;
    bundle::check_id(&spec.compatible).map_err(|p| anyhow::anyhow!("--compatible: {p}"))?;
    let ukis = [read_uki(&spec.ukis[0])?, read_uki(&spec.ukis[1])?];
    let uki_verity = ukis
        .iter()
        .find_map(|u| u.cmdline.as_deref().and_then(cmdline_verity));

    let root_len = fs::metadata(&spec.root)
        .with_context(|| format!("reading {}", spec.root.display()))?
        .len();
    let data = data_len(&spec.root, root_len)?;
    // The verity area that came with the root: after the data, or in its own file.
    let mut area = match &spec.verity {
        Some(v) => fs::read(v).with_context(|| format!("reading {}", v.display()))?,
        None => {
            let mut f = File::open(&spec.root)?;
            f.seek(SeekFrom::Start(data.min(root_len)))?;
            let mut rest = Vec::new();
            f.read_to_end(&mut rest)?;
            rest
        }
    };
    let superblock = if area.is_empty() {
        spec.superblock
    } else {
        area.starts_with(verity::SUPERBLOCK_MAGIC)
    };
    let salt_hex = match (&spec.salt, superblock && !area.is_empty(), &uki_verity) {
        (Some(s), _, _) => s.clone(),
        (None, true, _) => {
            let sb = verity::parse_superblock(&area)
                .map_err(|e| anyhow::anyhow!("{}: verity superblock: {e}", spec.root.display()))?;
            bundle::to_hex(&sb.salt)
        }
        (None, false, Some((_, salt))) => salt.clone(),
        (None, false, None) => bail!(
            "no dm-verity salt: give --salt (neither a verity superblock nor the UKI's command line names one)"
        ),
    };
    let salt = bundle::from_hex(&salt_hex).map_err(|e| anyhow::anyhow!("--salt: {e}"))?;
    if salt.len() > verity::MAX_SALT_BYTES {
        bail!("--salt: {} bytes, at most 256", salt.len());
    }
    let data_blocks = data / verity::BLOCK_SIZE as u64;
    let uuid = if superblock && area.len() >= 32 {
        area[16..32].try_into().unwrap()
    } else {
        // veritysetup picks a random uuid; a fixed one keeps bundles reproducible.
        *b"sysctr-verity-01"
    };
    let params = verity::Params {
        salt,
        data_blocks,
        superblock,
        uuid,
    };
    // A squashfs shorter than its last block reads as zeros there, as in the slot.
    let mut data_reader = File::open(&spec.root)?
        .take(data.min(root_len))
        .chain(std::io::repeat(0).take(data.saturating_sub(root_len)));
    let tree = verity::compute(&mut data_reader, &params)?;
    if !area.is_empty() {
        // A slot image may be padded with zeros past its tree.
        let n = tree.area.len();
        if area.len() < n || area[..n] != tree.area[..] || area[n..].iter().any(|&b| b != 0) {
            bail!(
                "{}: the dm-verity area after the data is not the tree of the data with salt {salt_hex}",
                spec.verity.as_ref().unwrap_or(&spec.root).display()
            );
        }
        area.truncate(n);
    }
    let root_hash = bundle::to_hex(&tree.root_hash);
    for (uki, slot) in ukis.iter().zip([Slot::A, Slot::B]) {
        check_uki(uki, slot, &spec.version, &root_hash)?;
    }

    let mut sha = Sha256::new();
    let mut data_reader = File::open(&spec.root)?
        .take(data.min(root_len))
        .chain(std::io::repeat(0).take(data.saturating_sub(root_len)));
    std::io::copy(&mut data_reader, &mut DigestWriter(&mut sha))?;
    sha.update(&tree.area);
    let root_size = data + tree.area.len() as u64;
    let manifest = Manifest::new(
        &spec.version,
        &spec.compatible,
        (root_size, bundle::to_hex(&sha.finalize())),
        [0, 1].map(|i| {
            let b = &ukis[i].bytes;
            (b.len() as u64, bundle::to_hex(&Sha256::digest(b)))
        }),
        Verity {
            hash_type: 1,
            algorithm: "sha256".into(),
            data_block_size: verity::BLOCK_SIZE as u32,
            hash_block_size: verity::BLOCK_SIZE as u32,
            data_blocks,
            hash_offset: data,
            hash_size: tree.area.len() as u64,
            superblock,
            salt: salt_hex,
            root_hash,
        },
    );
    manifest.validate()?;
    let manifest_bytes = manifest.to_bytes();

    let sk = load_secret_key(&spec.key)?;
    let pk = minisign::PublicKey::from_secret_key(&sk)
        .map_err(|e| anyhow::anyhow!("{}: {e}", spec.key.display()))?;
    let trusted = format!(
        "sysctr bundle version:{} compatible:{}",
        manifest.version, manifest.compatible
    );
    let sig = minisign::sign(
        Some(&pk),
        &sk,
        &manifest_bytes[..],
        Some(&trusted),
        Some("signature of a sysctr update bundle manifest"),
    )
    .map_err(|e| anyhow::anyhow!("signing with {}: {e}", spec.key.display()))?
    .into_string();
    // Check it the way init will.
    let pk_text = pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_string();
    let key = TrustedKey::parse(&pk_text, &spec.key.display().to_string())?;
    let key_id = signature::verify(&manifest_bytes, &sig, &[key])?;

    let tmp = out.with_extension("bundle.tmp");
    let mut w =
        BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    let mut data_reader = File::open(&spec.root)?
        .take(data.min(root_len))
        .chain(std::io::repeat(0).take(data.saturating_sub(root_len)));
    let mut root_reader = (&mut data_reader).chain(&tree.area[..]);
    let bytes = bundle::write_bundle(
        &mut w,
        &manifest,
        &manifest_bytes,
        sig.as_bytes(),
        [
            &mut root_reader,
            &mut &ukis[0].bytes[..],
            &mut &ukis[1].bytes[..],
        ],
    )?;
    w.into_inner()?.sync_all()?;
    fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(Made {
        manifest,
        key_id,
        bytes,
    })
}

struct DigestWriter<'a>(&'a mut Sha256);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the bundle's manifest to `out` and its signature to `out.minisig`, checks the
/// signature against `public` and returns the signing key's id.
pub fn extract_manifest(bundle_path: &Path, out: &Path, public: &Path) -> Result<String> {
    let mut f =
        File::open(bundle_path).with_context(|| format!("opening {}", bundle_path.display()))?;
    let head = bundle::read_head(&mut f).with_context(|| bundle_path.display().to_string())?;
    fs::write(out, &head.manifest).with_context(|| format!("writing {}", out.display()))?;
    let sig_path = PathBuf::from(format!("{}.minisig", out.display()));
    fs::write(&sig_path, &head.signature)
        .with_context(|| format!("writing {}", sig_path.display()))?;
    let pub_text =
        fs::read_to_string(public).with_context(|| format!("reading {}", public.display()))?;
    let key = TrustedKey::parse(&pub_text, &public.display().to_string())?;
    let id = signature::verify(&head.manifest, &head.signature, &[key]).with_context(|| {
        format!(
            "{}: checked with {}",
            bundle_path.display(),
            public.display()
        )
    })?;
    Manifest::parse(&head.manifest).with_context(|| bundle_path.display().to_string())?;
    Ok(id)
}

#[cfg(test)]
mod tests;
