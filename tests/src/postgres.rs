//! A real PostgreSQL server for the connectors' tests: Debian's binaries (installed by
//! `.ci/deps` when missing), a cluster made by `initdb` in a temporary directory with logical
//! replication on, listening on a free loopback port only, with password (SCRAM) logins. It is
//! stopped when dropped.
//!
//! PostgreSQL refuses to run as root; under root (as in CI) the cluster runs as the `postgres`
//! user Debian's package makes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The superuser's password in every test cluster.
pub const PASSWORD: &str = "eddy-test-password";

/// A running test cluster.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as_postgres: bool,
}

impl Postgres {
    /// Makes and starts a cluster.
    pub fn start() -> Result<Postgres> {
        let bin = binaries()?;
        let dir = tempfile::tempdir()?;
        let run_as_postgres = rustix::process::geteuid().is_root();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD)?;
        if run_as_postgres {
            // The postgres user must reach the directory and own the files it writes.
            run(Command::new("chmod").arg("755").arg(dir.path()))?;
            run(Command::new("chown").arg("postgres").arg(&pwfile))?;
            std::fs::create_dir(&data)?;
            run(Command::new("chown").arg("postgres").arg(&data))?;
        }
        let port = free_port()?;
        let pg = Postgres {
            _dir: dir,
            data,
            bin,
            port,
            run_as_postgres,
        };
        pg.run_tool(
            "initdb",
            &[
                "-D",
                &pg.data_str(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        pg.start_server()?;
        Ok(pg)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of one of PostgreSQL's programs (`pg_recvlogical`, `psql`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// A `tokio-postgres` connection string for database `postgres` as the superuser.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres password={PASSWORD} dbname=postgres",
            self.port
        )
    }

    /// Connects with `tokio-postgres`, driving the connection on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Makes and starts a cluster, then runs `sql` in it; returns it and a connection.
    pub async fn with_schema(sql: &str) -> Result<(Postgres, tokio_postgres::Client)> {
        let pg = Postgres::start()?;
        let db = pg.connect().await?;
        db.batch_execute(sql).await?;
        Ok((pg, db))
    }

    /// Turns TLS on with the PEM certificate `cert` and its key `key`, refuses every connection
    /// without it, and restarts the server.
    pub fn require_tls(&self, cert: &str, key: &str) -> Result<()> {
        for (name, pem) in [("server.crt", cert), ("server.key", key)] {
            let path = self.data.join(name);
            std::fs::write(&path, pem)?;
            run(Command::new("chmod").arg("600").arg(&path))?;
            if self.run_as_postgres {
                run(Command::new("chown").arg("postgres").arg(&path))?;
            }
        }
        let conf = self.data.join("postgresql.conf");
        let mut settings = std::fs::read_to_string(&conf)?;
        settings
            .push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, settings)?;
        let hba = self.data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(&hba, format!("hostnossl all all all reject\n{rules}"))?;
        self.stop("fast")?;
        self.start_server()
    }

    /// Starts the server again after [`Postgres::stop`].
    pub fn start_server(&self) -> Result<()> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='' \
             -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 \
             -c fsync=off",
            self.port
        );
        let log = self.data.join("server.log");
        self.run_tool(
            "pg_ctl",
            &[
                "-D",
                &self.data_str(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        Ok(())
    }

    /// Stops the server: `fast` shuts down cleanly, `immediate` as a crash would.
    pub fn stop(&self, mode: &str) -> Result<()> {
        self.run_tool(
            "pg_ctl",
            &["-D", &self.data_str(), "-m", mode, "-w", "stop"],
        )?;
        Ok(())
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn run_tool(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let program = self.bin.join(tool);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(args).current_dir(self._dir.path());
        run(&mut command).with_context(|| {
            let log = std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
            format!("{tool} failed; the server's log:\n{log}")
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

fn run(command: &mut Command) -> Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Debian's PostgreSQL binaries, installing them with `.ci/deps` when missing.
fn binaries() -> Result<PathBuf> {
    fn find() -> Option<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        found.sort();
        found.pop()
    }
    if let Some(bin) = find() {
        return Ok(bin);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/deps");
    run(Command::new("flock")
        .arg("/var/tmp/eddy-deps.lock")
        .arg("bash")
        .arg(&script))?;
    find().context("PostgreSQL is still missing after .ci/deps ran")
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
