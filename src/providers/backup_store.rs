//! Where backups live: a local directory (a mounted volume) or an
//! S3-compatible bucket, both through the `object_store` crate. A backup is a
//! folder `<namespace>/<object>/<id>/` holding one dump per database and a
//! `manifest.json` written last: a backup without a manifest is unfinished.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use object_store::{
    ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{
    artifacts::hex,
    database::{DumpError, TableMeasure},
};
use crate::api::database::BackupStore as StoreSpec;

/// What a backup holds, to restore it and to check a restore against.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub id: String,
    /// When the dumps' snapshot was taken: the moment the data is from.
    pub started: Timestamp,
    pub finished: Timestamp,
    pub server_version: String,
    pub databases: Vec<DumpRecord>,
}

impl Manifest {
    pub fn bytes(&self) -> u64 {
        self.databases.iter().map(|d| d.bytes).sum()
    }
    pub fn database(&self, name: &str) -> Option<&DumpRecord> {
        self.databases.iter().find(|d| d.name == name)
    }
}

/// One database's dump (pg_dump's custom format).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DumpRecord {
    pub name: String,
    /// Object name inside the backup's folder.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// The verify tables of this database, measured in the dump's snapshot.
    pub tables: Vec<TableMeasure>,
    /// Every table the dump holds, with its row count (measured in the dump's
    /// snapshot), indexes and owned sequences: what a restore must bring back
    /// whole. Empty in manifests written before reprise recorded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contents: Vec<TableMeasure>,
}

impl DumpRecord {
    /// The tables a restore of this dump must bring back: every table it holds
    /// (the verify tables in older manifests).
    pub fn all_tables(&self) -> &[TableMeasure] {
        if self.contents.is_empty() {
            &self.tables
        } else {
            &self.contents
        }
    }
}

/// A store of backups for one Database object.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of a local store: its files are read directly (large
    /// reads; pg_restore opens them itself) rather than in object_store's 8 KiB chunks.
    local_root: Option<std::path::PathBuf>,
}

/// S3 credentials from the store's Secret.
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

pub type StoreError = object_store::Error;

/// Where a local store may be: an absolute path without `.` or `..`
/// segments, under `root` (the operator's backup directory). Returns the
/// path, or why not.
pub fn confine(root: &std::path::Path, path: &str) -> Result<std::path::PathBuf, String> {
    use std::path::Component;
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} is not an absolute path"));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || path.contains("/./")
    {
        return Err(format!("{path:?} has a . or .. segment"));
    }
    let normal: std::path::PathBuf = p.components().collect();
    if !normal.starts_with(root) {
        return Err(format!(
            "{path:?} is outside the operator's backup directory {} (--backup-root)",
            root.display()
        ));
    }
    Ok(normal)
}

/// An S3 endpoint reprise may call: `http` or `https`, a host, no user
/// information, query or fragment.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    // Never echo an endpoint that may carry a password.
    let u = reqwest::Url::parse(endpoint).map_err(|e| format!("the endpoint is not a URL: {e}"))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("the endpoint carries user information; put the keys in credentialsSecretRef".into());
    }
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{endpoint:?}: only http and https endpoints are used"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{endpoint:?} names no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("{endpoint:?} has a query or fragment"));
    }
    Ok(())
}

/// The spec's store as reprise may use it: the field at fault and why not.
pub fn check_spec(spec: &StoreSpec, root: &std::path::Path) -> Result<(), (&'static str, String)> {
    if let Some(local) = &spec.local {
        confine(root, &local.path).map_err(|e| ("spec.backup.store.local.path", e))?;
    }
    if let Some(e) = spec.s3.as_ref().and_then(|s| s.endpoint.as_deref()) {
        check_endpoint(e).map_err(|e| ("spec.backup.store.s3.endpoint", e))?;
    }
    Ok(())
}

impl Store {
    /// Opens the store the spec names, for the Database `namespace/name`
    /// (a spec [`check_spec`] accepted).
    pub fn open(spec: &StoreSpec, creds: Option<S3Credentials>, namespace: &str, name: &str) -> Result<Self, String> {
        let local_root = spec.local.as_ref().map(|l| std::path::PathBuf::from(&l.path));
        let (inner, base): (Arc<dyn ObjectStore>, Option<&str>) = if let Some(local) = &spec.local {
            std::fs::create_dir_all(&local.path).map_err(|e| format!("cannot create {}: {e}", local.path))?;
            let fs = LocalFileSystem::new_with_prefix(&local.path)
                .map_err(|e| format!("cannot open {}: {e}", local.path))?
                .with_automatic_cleanup(true);
            (Arc::new(fs), None)
        } else if let Some(s3) = &spec.s3 {
            let creds = creds.ok_or("the S3 store needs its credentials Secret")?;
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(&s3.bucket)
                .with_access_key_id(creds.access_key_id)
                .with_secret_access_key(creds.secret_access_key);
            if let Some(r) = &s3.region {
                b = b.with_region(r);
            }
            if let Some(e) = &s3.endpoint {
                b = b
                    .with_endpoint(e)
                    .with_allow_http(e.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let store = b.build().map_err(|e| format!("cannot configure the S3 store: {e}"))?;
            (Arc::new(store), s3.prefix.as_deref())
        } else {
            return Err("the backup store names no location".into());
        };
        let mut prefix = base.map(Path::from).unwrap_or_default();
        for part in [namespace, name] {
            prefix = prefix.clone().join(part);
        }
        Ok(Self {
            inner,
            prefix,
            local_root,
        })
    }

    /// The file's path when the store is a local directory.
    pub fn local_file(&self, id: &str, file: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(
            self.path(id, file)
                .parts()
                .fold(root.clone(), |p, part| p.join(part.as_ref())),
        )
    }

    fn path(&self, id: &str, file: &str) -> Path {
        self.prefix.clone().join(id).join(file)
    }

    /// Every finished backup, newest first. Unreadable manifests are skipped.
    pub async fn manifests(&self) -> Result<Vec<Manifest>, StoreError> {
        let listing = self.inner.list_with_delimiter(Some(&self.prefix)).await?;
        let mut out = vec![];
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            match self.inner.get(&self.path(id, "manifest.json")).await {
                Ok(r) => match serde_json::from_slice::<Manifest>(&r.bytes().await?) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!(backup = id, error = %e, "unreadable backup manifest; skipped"),
                },
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// A writer for one file of backup `id`, uploaded in parts as it is written.
    pub async fn writer(&self, id: &str, file: &str) -> Result<WriteMultipart, StoreError> {
        let upload = self.inner.put_multipart(&self.path(id, file)).await?;
        Ok(WriteMultipart::new_with_chunk_size(upload, 8 << 20))
    }

    /// Writes the manifest: from then on the backup counts.
    pub async fn finish(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        self.inner
            .put(&self.path(&manifest.id, "manifest.json"), PutPayload::from(body))
            .await?;
        Ok(())
    }

    /// Reads one file of backup `id` as a stream.
    pub async fn read(
        &self,
        id: &str,
        file: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static, StoreError> {
        Ok(self.inner.get(&self.path(id, file)).await?.into_stream())
    }

    /// Deletes a backup: its manifest first (so it stops counting), then its
    /// files (in a local store, its folder, part files of an unfinished upload
    /// included). Returns whether there was anything to delete.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let dir = self.prefix.clone().join(id);
        let mut found = match self.inner.delete(&self.path(id, "manifest.json")).await {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e),
        };
        let files: Vec<_> = self.inner.list(Some(&dir)).map_ok(|m| m.location).try_collect().await?;
        for f in files {
            match self.inner.delete(&f).await {
                Ok(()) => found = true,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(local) = self.local_dir(&dir) {
            // What object_store does not list: the part files of an upload cut
            // short, and the folder itself.
            match std::fs::remove_dir_all(&local) {
                Ok(()) => found = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(object_store::Error::Generic {
                        store: "local",
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(found)
    }

    /// The directory of `p` in a local store.
    fn local_dir(&self, p: &Path) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        Some(p.parts().fold(root.clone(), |acc, part| acc.join(part.as_ref())))
    }

    /// Backups that never finished (no manifest) other than `except` (the one
    /// being written now): left by a failed or interrupted backup. In a local
    /// store the folders are read from the disk, so a folder holding only the
    /// part file of an upload cut short is found too.
    pub async fn unfinished(&self, except: &str) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = match self.local_dir(&self.prefix) {
            Some(dir) => match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir() && !e.path().join("manifest.json").exists())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
                Err(e) => {
                    return Err(object_store::Error::Generic {
                        store: "local",
                        source: Box::new(e),
                    });
                }
            },
            None => {
                let listing = self.inner.list_with_delimiter(Some(&self.prefix)).await?;
                let mut out = vec![];
                for dir in listing.common_prefixes {
                    let Some(id) = dir.filename().map(str::to_string) else {
                        continue;
                    };
                    let files: Vec<_> = self.inner.list(Some(&dir)).try_collect().await?;
                    if !files.iter().any(|m| m.location.filename() == Some("manifest.json")) {
                        out.push(id);
                    }
                }
                out
            }
        };
        ids.retain(|id| id != except);
        ids.sort();
        Ok(ids)
    }
}

/// Which backups retention removes: beyond the newest `count`, or older than
/// `max_age`; never the newest one. `manifests` is newest first.
pub fn expired(
    manifests: &[Manifest],
    count: usize,
    max_age: Option<std::time::Duration>,
    now: Timestamp,
) -> Vec<String> {
    manifests
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(i, m)| {
            *i >= count || max_age.is_some_and(|a| now.as_second() - m.started.as_second() > a.as_secs() as i64)
        })
        .map(|(_, m)| m.id.clone())
        .collect()
}

/// Keeps `read` as a byte stream usable by tokio's readers.
pub fn into_reader(
    s: impl Stream<Item = Result<Bytes, StoreError>> + Send + Unpin + 'static,
) -> impl tokio::io::AsyncRead + Send + Unpin {
    tokio_util::io::StreamReader::new(s.map(|r| r.map_err(std::io::Error::other)))
}

/// Reads the dump through and checks its size and SHA-256 against the manifest.
pub async fn check_dump(store: &Store, id: &str, rec: &DumpRecord) -> Result<(), DumpError> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    if let Some(path) = store.local_file(id, &rec.file) {
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DumpError::Corrupt(format!("backup {id}: {} is missing", rec.file)));
            }
            Err(e) => return Err(DumpError::Tool(format!("{}: {e}", path.display()))),
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| DumpError::Tool(format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hasher.update(&buf[..n]);
        }
        return matches(id, rec, hex(&hasher.finalize()), bytes);
    }
    let mut stream = match store.read(id, &rec.file).await {
        Ok(s) => s,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(DumpError::Corrupt(format!("backup {id}: {} is missing", rec.file)));
        }
        Err(e) => return Err(e.into()),
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
    }
    matches(id, rec, hex(&hasher.finalize()), bytes)
}

fn matches(id: &str, rec: &DumpRecord, sha: String, bytes: u64) -> Result<(), DumpError> {
    if sha != rec.sha256 || bytes != rec.bytes {
        return Err(DumpError::Corrupt(format!(
            "backup {id}: {} has sha256 {sha} ({bytes} bytes), the manifest says {} ({} bytes)",
            rec.file, rec.sha256, rec.bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, age_secs: i64, now: Timestamp) -> Manifest {
        let t = Timestamp::from_second(now.as_second() - age_secs).unwrap();
        Manifest {
            id: id.into(),
            started: t,
            finished: t,
            server_version: "15".into(),
            databases: vec![],
        }
    }

    #[test]
    fn local_paths_stay_under_the_root_and_endpoints_are_http() {
        let root = std::path::Path::new("/var/lib/reprise/backups");
        assert!(confine(root, "/var/lib/reprise/backups").is_ok());
        assert!(confine(root, "/var/lib/reprise/backups/shop/").is_ok());
        for bad in [
            "/var/lib/reprise/backups/../../etc",
            "/var/lib/reprise/backups/./x",
            "/var/lib/reprise/backups-evil",
            "/etc",
            "backups",
            "/var/lib/reprise/backups/a/..",
        ] {
            assert!(confine(root, bad).is_err(), "{bad}");
        }
        assert!(check_endpoint("http://127.0.0.1:8333").is_ok());
        assert!(check_endpoint("https://s3.example.org/").is_ok());
        for bad in [
            "file:///etc",
            "ftp://h/",
            "http://user:pw@h/",
            "http://h/?x=1",
            "not a url",
            "unix:/var/run/x",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn unfinished_backups_are_found_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spec: StoreSpec = serde_json::from_value(serde_json::json!({"local": {"path": dir.path()}})).unwrap();
        let store = Store::open(&spec, None, "ns", "db").unwrap();
        // A backup cut short: a part file and no manifest.
        let mut w = store.writer("b1", "shop.dump").await.unwrap();
        w.write(b"partial dump");
        std::mem::forget(w);
        // A failed one that left only its folder.
        std::fs::create_dir_all(dir.path().join("ns/db/b2")).unwrap();
        // A finished one.
        let m = manifest("b3", 0, Timestamp::now());
        store.finish(&m).await.unwrap();
        assert_eq!(store.unfinished("b9").await.unwrap(), ["b1", "b2"]);
        assert_eq!(store.unfinished("b1").await.unwrap(), ["b2"]);
        for id in ["b1", "b2"] {
            assert!(store.delete(id).await.unwrap(), "{id} removed");
            assert!(!dir.path().join("ns/db").join(id).exists(), "{id} left something");
            assert!(!store.delete(id).await.unwrap(), "{id} is gone: nothing to say removed");
        }
        assert!(store.unfinished("").await.unwrap().is_empty());
        assert_eq!(store.manifests().await.unwrap().len(), 1);
    }

    #[test]
    fn retention_keeps_the_newest_count_within_max_age_and_always_one() {
        let now = Timestamp::now();
        let ms = vec![
            manifest("c", 10, now),
            manifest("b", 100, now),
            manifest("a", 1000, now),
        ];
        assert_eq!(expired(&ms, 2, None, now), ["a"]);
        assert_eq!(
            expired(&ms, 5, Some(std::time::Duration::from_secs(50)), now),
            ["b", "a"]
        );
        assert!(expired(&ms[..1], 1, Some(std::time::Duration::from_secs(1)), now).is_empty());
    }
}
