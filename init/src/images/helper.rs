//! The image helper: `init --image-helper import|rm --store DIR --image NAME:TAG`, the
//! process that does the store's long work outside PID 1's event loop (invariant 11).
//! `import` reads the archive on stdin (copied to a file in the store first, bounded: the
//! tar is read by member offset, and stdin may be a pipe from ssh), unpacks what the layer store does not have yet, and
//! writes the new refs; `rm` drops a ref. Both then collect the layers no ref needs. The
//! helper runs as uid 0 with no capabilities and `no_new_privs`, in a mount namespace of
//! its own: it can write only what root owns, which is the store, and can mount nothing.
//! Its result is one JSON line on stdout.

use super::{write_refs, Image, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub const HELPER_FLAG: &str = "--image-helper";
/// The most bytes copied from a pipe before the import is refused.
pub const MAX_ARCHIVE_BYTES: u64 = 16 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Import,
    Rm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    pub action: Action,
    pub store: PathBuf,
    pub image: String,
}

impl HelperArgs {
    pub fn to_args(&self) -> Vec<String> {
        vec![
            HELPER_FLAG.into(),
            match self.action {
                Action::Import => "import".into(),
                Action::Rm => "rm".into(),
            },
            "--store".into(),
            self.store.display().to_string(),
            "--image".into(),
            self.image.clone(),
        ]
    }

    pub fn parse(args: &[String]) -> Result<HelperArgs, String> {
        let mut action = None;
        let mut store = None;
        let mut image = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                HELPER_FLAG => {}
                "import" => action = Some(Action::Import),
                "rm" => action = Some(Action::Rm),
                "--store" => store = Some(PathBuf::from(val()?)),
                "--image" => image = Some(val()?),
                other => return Err(format!("unknown image helper argument {other:?}")),
            }
        }
        let image = image.ok_or("--image missing")?;
        manifest::validate::check_image_ref(&image)?;
        Ok(HelperArgs {
            action: action.ok_or("import or rm missing")?,
            store: store.ok_or("--store missing")?,
            image,
        })
    }
}

/// The helper's one line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Imported {
        image: Image,
        unpacked: usize,
        shared: usize,
        warnings: Vec<String>,
        collected: usize,
    },
    Removed {
        collected: usize,
    },
    Error {
        message: String,
    },
}

/// The helper process's `main`: its exit code.
pub fn helper_main(args: &[String]) -> i32 {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let outcome = match HelperArgs::parse(args).and_then(|a| {
        confine()?;
        run(&a, &mut io::stdin())
    }) {
        Ok(o) => o,
        Err(message) => Outcome::Error { message },
    };
    let code = i32::from(matches!(outcome, Outcome::Error { .. }));
    if let Ok(text) = serde_json::to_string(&outcome) {
        let mut out = io::stdout();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
    code
}

/// A mount namespace of its own, then no capabilities at all and no_new_privs.
fn confine() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare the mount namespace: {e}"))?;
    for cap in caps::all() {
        let _ = caps::drop(None, caps::CapSet::Bounding, cap);
    }
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        caps::clear(None, set).map_err(|e| format!("drop capabilities: {e}"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
}

/// Does the work of `a`; `input` is the archive for an import.
pub fn run(a: &HelperArgs, input: &mut dyn Read) -> Result<Outcome, String> {
    let store = Store::at(&a.store);
    let layers = store.layers_dir();
    match a.action {
        Action::Import => {
            let tmp_dir = a.store.join("tmp");
            fs::create_dir_all(&tmp_dir)
                .map_err(|e| format!("create {}: {e}", tmp_dir.display()))?;
            let tmp = tmp_dir.join(format!("import-{}.tar", std::process::id()));
            let result = (|| {
                copy_bounded(input, &tmp)?;
                let tag = None;
                let stored = oci::chain::import_archive(&tmp, &a.image, tag, &layers)
                    .map_err(|e| e.to_string())?;
                let image = Image {
                    id: stored.id,
                    chain: stored.chain,
                };
                let mut refs = store.refs_checked()?;
                refs.insert(a.image.clone(), image.clone());
                write_refs(&a.store, &refs)?;
                let collected = collect(&store, &refs)?;
                Ok(Outcome::Imported {
                    image,
                    unpacked: stored.unpacked,
                    shared: stored.shared,
                    warnings: stored.warnings,
                    collected,
                })
            })();
            let _ = fs::remove_file(&tmp);
            result
        }
        Action::Rm => {
            let mut refs = store.refs_checked()?;
            if refs.remove(&a.image).is_none() {
                return Err(format!("no image {:?} in the store", a.image));
            }
            write_refs(&a.store, &refs)?;
            let collected = collect(&store, &refs)?;
            Ok(Outcome::Removed { collected })
        }
    }
}

fn collect(store: &Store, refs: &super::Refs) -> Result<usize, String> {
    let keep: BTreeSet<String> = refs
        .values()
        .flat_map(|i| i.chain.iter().cloned())
        .collect();
    oci::chain::collect(&store.layers_dir(), &keep)
        .map(|r| r.len())
        .map_err(|e| format!("collect unused layers: {e}"))
}

/// Copies the archive to `to`, at most [`MAX_ARCHIVE_BYTES`].
fn copy_bounded(input: &mut dyn Read, to: &Path) -> Result<(), String> {
    let mut f = File::create(to).map_err(|e| format!("create {}: {e}", to.display()))?;
    let n = io::copy(&mut input.take(MAX_ARCHIVE_BYTES + 1), &mut f)
        .map_err(|e| format!("read the archive: {e}"))?;
    if n > MAX_ARCHIVE_BYTES {
        return Err(format!(
            "the archive is larger than the maximum of {MAX_ARCHIVE_BYTES} bytes"
        ));
    }
    if n == 0 {
        return Err("the archive is empty".into());
    }
    Ok(())
}
