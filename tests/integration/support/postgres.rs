//! A real PostgreSQL server per test (Debian's packages): its own data
//! directory, a free loopback port, SCRAM password authentication on TCP.
//! Run as the `postgres` user when the tests run as root (PostgreSQL refuses root).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const ADMIN: &str = "postgres";

pub struct Postgres {
    pub port: u16,
    pub admin_password: String,
    pub bin: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
    /// How the server was started, to start it again after `stop`.
    command: Vec<std::ffi::OsString>,
}

/// Where initdb, postgres, psql, pg_dump and pg_restore are.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REPRISE_POSTGRES_BIN_DIR") {
        return d.into();
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .filter(|d| d.join("initdb").exists())
        .expect("PostgreSQL is not installed: run hack/test (it installs Debian's postgresql package)")
}

fn as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Starts with extra `-c name=value` settings, after copying `files`
    /// (name, content) into the data directory (e.g. TLS key and certificate).
    pub fn start_with(settings: &[&str], files: &[(&str, &[u8])]) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("reprise-pg-").tempdir().unwrap();
        let admin_password = format!("adm-{}", super::unique_suffix());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, &admin_password).unwrap();
        if as_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot give the data directory to the postgres user");
        }
        let data = dir.path().join("data");
        let wrap = |program: PathBuf| {
            if as_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                Command::new(program)
            }
        };
        let out = wrap(bin.join("initdb"))
            .args([
                "-U",
                ADMIN,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("-D")
            .arg(&data)
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        for (name, content) in files {
            let path = data.join(name);
            std::fs::write(&path, content).unwrap();
            let mut cmd = Command::new("chmod");
            cmd.arg("600").arg(&path);
            assert!(cmd.status().unwrap().success());
            if as_root() {
                assert!(
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&path)
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        let port = super::free_port();
        let mut command = wrap(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .arg("-k")
            .arg(dir.path());
        let args: Vec<std::ffi::OsString> = std::iter::once(command.get_program().to_owned())
            .chain(command.get_args().map(|a| a.to_owned()))
            .collect();
        let child = Self::spawn(&args, dir.path());
        let pg = Postgres {
            port,
            admin_password,
            bin,
            dir,
            child,
            command: args,
        };
        pg.wait_up();
        pg
    }

    fn spawn(args: &[std::ffi::OsString], dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        Command::new(&args[0])
            .args(&args[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .try_sql(ADMIN, &self.admin_password, "postgres", "SELECT 1")
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server (fast shutdown: connections refused until `restart`).
    pub fn stop(&mut self) {
        self.shut_down();
    }

    /// Starts the stopped server again, on the same port with the same data.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.command, self.dir.path());
        self.wait_up();
    }

    fn shut_down(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for clients).
        // The child may be runuser: signal the postmaster by its command line.
        let _ = Command::new("pkill")
            .args([
                "-INT",
                "-f",
                &format!("bin/postgres -D .* -p {} -c listen_addresses", self.port),
            ])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` as `user` over TCP with psql; stdout (unaligned, tuples only) or stderr.
    pub fn try_sql(&self, user: &str, password: &str, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user, "-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Runs `sql` as the admin; panics on failure.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        self.try_sql(ADMIN, &self.admin_password, db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shut_down();
    }
}
