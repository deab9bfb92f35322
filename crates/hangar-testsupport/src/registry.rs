//! A real OCI distribution registry for tests: Debian's `docker-registry`
//! (the CNCF distribution server) on 127.0.0.1, storing in the test's own
//! directory, killed by PID when dropped.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry; `addr` is `127.0.0.1:PORT`.
pub struct LocalRegistry {
    pub addr: String,
    child: Child,
}

impl LocalRegistry {
    /// Starts one storing under `dir` (created). Panics, naming the
    /// package, when `docker-registry` is not installed.
    #[track_caller]
    pub fn start(dir: &Path) -> LocalRegistry {
        std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let reg = LocalRegistry { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within 20 s; see {}",
                reg.addr,
                dir.join("registry.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
