//! Building the kernel: Debian's `linux-source` tarball, `make tinyconfig`, the fragments in
//! `kernel-config/` merged with the kernel's own `merge_config.sh`, `make olddefconfig`, then a
//! check that every option a fragment asks for really ended up in the final `.config` (Kconfig
//! silently drops an option whose dependencies are not met).
//!
//! The result is cached outside the checkout, under `~/.cache/sysctr/kernel/<hash>/bzImage`,
//! keyed by the source version and the fragments' contents, so every checkout and CI run on a
//! machine shares it. One build tree per source version is reused (under a lock), so changing
//! one fragment rebuilds only what that option touches.

use crate::util::{ensure_debian_packages, output, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Debian packages the kernel build needs (the source itself and its build tools).
pub const KERNEL_PACKAGES: &[&str] = &[
    "linux-source",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
];

/// Where built kernels and the extracted source live (outside the checkout).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYSCTR_CACHE") {
        return PathBuf::from(dir).join("kernel");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("sysctr").join("kernel")
}

/// The kernel config fragments, sorted by file name.
pub fn fragments() -> Result<Vec<PathBuf>> {
    fragments_in(&workspace_root().join("kernel-config"))
}

/// The newest Debian linux-source tarball and its package version.
fn source_tarball() -> Result<(PathBuf, String)> {
    let mut tarballs: Vec<PathBuf> = fs::read_dir("/usr/src")
        .context("cannot read /usr/src")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("linux-source-") && n.ends_with(".tar.xz"))
        })
        .collect();
    tarballs.sort();
    let Some(tarball) = tarballs.pop() else {
        bail!("no /usr/src/linux-source-*.tar.xz (apt-get install linux-source)");
    };
    let package = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.xz"))
        .expect("filtered above")
        .to_string();
    let version = output(Command::new("dpkg-query").args(["-W", "-f=${Version}", &package]))
        .unwrap_or_default();
    Ok((tarball, format!("{package} {version}")))
}

/// The cache key: source version plus every fragment's name and contents.
fn cache_key(source_version: &str, frags: &[PathBuf]) -> Result<String> {
    let mut text = format!("source {source_version}\n");
    for f in frags {
        text.push_str(&format!(
            "fragment {}\n{}\n",
            f.file_name().unwrap().to_string_lossy(),
            fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?
        ));
    }
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start sha256sum")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    Ok(hex
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect())
}

/// Builds (or finds in the cache) the kernel and returns the bzImage path.
/// `SYSCTR_BZIMAGE=path` skips all this and uses a kernel built elsewhere.
pub fn build() -> Result<PathBuf> {
    build_with(&[])
}

/// [`build`] with more fragments after those in `kernel-config/` (an appliance's, e.g. the
/// node's `kernel-config/node/engine.config`); a later fragment may override an option an
/// earlier one sets. A kernel with extra fragments has its own cache key and its own build
/// tree and lock (`build/<version>-<fragment names>`), so building it neither waits for nor
/// dirties the default kernel's incremental tree.
pub fn build_with(extra: &[PathBuf]) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SYSCTR_BZIMAGE") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("SYSCTR_BZIMAGE={} is not a file", path.display());
        }
        eprintln!("xtask: kernel: using SYSCTR_BZIMAGE={}", path.display());
        return Ok(path);
    }
    let mut frags = fragments()?;
    frags.extend(extra.iter().cloned());
    let variant: Vec<String> = extra
        .iter()
        .map(|f| {
            f.file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "extra".into())
        })
        .collect();
    if variant.is_empty() {
        build_fragments(&frags, None)
    } else {
        build_fragments(&frags, Some(&variant.join("+")))
    }
}

/// The `*.config` fragments of one directory, sorted by file name (at least one).
pub fn fragments_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut frags: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "config"))
        .collect();
    frags.sort();
    if frags.is_empty() {
        bail!("no *.config fragments in {}", dir.display());
    }
    Ok(frags)
}

/// Configures, checks and builds one kernel from `frags` (in merge order). `variant` names
/// a build tree and lock of its own; `None` is the default kernel's.
fn build_fragments(frags: &[PathBuf], variant: Option<&str>) -> Result<PathBuf> {
    ensure_debian_packages(KERNEL_PACKAGES)?;
    let (tarball, version) = source_tarball()?;
    let key = cache_key(&version, frags)?;
    let cache = cache_dir();
    let out_dir = cache.join(&key);
    let bzimage = out_dir.join("bzImage");
    if bzimage.exists() {
        eprintln!("xtask: kernel: cached {} ({version})", bzimage.display());
        return Ok(bzimage);
    }
    fs::create_dir_all(&cache)?;
    let lock_name = match variant {
        None => "lock".to_string(),
        Some(v) => format!("lock-{v}"),
    };
    let lock = fs::File::create(cache.join(lock_name))?;
    eprintln!("xtask: kernel: waiting for the kernel cache lock");
    lock.lock().context("cannot lock the kernel cache")?;
    if bzimage.exists() {
        return Ok(bzimage);
    }

    let stem = tarball
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .replace(".tar", "");
    let src = cache.join("src").join(version.replace(' ', "_"));
    let tree = src.join(&stem);
    if !src.join(".extracted").exists() {
        // The source tree is shared by every variant: a variant extracts it under the
        // default kernel's lock.
        let _shared = match variant {
            None => None,
            Some(_) => {
                let l = fs::File::create(cache.join("lock"))?;
                l.lock().context("cannot lock the kernel cache")?;
                Some(l)
            }
        };
        if !src.join(".extracted").exists() {
            eprintln!("xtask: kernel: extracting {}", tarball.display());
            let _ = fs::remove_dir_all(&src);
            fs::create_dir_all(&src)?;
            run(Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(&src))?;
            fs::write(src.join(".extracted"), "")?;
        }
    }
    let tree_name = match variant {
        None => version.replace(' ', "_"),
        Some(v) => format!("{}-{v}", version.replace(' ', "_")),
    };
    let obj = cache.join("build").join(tree_name);
    fs::create_dir_all(&obj)?;
    let make = |args: &[&str]| {
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10", "make", "-C"])
            .arg(&tree)
            .arg(format!("O={}", obj.display()))
            .args(args);
        cmd
    };

    eprintln!(
        "xtask: kernel: configuring (tinyconfig + {} fragments)",
        frags.len()
    );
    run(make(&["tinyconfig"]).stdout(Stdio::null()))?;
    run(Command::new(tree.join("scripts/kconfig/merge_config.sh"))
        .current_dir(&obj)
        .args(["-m", "-O"])
        .arg(&obj)
        .arg(obj.join(".config"))
        .args(frags)
        .stdout(Stdio::null()))?;
    run(make(&["olddefconfig"]).stdout(Stdio::null()))?;
    check_config(&obj.join(".config"), frags)?;

    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    eprintln!(
        "xtask: kernel: building bzImage ({jobs}, nice 10; 8-15 min on 2 cores the first time)"
    );
    let log_path = obj.join("build.log");
    build_with_progress(make(&[&jobs, "bzImage"]).arg("V=0"), &log_path)?;

    let tmp = cache.join(format!("{key}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    fs::copy(obj.join("arch/x86/boot/bzImage"), tmp.join("bzImage"))?;
    fs::copy(obj.join(".config"), tmp.join("config"))?;
    let _ = fs::remove_dir_all(&out_dir);
    fs::rename(&tmp, &out_dir)?;
    eprintln!("xtask: kernel: built {}", bzimage.display());
    Ok(bzimage)
}

/// Runs the kernel build, printing a progress line every 30 s and keeping the full log.
fn build_with_progress(cmd: &mut Command, log_path: &Path) -> Result<()> {
    let mut child = cmd
        .env("KBUILD_VERBOSE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start make")?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut log = fs::File::create(log_path)?;
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut lines = 0usize;
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        lines += 1;
        writeln!(log, "{line}")?;
        if last_report.elapsed().as_secs() >= 30 {
            last_report = Instant::now();
            eprintln!(
                "xtask: kernel: {:>4}s, {lines} steps, at {}",
                start.elapsed().as_secs(),
                line.trim()
            );
        }
    }
    let status = child.wait()?;
    let errors = err_thread.join().unwrap_or_default();
    for line in &errors {
        writeln!(log, "{line}")?;
    }
    if !status.success() {
        let tail: Vec<&String> = errors.iter().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        bail!(
            "kernel build failed ({status}); full log: {}",
            log_path.display()
        );
    }
    eprintln!("xtask: kernel: compiled in {}s", start.elapsed().as_secs());
    Ok(())
}

/// Every `CONFIG_X=v` in a fragment must be exactly that in the final config, and every
/// `# CONFIG_X is not set` must not be enabled. When several fragments name one option the
/// last one wins, as in merge_config.sh (the node fragments turn on what a base fragment
/// turns off). Fails naming each option that did not stick.
pub fn check_config(final_config: &Path, frags: &[PathBuf]) -> Result<()> {
    let text = fs::read_to_string(final_config)?;
    let mut have: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("CONFIG_") {
                have.insert(k.to_string(), v.to_string());
            }
        }
    }
    // option -> (wanted value, None for "is not set"; the fragment that asked last)
    let mut wanted: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
    for frag in frags {
        let name = frag.file_name().unwrap().to_string_lossy().into_owned();
        for line in fs::read_to_string(frag)?.lines() {
            let line = line.trim();
            if let Some(opt) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                wanted.insert(opt.to_string(), (None, name.clone()));
            } else if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("CONFIG_") {
                    wanted.insert(k.to_string(), (Some(v.to_string()), name.clone()));
                }
            }
        }
    }
    let mut missing = Vec::new();
    for (opt, (want, name)) in &wanted {
        match (want, have.get(opt)) {
            (None, Some(got)) if got == "y" || got == "m" => {
                missing.push(format!("{opt} (asked off in {name}, is on)"))
            }
            (None, _) => {}
            (Some(v), Some(got)) if got == v => {}
            (Some(v), Some(got)) => missing.push(format!("{opt}={v} (from {name}; got {got})")),
            (Some(v), None) => missing.push(format!("{opt}={v} (from {name}; not set)")),
        }
    }
    if !missing.is_empty() {
        bail!(
            "kernel config: {} requested option(s) did not end up in {} (unmet dependencies?):\n  {}",
            missing.len(),
            final_config.display(),
            missing.join("\n  ")
        );
    }
    eprintln!("xtask: kernel: every requested option is set");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_later_fragment_overrides_an_earlier_one() {
        let dir = scratch("override");
        let base = dir.join("net.config");
        let node = dir.join("engine.config");
        fs::write(
            &base,
            "# off here\n# CONFIG_NETFILTER is not set\nCONFIG_NET=y\n",
        )
        .unwrap();
        fs::write(&node, "# on for the node\nCONFIG_NETFILTER=y\n").unwrap();
        let config = dir.join(".config");
        fs::write(&config, "CONFIG_NET=y\nCONFIG_NETFILTER=y\n").unwrap();
        check_config(&config, &[base.clone(), node.clone()]).unwrap();
        // The base alone asks it off: the same final config fails, naming option and file.
        let err = check_config(&config, std::slice::from_ref(&base))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONFIG_NETFILTER (asked off in net.config, is on)"),
            "{err}"
        );
        // The other order: the base's "off" wins and the check names the override's loss.
        fs::write(&config, "CONFIG_NET=y\n").unwrap();
        check_config(&config, &[node.clone(), base.clone()]).unwrap();
        let err = check_config(&config, &[base, node])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONFIG_NETFILTER=y (from engine.config; not set)"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_value_that_did_not_stick_is_named() {
        let dir = scratch("value");
        let frag = dir.join("power.config");
        fs::write(&frag, "CONFIG_SIG=30\n").unwrap();
        let config = dir.join(".config");
        fs::write(&config, "CONFIG_SIG=10\n").unwrap();
        let err = check_config(&config, &[frag]).unwrap_err().to_string();
        assert!(
            err.contains("CONFIG_SIG=30 (from power.config; got 10)"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_empty_fragment_directory_is_an_error() {
        let dir = scratch("empty");
        let err = fragments_in(&dir).unwrap_err().to_string();
        assert!(err.contains("no *.config fragments in"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
