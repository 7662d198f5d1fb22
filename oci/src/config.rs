//! What an image says about running it: Entrypoint + Cmd, Env, WorkingDir and User from its
//! config, as data the appliance builder merges into a service entry where the entry leaves
//! the field out.

use super::error::{OciError, Result};
use oci_spec::image::ImageConfiguration;
use serde::Serialize;
use serde_json::{Map, Value};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The run defaults of one image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceDefaults {
    /// Entrypoint followed by Cmd; empty when the image has neither.
    pub args: Vec<String>,
    /// `KEY=VALUE`, in the image's order.
    pub env: Vec<String>,
    /// WorkingDir, when the image sets one.
    pub cwd: Option<String>,
    /// User, resolved to numbers with the image's own /etc/passwd and /etc/group.
    pub user: Option<UserIds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
}

impl ServiceDefaults {
    /// Reads the defaults from `config`; `root` is the unpacked image (for user names).
    pub fn from_config(image: &str, config: &ImageConfiguration, root: &Path) -> Result<Self> {
        let Some(c) = config.config() else {
            return Ok(ServiceDefaults::default());
        };
        let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
        args.extend(c.cmd().clone().unwrap_or_default());
        let env = c.env().clone().unwrap_or_default();
        let cwd = c.working_dir().clone().filter(|w| !w.is_empty());
        if let Some(w) = &cwd {
            if !w.starts_with('/') {
                return Err(OciError::Config {
                    image: image.into(),
                    field: "WorkingDir",
                    message: format!("{w:?} is not absolute"),
                });
            }
        }
        let user = match c.user().as_deref() {
            None | Some("") => None,
            Some(spec) => Some(resolve_user(image, spec, root)?),
        };
        Ok(ServiceDefaults {
            args,
            env,
            cwd,
            user,
        })
    }

    /// Fills the fields a service entry (a manifest entry as JSON) leaves out: `args`,
    /// `cwd` and `user` are taken whole; `env` is the image's with the entry's entries
    /// added, an entry's `KEY=` replacing the image's.
    pub fn apply_to(&self, entry: &mut Map<String, Value>) {
        if !entry.contains_key("args") && !self.args.is_empty() {
            entry.insert("args".into(), self.args.clone().into());
        }
        if !entry.contains_key("cwd") {
            if let Some(cwd) = &self.cwd {
                entry.insert("cwd".into(), cwd.clone().into());
            }
        }
        if !entry.contains_key("user") {
            if let Some(u) = self.user {
                entry.insert(
                    "user".into(),
                    serde_json::json!({ "uid": u.uid, "gid": u.gid }),
                );
            }
        }
        if self.env.is_empty() {
            return;
        }
        let own: Vec<Value> = match entry.get("env") {
            Some(Value::Array(a)) => a.clone(),
            // Not a list: left for the manifest validation to report.
            Some(_) => return,
            None => Vec::new(),
        };
        let key = |s: &str| s.split_once('=').map(|(k, _)| k.to_string());
        let own_keys: Vec<String> = own
            .iter()
            .filter_map(|v| v.as_str().and_then(key))
            .collect();
        let mut env: Vec<Value> = self
            .env
            .iter()
            .filter(|e| key(e).is_none_or(|k| !own_keys.contains(&k)))
            .map(|e| Value::String(e.clone()))
            .collect();
        env.extend(own);
        entry.insert("env".into(), Value::Array(env));
    }
}

/// `user`, `uid`, `user:group`, `uid:gid`, `uid:group`, `user:gid`. Without a group, the
/// user's primary group from /etc/passwd (0 for a uid the file does not list).
fn resolve_user(image: &str, spec: &str, root: &Path) -> Result<UserIds> {
    let err = |message: String| OciError::Config {
        image: image.into(),
        field: "User",
        message,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(root, "etc/passwd").map_err(|e| err(e.to_string()))?;
    // name:x:uid:gid:...
    let passwd_entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.as_deref()?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && pred(&f)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd_entry(&|f| f[2] == user).map(|(_, g)| g).unwrap_or(0),
        ),
        Err(_) => passwd_entry(&|f| f[0] == user).ok_or_else(|| {
            err(format!(
                "user {user:?} is not in the image's /etc/passwd (use a numeric uid)"
            ))
        })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read_in_root(root, "etc/group").map_err(|e| err(e.to_string()))?;
                groups
                    .as_deref()
                    .and_then(|text| {
                        text.lines().find_map(|l| {
                            let f: Vec<&str> = l.split(':').collect();
                            (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                        })
                    })
                    .ok_or_else(|| {
                        err(format!(
                            "group {g:?} is not in the image's /etc/group (use a numeric gid)"
                        ))
                    })?
            }
        },
    };
    Ok(UserIds { uid, gid })
}

/// Reads a file of the unpacked image, following symlinks only inside it.
fn read_in_root(root: &Path, rel: &str) -> io::Result<Option<String>> {
    match resolve_in_root(root, rel) {
        Some(p) if p.is_file() => fs::read_to_string(p).map(Some),
        _ => Ok(None),
    }
}

/// `rel` inside `root` as the container sees it: absolute symlinks start again at `root`,
/// and `..` stops at it. `None` if a component is missing or it loops.
pub fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut cur: Vec<String> = Vec::new();
    let mut pending: Vec<String> = rel.split('/').rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let host: PathBuf = std::iter::once(root.to_path_buf())
            .chain(cur.iter().map(PathBuf::from))
            .chain(std::iter::once(PathBuf::from(&part)))
            .collect();
        let meta = fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&host).ok()?.to_string_lossy().into_owned();
            if target.starts_with('/') {
                cur.clear();
            }
            pending.extend(target.split('/').rev().map(String::from));
        } else {
            cur.push(part);
        }
    }
    Some(
        std::iter::once(root.to_path_buf())
            .chain(cur.iter().map(PathBuf::from))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: Value) -> ImageConfiguration {
        let mut full = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] }
        });
        full["config"] = json;
        serde_json::from_value(full).unwrap()
    }

    fn root_with_passwd() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(t.path().join("etc/group"), "root:x:0:\nweb:x:35:\n").unwrap();
        t
    }

    #[test]
    fn entrypoint_and_cmd_become_args() {
        let t = root_with_passwd();
        let c = config(serde_json::json!({
            "Entrypoint": ["/bin/httpd", "-f"], "Cmd": ["-p", "80"],
            "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/srv", "User": "www"
        }));
        let d = ServiceDefaults::from_config("img", &c, t.path()).unwrap();
        assert_eq!(d.args, ["/bin/httpd", "-f", "-p", "80"]);
        assert_eq!(d.env, ["PATH=/bin", "A=1"]);
        assert_eq!(d.cwd.as_deref(), Some("/srv"));
        assert_eq!(d.user, Some(UserIds { uid: 33, gid: 34 }));
    }

    #[test]
    fn user_forms_resolve_with_the_images_files() {
        let t = root_with_passwd();
        let user = |spec: &str| resolve_user("img", spec, t.path());
        assert_eq!(user("33").unwrap(), UserIds { uid: 33, gid: 34 });
        assert_eq!(user("1000").unwrap(), UserIds { uid: 1000, gid: 0 });
        assert_eq!(user("www:web").unwrap(), UserIds { uid: 33, gid: 35 });
        assert_eq!(user("www:7").unwrap(), UserIds { uid: 33, gid: 7 });
        let err = user("nobody").unwrap_err().to_string();
        assert!(
            err.contains("img") && err.contains("User") && err.contains("nobody"),
            "{err}"
        );
        assert!(user("www:nogroup")
            .unwrap_err()
            .to_string()
            .contains("nogroup"));
    }

    #[test]
    fn passwd_symlink_out_of_the_root_is_read_inside_it() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("etc/passwd")).unwrap();
        // The link points at the image's own /etc/passwd (itself): a loop, so no file.
        assert!(resolve_user("img", "root", t.path()).is_err());
    }

    #[test]
    fn relative_working_dir_is_an_error() {
        let t = root_with_passwd();
        let c = config(serde_json::json!({ "WorkingDir": "srv" }));
        let err = ServiceDefaults::from_config("img", &c, t.path()).unwrap_err();
        assert!(err.to_string().contains("WorkingDir"), "{err}");
    }

    #[test]
    fn entry_fields_win_and_env_merges_by_key() {
        let d = ServiceDefaults {
            args: vec!["/bin/httpd".into()],
            env: vec!["PATH=/bin".into(), "MODE=prod".into()],
            cwd: Some("/srv".into()),
            user: Some(UserIds { uid: 33, gid: 34 }),
        };
        let mut entry: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "name": "web", "env": ["MODE=dev", "EXTRA=1"], "cwd": "/"
        }))
        .unwrap();
        d.apply_to(&mut entry);
        assert_eq!(entry["args"], serde_json::json!(["/bin/httpd"]));
        assert_eq!(
            entry["env"],
            serde_json::json!(["PATH=/bin", "MODE=dev", "EXTRA=1"])
        );
        assert_eq!(entry["cwd"], "/");
        assert_eq!(entry["user"], serde_json::json!({"uid": 33, "gid": 34}));

        let mut given: Map<String, Value> =
            serde_json::from_value(serde_json::json!({ "args": ["/bin/sh"] })).unwrap();
        d.apply_to(&mut given);
        assert_eq!(given["args"], serde_json::json!(["/bin/sh"]));
    }
}
