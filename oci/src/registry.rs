//! Pulling an image from a registry (the OCI distribution API) into a local image layout,
//! which is then imported like any other layout, so every blob is checked twice: as it
//! arrives, against the digest and size its manifest gives, and again by the import.
//!
//! Plain HTTP only (a registry on this machine or a local mirror): there is no TLS and no
//! token authentication; a registry that answers 401 gets an error saying so. From an index
//! or manifest list, linux/amd64 is picked.

use super::digest::Digest;
use super::error::{OciError, Result};
use super::layout::LayoutWriter;
use super::store::{self, JSON_LIMIT};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The tag the pulled image gets in the local layout.
pub const LOCAL_TAG: &str = "pulled";

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// `docker://HOST[:PORT]/REPOSITORY[:TAG|@sha256:DIGEST]` (tag `latest` when neither).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag, or a digest (`sha256:…`).
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> std::result::Result<Reference, String> {
        let bad = |why: &str| {
            format!("registry reference {s:?}: {why} (docker://HOST[:PORT]/NAME[:TAG|@DIGEST])")
        };
        let rest = s
            .strip_prefix("docker://")
            .ok_or_else(|| bad("must start with docker://"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no repository after the host"))?;
        if registry.is_empty() || !registry.contains([':', '.']) && registry != "localhost" {
            return Err(bad("the registry host must be given (e.g. 127.0.0.1:5000)"));
        }
        let (repository, reference) = if let Some((r, d)) = path.split_once('@') {
            if Digest::parse(d).is_none() {
                return Err(bad("the digest must be sha256:<64 hex digits>"));
            }
            (r, d.to_string())
        } else {
            match path.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r, t.to_string()),
                _ => (path, "latest".to_string()),
            }
        };
        let ok_repo = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !ok_repo {
            return Err(bad(
                "the repository name must be lowercase [a-z0-9._-] parts",
            ));
        }
        let ok_tag = reference.starts_with("sha256:")
            || (!reference.is_empty()
                && reference.len() <= 128
                && reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        if !ok_tag {
            return Err(bad("bad tag"));
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository: repository.to_string(),
            reference,
        })
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "http://{}/v2/{}/{kind}/{reference}",
            self.registry, self.repository
        )
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "docker://{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

struct Client {
    agent: ureq::Agent,
    image: String,
}

impl Client {
    fn err(&self, message: String) -> OciError {
        OciError::Registry {
            image: self.image.clone(),
            message,
        }
    }

    /// GET with the status checked; 401 and 404 get their own words.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = self.agent.get(url);
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let resp = req
            .call()
            .map_err(|e| self.err(format!("GET {url}: {e}")))?;
        match resp.status().as_u16() {
            200 => Ok(resp),
            401 => {
                let how = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| format!(" (it asks for: {v})"))
                    .unwrap_or_default();
                Err(self.err(format!(
                    "GET {url}: 401 Unauthorized{how}: registry authentication is not supported; use a registry that allows anonymous pulls"
                )))
            }
            404 => Err(self.err(format!("GET {url}: 404 Not Found"))),
            s => Err(self.err(format!("GET {url}: HTTP {s}"))),
        }
    }

    /// A manifest or index, checked against `expected` (a digest reference) or the
    /// registry's Docker-Content-Digest header. Returns (bytes, media type, digest).
    fn manifest(&self, r: &Reference, reference: &str) -> Result<(Vec<u8>, String, Digest)> {
        let url = r.url("manifests", reference);
        let mut resp = self.get(&url, Some(ACCEPT))?;
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .body_mut()
            .with_config()
            .limit(JSON_LIMIT)
            .read_to_vec()
            .map_err(|e| self.err(format!("GET {url}: {e}")))?;
        let digest = Digest::of(&body);
        let expected =
            Digest::parse(reference).or_else(|| header_digest.as_deref().and_then(Digest::parse));
        if let Some(expected) = expected {
            if expected != digest {
                return Err(OciError::DigestMismatch {
                    image: self.image.clone(),
                    digest: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        // The document's own mediaType wins over a generic Content-Type.
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or(content_type);
        Ok((body, media_type, digest))
    }

    /// Streams a blob into the layout, checking its digest and size.
    fn blob(&self, r: &Reference, layout: &LayoutWriter, desc: &Descriptor) -> Result<()> {
        let want = store::checked_digest(&self.image, desc.digest().as_ref())?;
        if layout.has_blob(&want, desc.size()) {
            return Ok(());
        }
        let url = r.url("blobs", want.as_str());
        let resp = self.get(&url, None)?;
        // Never more than one byte past the size the manifest gives: a registry that sends
        // without end is caught by the size check, not by a full disk.
        let body = resp.into_body().into_reader().take(desc.size() + 1);
        let (got, size) = layout
            .put_blob_from(body)
            .map_err(|e| self.err(format!("GET {url}: {e}")))?;
        if got != want || size != desc.size() {
            let _ = fs::remove_file(layout.dir().join(got.blob_path()));
            if got != want {
                return Err(OciError::DigestMismatch {
                    image: self.image.clone(),
                    digest: want.to_string(),
                    actual: got.to_string(),
                });
            }
            return Err(OciError::SizeMismatch {
                image: self.image.clone(),
                digest: want.to_string(),
                expected: desc.size(),
                actual: size,
            });
        }
        Ok(())
    }
}

/// Pulls `r` (its linux/amd64 image) into the layout at `dir`, tagged [`LOCAL_TAG`].
pub fn pull(r: &Reference, dir: &Path) -> Result<()> {
    let image = r.to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into();
    let client = Client {
        agent,
        image: image.clone(),
    };
    let layout = LayoutWriter::create(dir).map_err(|e| OciError::Output {
        path: dir.to_path_buf(),
        message: format!("cannot create the pull layout: {e}"),
    })?;
    let store_err = |e: std::io::Error| OciError::Output {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let format_err = |what: &str, e: serde_json::Error| OciError::Format {
        image: image.clone(),
        what: what.to_string(),
        message: e.to_string(),
    };

    let (mut body, mut media_type, mut digest) = client.manifest(r, &r.reference)?;
    if media_type.contains("image.index") || media_type.contains("manifest.list") {
        let index: ImageIndex =
            serde_json::from_slice(&body).map_err(|e| format_err(digest.as_str(), e))?;
        let desc = store::select(&image, digest.as_str(), index.manifests(), None)?;
        (body, media_type, digest) = client.manifest(r, desc.digest().as_ref())?;
        if body.len() as u64 != desc.size() {
            return Err(OciError::SizeMismatch {
                image,
                digest: digest.to_string(),
                expected: desc.size(),
                actual: body.len() as u64,
            });
        }
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&body).map_err(|e| format_err(digest.as_str(), e))?;
    client.blob(r, &layout, manifest.config())?;
    for layer in manifest.layers() {
        client.blob(r, &layout, layer)?;
    }
    layout.put_blob(&body).map_err(store_err)?;
    layout
        .write_index(&[serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": body.len(),
            "annotations": { "org.opencontainers.image.ref.name": LOCAL_TAG },
        })])
        .map_err(store_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    #[test]
    fn references_parse() {
        let r = Reference::parse("docker://127.0.0.1:5000/apps/web:1.0").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "apps/web", "1.0")
        );
        assert_eq!(r.to_string(), "docker://127.0.0.1:5000/apps/web:1.0");
        let latest = Reference::parse("docker://localhost/web").unwrap();
        assert_eq!(latest.reference, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let by_digest = Reference::parse(&format!("docker://h:1/web@{d}")).unwrap();
        assert_eq!(by_digest.reference, d);
        assert_eq!(by_digest.to_string(), format!("docker://h:1/web@{d}"));
        for bad in [
            "127.0.0.1:5000/web",
            "docker://web",
            "docker://nginx/web",
            "docker://h:1/Web",
            "docker://h:1/web@sha256:abc",
            "docker://h:1/web:bad/tag",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    /// path → (status, headers, body).
    type Routes = HashMap<String, (u16, Vec<(&'static str, String)>, Vec<u8>)>;

    /// A registry stand-in: answers each path from the table, for `n` requests.
    fn fake(routes: Routes, n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                }
                let (status, headers, body) =
                    routes
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, Vec::new(), Vec::new()));
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                stream.write_all(out.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        addr
    }

    #[test]
    fn unauthorized_is_a_clear_error() {
        let mut routes = HashMap::new();
        routes.insert(
            "/v2/web/manifests/1".to_string(),
            (
                401,
                vec![(
                    "WWW-Authenticate",
                    "Bearer realm=\"http://auth/token\"".to_string(),
                )],
                Vec::new(),
            ),
        );
        let addr = fake(routes, 1);
        let t = tempfile::tempdir().unwrap();
        let r = Reference::parse(&format!("docker://{addr}/web:1")).unwrap();
        let err = pull(&r, t.path()).unwrap_err().to_string();
        assert!(
            err.contains("401")
                && err.contains("authentication is not supported")
                && err.contains("Bearer"),
            "{err}"
        );
        assert!(err.contains(&format!("docker://{addr}/web:1")), "{err}");
    }

    #[test]
    fn a_blob_with_the_wrong_content_is_refused_and_not_kept() {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let cd = Digest::of(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": []
        }))
        .unwrap();
        let mut tampered = config.clone();
        tampered[2] = b'X';
        let mut routes = HashMap::new();
        routes.insert(
            "/v2/web/manifests/1".to_string(),
            (
                200,
                vec![(
                    "Content-Type",
                    "application/vnd.oci.image.manifest.v1+json".to_string(),
                )],
                manifest,
            ),
        );
        routes.insert(format!("/v2/web/blobs/{cd}"), (200, Vec::new(), tampered));
        let addr = fake(routes, 2);
        let t = tempfile::tempdir().unwrap();
        let r = Reference::parse(&format!("docker://{addr}/web:1")).unwrap();
        let err = pull(&r, t.path()).unwrap_err();
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(cd.as_str()), "{err}");
        let kept: Vec<_> = fs::read_dir(t.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn a_manifest_not_matching_its_digest_header_is_refused() {
        let mut routes = HashMap::new();
        let wrong = format!("sha256:{}", "0".repeat(64));
        routes.insert(
            "/v2/web/manifests/1".to_string(),
            (
                200,
                vec![("Docker-Content-Digest", wrong.clone())],
                b"{}".to_vec(),
            ),
        );
        let addr = fake(routes, 1);
        let t = tempfile::tempdir().unwrap();
        let r = Reference::parse(&format!("docker://{addr}/web:1")).unwrap();
        let err = pull(&r, t.path()).unwrap_err().to_string();
        assert!(err.contains(&wrong), "{err}");
    }
}
