//! A local OCI registry for tests that pull: Debian's `docker-registry` serving a directory
//! on a free loopback port, up (its `GET /v2/` answers 200) before [`Registry::start`]
//! returns, and killed when the [`Registry`] is dropped, however the caller ends.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `docker-registry` package puts the binary.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";

/// How long the registry may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry`; killed and reaped on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:port`, for `docker://{addr}/name:tag` references.
    pub addr: String,
}

impl Registry {
    /// Starts the registry with its config, storage (`dir/storage`) and log
    /// (`dir/registry.log`) in `dir` (created if missing). The error names what failed: the
    /// spawn (with the package to install), or no answer in time (with the registry's log).
    pub fn start(dir: &Path) -> io::Result<Registry> {
        fs::create_dir_all(dir)?;
        let addr = format!("127.0.0.1:{}", crate::qemu::free_port()?);
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = dir.join("registry.log");
        let child = Command::new(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {DOCKER_REGISTRY}: {e} (apt-get install docker-registry)"
                    ),
                )
            })?;
        let registry = Registry { child, addr };
        let deadline = Instant::now() + START_TIMEOUT;
        while !registry.answers() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "docker-registry did not answer on {} within {} s: {}",
                        registry.addr,
                        START_TIMEOUT.as_secs(),
                        fs::read_to_string(&log).unwrap_or_default()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }

    /// `GET /v2/` answers 200: the registry is up.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return false;
        };
        let mut answer = String::new();
        s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && (answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
