//! sushy-tools' Redfish emulator (PyPI `sushy-tools`, installed by hack/lib.sh
//! into a virtualenv) with its fake driver: several ComputerSystems with NICs,
//! power, boot override and virtual media, no hypervisor needed; basic
//! authentication from an htpasswd file (bcrypt), optionally HTTPS.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A fake system: uuid, name, power state, NIC MACs.
pub struct FakeSystem<'a> {
    pub uuid: &'a str,
    pub name: &'a str,
    pub power: &'a str,
    pub macs: &'a [&'a str],
}

pub struct Sushy {
    pub port: u16,
    pub user: String,
    pub password: String,
    pub https: bool,
    dir: tempfile::TempDir,
    child: Child,
}

pub fn venv() -> PathBuf {
    std::env::var_os("REPRISE_SUSHY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into());
            home.join(".cache/reprise/sushy-venv-2.2.0")
        })
}

impl Sushy {
    /// Starts the emulator with `systems`; HTTPS with (certificate, key) files when given.
    pub fn start(systems: &[FakeSystem<'_>], tls: Option<(&Path, &Path)>) -> Self {
        let venv = venv();
        let bin = venv.join("bin/sushy-emulator");
        assert!(
            bin.exists(),
            "sushy-tools is not installed in {}: run hack/test",
            venv.display()
        );
        let dir = tempfile::Builder::new().prefix("reprise-sushy-").tempdir().unwrap();
        let user = "reprise".to_string();
        let password = format!("bmc-{}", super::unique_suffix());
        let hash = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
            ])
            .arg(&password)
            .output()
            .unwrap();
        assert!(
            hash.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&hash.stderr)
        );
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{user}:{}\n", String::from_utf8_lossy(&hash.stdout).trim()),
        )
        .unwrap();
        let systems_py: Vec<String> = systems
            .iter()
            .map(|s| {
                let nics: Vec<String> = s.macs.iter().map(|m| format!("{{'mac': '{m}'}}")).collect();
                format!(
                    "{{'uuid': '{}', 'name': '{}', 'power_state': '{}', 'nics': [{}]}}",
                    s.uuid,
                    s.name,
                    s.power,
                    nics.join(", ")
                )
            })
            .collect();
        let port = super::free_port();
        let mut config = format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_AUTH_FILE = '{}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n",
            htpasswd.display(),
            systems_py.join(", ")
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "SUSHY_EMULATOR_SSL_CERT = '{}'\nSUSHY_EMULATOR_SSL_KEY = '{}'\n",
                cert.display(),
                key.display()
            ));
        }
        let cfg = dir.path().join("emulator.conf");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("emulator.log")).unwrap();
        // The emulator keeps its systems in sqlite files under the temp
        // directory: a private one, so emulators in parallel share nothing.
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .env("TMPDIR", dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let sushy = Sushy {
            port,
            user,
            password,
            https: tls.is_some(),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sushy-emulator did not start: {}",
                sushy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sushy
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.https { "https" } else { "http" },
            self.port
        )
    }

    /// curl against the emulator's own Redfish API, with its credentials.
    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "-k",
            "-X",
            method,
            "-u",
            &format!("{}:{}", self.user, self.password),
        ]);
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "-d", b]);
        }
        let out = c.arg(format!("{}{path}", self.url())).output().unwrap();
        assert!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn system(&self, uuid: &str) -> serde_json::Value {
        serde_json::from_str(&self.curl("GET", &format!("/redfish/v1/Systems/{uuid}"), None)).expect("system JSON")
    }

    /// Resets a system through the emulator's API (as someone at the BMC would).
    pub fn reset(&self, uuid: &str, reset_type: &str) {
        self.curl(
            "POST",
            &format!("/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset"),
            Some(&format!("{{\"ResetType\": \"{reset_type}\"}}")),
        );
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.curl("GET", path, None)).expect("JSON")
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
