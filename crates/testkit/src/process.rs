//! A real `gatehouse serve` process, for tests that go through the built binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ServeProcess {
    pub child: Child,
    pub data_dir: PathBuf,
    /// Where the server's standard error goes (a file, so a chatty server never blocks).
    pub log: PathBuf,
}

impl ServeProcess {
    /// Starts `BIN serve ARGS` in `cwd` with a clean environment of GATEHOUSE_* variables plus
    /// `envs`, and waits until it has written `endpoints.json`.
    pub fn spawn(bin: &str, cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::spawn_command(bin, cwd, "serve", args, envs)
    }

    /// [`ServeProcess::spawn`] for another serving command (`gateway`).
    pub fn spawn_command(
        bin: &str,
        cwd: &Path,
        command: &str,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> ServeProcess {
        let data_dir = args
            .iter()
            .position(|a| *a == "--data-dir")
            .map(|i| cwd.join(args[i + 1]))
            .unwrap_or_else(|| cwd.join("gatehouse-data"));
        let log = cwd.join(format!(
            "{command}-{}.log",
            data_dir.file_name().unwrap_or_default().to_string_lossy()
        ));
        let mut cmd = Command::new(bin);
        cmd.current_dir(cwd)
            .arg(command)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("the server log can be created"),
            ));
        for k in [
            "GATEHOUSE_ADMIN_TOKEN",
            "GATEHOUSE_URL",
            "GATEHOUSE_TOKEN",
            "GATEHOUSE_DATA_DIR",
            "GATEHOUSE_NAME",
            "GATEHOUSE_REGION",
        ] {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("gatehouse starts");
        let mut s = ServeProcess {
            child,
            data_dir,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .data_dir
                .join(gatehouse_model::files::ENDPOINTS)
                .exists()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server exited ({status}) before it was ready: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not write endpoints.json");
    }

    pub fn endpoints(&self) -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.data_dir.join(gatehouse_model::files::ENDPOINTS))
                .expect("endpoints.json"),
        )
        .expect("endpoints.json is JSON")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(gatehouse_model::files::ADMIN_TOKEN))
            .expect("admin-token")
            .trim()
            .to_string()
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "SIGTERM did not stop the server");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `BIN ARGS` in `cwd` as a client command (no GATEHOUSE_URL, _TOKEN or _DATA_DIR from
/// the test's environment) and returns what it did.
pub fn cli(bin: &str, cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin)
        .current_dir(cwd)
        .args(args)
        .env_remove("GATEHOUSE_URL")
        .env_remove("GATEHOUSE_TOKEN")
        .env_remove("GATEHOUSE_DATA_DIR")
        .output()
        .expect("the binary runs")
}

/// Runs the CLI with the S3 test server's key (`test:test`) as its storage key: whether it
/// succeeded, its standard output and its standard error.
pub fn cli_with_storage(bin: &str, cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .current_dir(cwd)
        .args(args)
        .env("GATEHOUSE_STORAGE_KEY", "test:test")
        .env_remove("GATEHOUSE_URL")
        .env_remove("GATEHOUSE_TOKEN")
        .env_remove("GATEHOUSE_DATA_DIR")
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A loopback TCP port free now (a process started next can bind it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("loopback has a free port")
}

/// User + system CPU seconds a process has used (`/proc/PID/stat`; 0 if unreadable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks (100 per second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident memory in MiB (`/proc/PID/status`; 0 if unreadable).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
