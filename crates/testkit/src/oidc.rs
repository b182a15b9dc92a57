//! A real OpenID Connect provider for tests: panva's `oidc-provider` (npm, installed by
//! `scripts/test-deps.sh` into `tests/oidc-provider`) on a free loopback port, with one client
//! and its development login page (any login and password sign in as `<login>@idp.example.com`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OidcProvider {
    child: Child,
    pub issuer: String,
}

impl OidcProvider {
    pub fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> OidcProvider {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed in {} (scripts/test-deps.sh installs it)",
            dir.display()
        );
        let port = crate::process::free_port();
        let child = Command::new("node")
            .current_dir(&dir)
            .args([
                "provider.mjs",
                &port.to_string(),
                client_id,
                client_secret,
                redirect_uri,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "oidc-provider did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        OidcProvider {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
