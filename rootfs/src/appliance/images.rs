//! The user services whose roots come from OCI images: each image imported into its
//! container root, its service entry completed from the image config (command line,
//! working directory, user, environment), its program looked up in the root, and the
//! identical files of all roots hard-linked.

use super::{
    manifest_problems, Appliance, ApplianceError, PlannedContainer, PlannedSource, Result,
    DEFAULT_PATH, MOUNT_POINTS,
};
use crate::oci::{self, ImageRef, Imported};
use serde_json::{Map, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// The user services whose roots came from images, after [`import_images`].
#[derive(Debug)]
pub struct ImportedServices {
    /// Every service entry of the plan, in order, the image ones completed.
    pub services: Vec<Value>,
    pub imported: Vec<(String, Imported)>,
    pub dedup: oci::dedup::Deduplicated,
}

/// Imports each image root of `plan` into `containers/<name>/rootfs`, completes its entry
/// from the image config, makes its mount points, checks its program is in it, validates
/// the whole manifest, and hard-links identical files under `containers`.
pub fn import_images(
    appliance: &Appliance,
    plan: &[PlannedContainer],
    containers: &Path,
) -> Result<ImportedServices> {
    let mut services = Vec::new();
    let mut imported = Vec::new();
    let mut problems = Vec::new();
    for c in plan {
        let mut entry = c.entry.clone();
        if let PlannedSource::Image(image) = &c.source {
            let root = containers.join(&c.name).join("rootfs");
            let got = oci::import(image, &root).map_err(|error| ApplianceError::Image {
                path: appliance.path.clone(),
                service: c.name.clone(),
                error: Box::new(error),
            })?;
            got.defaults.apply_to(&mut entry);
            if !entry.contains_key("args") {
                problems.push(format!(
                    "service {:?}: args: not given, and image {image} has no Entrypoint or Cmd",
                    c.name
                ));
            }
            problems.extend(prepare_root(&c.name, &root, &entry, image));
            imported.push((c.name.clone(), got));
        }
        services.push(Value::Object(entry));
    }
    problems.extend(manifest_problems(&services, &appliance.path));
    if !problems.is_empty() {
        return Err(ApplianceError::Invalid {
            path: appliance.path.clone(),
            problems,
        });
    }
    let dedup = oci::dedup::link_identical(containers).map_err(|e| ApplianceError::Invalid {
        path: appliance.path.clone(),
        problems: vec![format!(
            "linking identical files in {}: {e}",
            containers.display()
        )],
    })?;
    Ok(ImportedServices {
        services,
        imported,
        dedup,
    })
}

/// Makes the mount points an imported root needs and checks its program is there.
pub(super) fn prepare_root(
    name: &str,
    root: &Path,
    entry: &Map<String, Value>,
    image: &ImageRef,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mounts = entry
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("destination").and_then(Value::as_str));
    for dest in MOUNT_POINTS.iter().copied().chain(mounts) {
        if let Err(e) = oci::unpack::ensure_dir(root, dest) {
            problems.push(format!(
                "service {name:?}: mount point {dest}: {e} (image {image})"
            ));
        }
    }
    let args0 = entry
        .get("args")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    if let Some(prog) = args0 {
        let path_var = entry
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        if find_program(root, prog, path_var).is_none() {
            problems.push(format!(
                "service {name:?}: args[0]: program {prog:?} is not in its root (image {image}, PATH {path_var})"
            ));
        }
    }
    problems
}

/// `prog` as the container would find it: a path, or a name looked up in `path_var`.
pub fn find_program(root: &Path, prog: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let candidates: Vec<String> = if prog.contains('/') {
        vec![prog.to_string()]
    } else {
        path_var
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{d}/{prog}"))
            .collect()
    };
    candidates
        .iter()
        .filter_map(|c| oci::config::resolve_in_root(root, c))
        .find(|p| is_exec(p))
}
