//! A real PostgreSQL server for tests (Debian's `postgresql`, installed by
//! `scripts/test-deps.sh`): its own cluster in a temporary directory, run as the `postgres`
//! user on a free loopback port, trust authentication, no fsync; stopped on drop. It can be
//! stopped and started again on the same port and data (the failure tests).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct PostgresServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// Holds the cluster's files until the server is dropped.
    _dir: tempfile::TempDir,
}

/// Debian's server binaries: the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) if bin.join("initdb").exists() => Ok(bin),
        _ => bail!(
            "PostgreSQL is not installed: run scripts/test-deps.sh (it installs Debian's postgresql)"
        ),
    }
}

/// Runs a server binary as the `postgres` user (PostgreSQL refuses to run as root).
fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {tool} as the postgres user"))?;
    if !out.status.success() {
        bail!(
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Writes the server's certificate and key into the data directory (the key readable by the
/// postgres user alone, as PostgreSQL demands) and turns TLS on.
fn enable_tls(data: &Path, cert: &str, key: &str) -> Result<()> {
    std::fs::write(data.join("server.crt"), cert)?;
    std::fs::write(data.join("server.key"), key)?;
    for (mode, file) in [("644", "server.crt"), ("600", "server.key")] {
        let path = data.join(file);
        Command::new("chmod").arg(mode).arg(&path).status()?;
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(&path)
            .status()?;
    }
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)?;
    text.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
    std::fs::write(&conf, text)?;
    Ok(())
}

impl PostgresServer {
    /// A new cluster, started, answering on its port.
    pub fn start() -> Result<PostgresServer> {
        PostgresServer::start_with(None)
    }

    /// A new cluster accepting TLS with this certificate and key (PEM), started.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<PostgresServer> {
        PostgresServer::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Result<PostgresServer> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("gatehouse-pg").tempdir()?;
        // The postgres user must reach its data directory inside this one.
        Command::new("chmod").arg("755").arg(dir.path()).status()?;
        let data = dir.path().join("data");
        let status = Command::new("install")
            .args(["-d", "-o", "postgres", "-g", "postgres", "-m", "700"])
            .arg(&data)
            .status()
            .context("cannot create the data directory")?;
        if !status.success() {
            bail!("cannot create {} for the postgres user", data.display());
        }
        let data_arg = data.to_string_lossy().into_owned();
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                &data_arg,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )?;
        if let Some((cert, key)) = tls {
            enable_tls(&data, cert, key)?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = PostgresServer {
            port,
            bin,
            data,
            _dir: dir,
        };
        server.start_again()?;
        Ok(server)
    }

    /// Starts the (stopped) server on its port and data, and waits until it answers.
    pub fn start_again(&self) -> Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.data.display()
        );
        // Inside the data directory: the postgres user writes there.
        let log = self.data.join("server.log");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("PostgreSQL did not answer on port {}", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server at once (connections are cut, nothing is checkpointed).
    pub fn stop(&self) -> Result<()> {
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` (a fresh one per test keeps tests apart on one server).
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-Atc"])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .context("cannot run psql")?;
        if !out.status.success() {
            bail!(
                "cannot create database {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(self.url(name))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
