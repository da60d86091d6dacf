//! Where backups live: local directories (mounted volumes) and S3-compatible
//! buckets, through the `object_store` crate; every backup goes to each store
//! of the Database. A backup is a folder `<namespace>/<object>/<id>/` holding
//! one dump per database and a `manifest.json` written last: a backup without
//! a manifest is unfinished. A store may encrypt what it holds (age, see
//! [`crypt`]) and lock it (S3 Object Lock, see [`s3`]); next to the backups,
//! `catalog.json` lists them all, so a cluster that starts over from the
//! stores knows every backup without the old cluster's state.

pub mod crypt;
pub mod s3;
mod upload;

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, aws::AmazonS3Builder, local::LocalFileSystem, path::Path};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub use upload::{Stored, Upload};

use super::{
    artifacts::hex,
    database::{DumpError, TableMeasure},
};
use crate::api::database::{LockMode, NamedStore, ObjectLock};
use crypt::Keyring;

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
    /// Until when the store refuses to delete this backup's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<Locked>,
    /// A physical base backup of the whole instance, taken with it when WAL
    /// is archived: where point-in-time recovery starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRecord>,
    /// Which store of the Database it was read from (an index; not stored).
    #[serde(skip)]
    pub source: usize,
}

/// A base backup (a tar of the instance's data directory).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaseRecord {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
    /// Where recovery starts, and the WAL segment holding it.
    pub start_lsn: String,
    pub start_segment: String,
    /// The server's version number (the binaries that can start it).
    pub server_version_num: i32,
    /// The size of its WAL segments (archived partial segments are padded to it).
    #[serde(default = "default_segment_size")]
    pub segment_size: u64,
    /// The instance's system identifier: its WAL is archived in
    /// `wal-<system>` (unset: an older backup, its WAL in `wal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The server's WAL position once the backup ended: a recovery from it
    /// needs the WAL archived at least this far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<String>,
}

fn default_segment_size() -> u64 {
    16 << 20
}

impl BaseRecord {
    /// The base backup as a dump record, to read and check it like one.
    pub fn as_dump(&self) -> DumpRecord {
        DumpRecord {
            name: String::new(),
            file: self.file.clone(),
            bytes: self.bytes,
            sha256: self.sha256.clone(),
            tables: vec![],
            contents: vec![],
            stored: self.stored.clone(),
        }
    }
}

/// The retention every object of a backup was written with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Locked {
    pub mode: LockMode,
    pub until: Timestamp,
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
    /// The object as this store holds it, when it differs from the dump
    /// (encrypted): its size and SHA-256, and the key it is sealed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
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
    /// Its name in the spec.
    pub name: String,
    /// Its field in the spec, e.g. `spec.backup.stores[1]`.
    pub field: String,
    /// Whether it is in another failure domain than the site.
    pub offsite: bool,
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The directory of a local store: its files are read directly (large
    /// reads; pg_restore opens them itself) rather than in object_store's 8 KiB chunks.
    local_root: Option<std::path::PathBuf>,
    lock: Option<ObjectLock>,
    keys: Option<Arc<Keyring>>,
    bucket: Option<s3::Bucket>,
    /// A digest of what the store was opened with (credentials and keys
    /// included): it changes when they do.
    pub fingerprint: String,
}

/// A store that cannot be used now: its name, the field at fault, why.
#[derive(Clone, Debug, PartialEq)]
pub struct Unusable {
    pub name: String,
    pub offsite: bool,
    pub field: String,
    pub why: String,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "store {} ({}): {}", self.name, self.field, self.why)
    }
}

/// Every store of a Database, in the spec's order, each usable or not.
#[derive(Clone, Debug, Default)]
pub struct Stores(pub Vec<Result<Store, Unusable>>);

impl Stores {
    /// Store `i` of the spec, when usable.
    pub fn get(&self, i: usize) -> Option<&Store> {
        self.0.get(i).and_then(|s| s.as_ref().ok())
    }

    /// The usable stores.
    pub fn usable(&self) -> Vec<&Store> {
        self.0.iter().filter_map(|s| s.as_ref().ok()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every finished backup of every usable store that answers, newest
    /// first (for the same backup, the spec's first store first); the stores
    /// that cannot be listed (or checked), with why.
    pub async fn manifests(&self) -> (Vec<Manifest>, Vec<Unusable>) {
        let (mut all, mut broken) = (vec![], vec![]);
        for (i, s) in self.0.iter().enumerate() {
            let store = match s {
                Ok(s) => s,
                Err(u) => {
                    broken.push(u.clone());
                    continue;
                }
            };
            let listed = match store.check().await {
                Ok(()) => store
                    .manifests(i)
                    .await
                    .map_err(|e| format!("listing backups: {}", stable(&e.to_string()))),
                Err(why) => Err(why),
            };
            match listed {
                Ok(m) => all.extend(m),
                Err(why) => broken.push(Unusable {
                    name: store.name.clone(),
                    offsite: store.offsite,
                    field: store.field.clone(),
                    why,
                }),
            }
        }
        all.sort_by(|a, b| {
            b.started
                .cmp(&a.started)
                .then(b.id.cmp(&a.id))
                .then(a.source.cmp(&b.source))
        });
        (all, broken)
    }
}

/// A store's error as status may carry it: the same failure reads the same
/// each time (no durations, request ids or response bodies), so a store that
/// keeps failing causes no status write.
pub fn stable(e: &str) -> String {
    if let Some(at) = e.find("status code: ") {
        let status: String = e[at + 13..].chars().take_while(|c| *c != ':').collect();
        let code = s3::error_code(e).map(|c| format!(" {c}")).unwrap_or_default();
        return format!("HTTP {}{code}", status.trim());
    }
    if e.contains("error sending request") {
        return "the endpoint does not answer (error sending request)".into();
    }
    let mut out = String::new();
    for word in e.split(' ') {
        let timing = ["ns", "µs", "ms", "s"].iter().any(|u| {
            word.strip_suffix(u)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit() || c == '.'))
        });
        if !timing {
            out.push_str(word);
            out.push(' ');
        }
    }
    out.trim_end().chars().take(300).collect()
}

/// S3 credentials from the store's Secret.
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Credentials {
    /// From a Secret's data (`accessKeyId`, `secretAccessKey`, UTF-8); Err:
    /// the first key missing.
    pub fn from_data(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<Self, &'static str> {
        let text = |k: &'static str| data.get(k).and_then(|v| String::from_utf8(v.clone()).ok()).ok_or(k);
        Ok(Self {
            access_key_id: text("accessKeyId")?,
            secret_access_key: text("secretAccessKey")?,
        })
    }
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
pub fn check_spec(spec: &NamedStore, field: &str, root: &std::path::Path) -> Result<(), (String, String)> {
    if let Some(local) = &spec.local {
        confine(root, &local.path).map_err(|e| (format!("{field}.local.path"), e))?;
    }
    if let Some(e) = spec.s3.as_ref().and_then(|s| s.endpoint.as_deref()) {
        check_endpoint(e).map_err(|e| (format!("{field}.s3.endpoint"), e))?;
    }
    Ok(())
}

impl Store {
    /// Opens the store the spec names, for the Database `namespace/name`
    /// (a spec [`check_spec`] accepted), with its credentials and keys.
    pub fn open(
        spec: &NamedStore,
        field: &str,
        creds: Option<S3Credentials>,
        keys: Option<Keyring>,
        namespace: &str,
        name: &str,
    ) -> Result<Self, String> {
        let local_root = spec.local.as_ref().map(|l| std::path::PathBuf::from(&l.path));
        let mut print = Sha256::new();
        print.update(serde_json::to_vec(spec).unwrap_or_default());
        if let Some(c) = &creds {
            print.update(c.access_key_id.as_bytes());
            print.update(c.secret_access_key.as_bytes());
        }
        if let Some(k) = &keys {
            print.update(k.key_id().as_bytes());
        }
        let fingerprint = hex(&print.finalize())[..16].to_string();
        let mut bucket = None;
        let (inner, base): (Arc<dyn ObjectStore>, Option<&str>) = if let Some(local) = &spec.local {
            std::fs::create_dir_all(&local.path).map_err(|e| format!("cannot create {}: {e}", local.path))?;
            let fs = LocalFileSystem::new_with_prefix(&local.path)
                .map_err(|e| format!("cannot open {}: {e}", local.path))?
                .with_automatic_cleanup(true);
            (Arc::new(fs), None)
        } else if let Some(s3) = &spec.s3 {
            let creds = creds.ok_or("the S3 store needs its credentials Secret")?;
            bucket = Some(s3::Bucket::new(
                s3.endpoint.as_deref(),
                &s3.bucket,
                s3.region.as_deref(),
                &creds.access_key_id,
                &creds.secret_access_key,
            )?);
            // A store that does not answer is given up on within seconds, not
            // minutes: the pass goes on with the other stores.
            let retry = object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(20),
                ..Default::default()
            };
            let client = object_store::ClientOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(5))
                .with_timeout(std::time::Duration::from_secs(60));
            let mut b = AmazonS3Builder::new()
                .with_retry(retry)
                .with_client_options(client)
                .with_bucket_name(&s3.bucket)
                .with_access_key_id(creds.access_key_id)
                .with_secret_access_key(creds.secret_access_key)
                .with_region(s3.region.as_deref().unwrap_or("us-east-1"));
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
            name: spec.name.clone(),
            field: field.into(),
            offsite: spec.offsite,
            inner,
            prefix,
            local_root,
            lock: spec.object_lock.clone(),
            keys: keys.map(Arc::new),
            bucket,
            fingerprint,
        })
    }

    /// Whether the store can do what its spec asks: a store asked to lock its
    /// objects must be a bucket with Object Lock enabled.
    pub async fn check(&self) -> Result<(), String> {
        let (Some(_), Some(b)) = (&self.lock, &self.bucket) else {
            return Ok(());
        };
        match b.lock_enabled().await? {
            true => Ok(()),
            false => Err("objectLock asks for retention, and the bucket does not have Object Lock enabled".into()),
        }
    }

    /// Until when a backup started at `started` is locked, if the store locks.
    pub fn lock_for(&self, started: Timestamp) -> Option<Locked> {
        let l = self.lock.as_ref()?;
        let until = started
            .checked_add(std::time::Duration::from_secs(u64::from(l.days) * 86_400))
            .ok()?;
        Some(Locked { mode: l.mode, until })
    }

    /// Sets the retention of one object of a backup, when the store locks.
    async fn retain(&self, path: &Path, locked: Option<&Locked>) -> Result<(), String> {
        match (locked, &self.bucket) {
            (Some(l), Some(b)) => b.retain(path, l.mode, l.until).await,
            _ => Ok(()),
        }
    }

    /// The WAL files archived in `folder` (`<segment>` or `<segment>.partial`), sorted.
    pub async fn wal_names(&self, folder: &str) -> Result<Vec<String>, String> {
        let dir = self.prefix.clone().join(folder);
        let mut names: Vec<String> = self
            .inner
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(|e| stable(&e.to_string()))?
            .objects
            .into_iter()
            .map(|m| m.location.filename().unwrap_or_default().to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// When the newest WAL file of any instance was archived here (what a
    /// recovery to the newest point reaches, give or take the upload).
    pub async fn newest_wal(&self) -> Result<Option<Timestamp>, String> {
        let listing = self
            .inner
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(|e| stable(&e.to_string()))?;
        let mut newest: Option<Timestamp> = None;
        for dir in listing.common_prefixes {
            if !dir.filename().is_some_and(is_wal_folder) {
                continue;
            }
            let files = self
                .inner
                .list_with_delimiter(Some(&dir))
                .await
                .map_err(|e| stable(&e.to_string()))?;
            for f in files.objects {
                let at = Timestamp::from_millisecond(f.last_modified.timestamp_millis()).ok();
                newest = newest.max(at);
            }
        }
        Ok(newest)
    }

    /// A WAL file archived in `folder`, in the clear.
    pub async fn open_wal(
        &self,
        folder: &str,
        name: &str,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DumpError> {
        use tokio::io::AsyncBufReadExt;
        let raw = self.read(folder, name).await?;
        let mut r = tokio::io::BufReader::new(into_reader(Box::pin(raw)));
        let sealed = r
            .fill_buf()
            .await
            .map_err(|e| DumpError::Tool(e.to_string()))?
            .starts_with(b"age-encryption.org/v1");
        if !sealed {
            return Ok(Box::new(r));
        }
        let keys = self.keys.as_ref().ok_or_else(|| {
            DumpError::Key(format!(
                "WAL {name} in store {} is encrypted and the store has no key",
                self.name
            ))
        })?;
        keys.open_any(r)
            .await
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
            .map_err(|why| DumpError::Key(format!("WAL {name} in store {}: {why}", self.name)))
    }

    /// Deletes WAL file `name` archived in `folder` (a locked one stays: false).
    pub async fn delete_wal(&self, folder: &str, name: &str) -> bool {
        self.inner.delete(&self.path(folder, name)).await.is_ok()
    }

    /// The keys the store encrypts with, if it does.
    pub fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    /// The dump's file when the store is a local directory that holds it in
    /// the clear (pg_restore then reads it itself).
    pub fn local_dump(&self, id: &str, rec: &DumpRecord) -> Option<std::path::PathBuf> {
        if rec.stored.as_ref().is_some_and(|s| s.sealed.is_some()) {
            return None;
        }
        self.local_file(id, &rec.file)
    }

    fn local_file(&self, id: &str, file: &str) -> Option<std::path::PathBuf> {
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

    /// Every finished backup, newest first, each marked with `source` (the
    /// store's index). Unreadable manifests are skipped.
    pub async fn manifests(&self, source: usize) -> Result<Vec<Manifest>, StoreError> {
        let listing = self.inner.list_with_delimiter(Some(&self.prefix)).await?;
        let mut out = vec![];
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            match self.inner.get(&self.path(id, "manifest.json")).await {
                Ok(r) => match serde_json::from_slice::<Manifest>(&bounded(r, 4 << 20).await?) {
                    Ok(m) if m.id == id => out.push(Manifest { source, ..m }),
                    Ok(m) => tracing::warn!(backup = id, claims = m.id, "a manifest naming another backup; skipped"),
                    Err(e) => tracing::warn!(backup = id, error = %e, "unreadable backup manifest; skipped"),
                },
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Writes the manifest (with the store's retention): from then on the
    /// backup counts.
    pub async fn finish(&self, manifest: &Manifest) -> Result<(), String> {
        let body = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
        let path = self.path(&manifest.id, "manifest.json");
        self.inner
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| e.to_string())?;
        self.retain(&path, manifest.locked.as_ref()).await
    }

    /// Writes the catalog of every backup the store holds (`manifests`,
    /// newest first), replacing the last one.
    pub async fn write_catalog(&self, database: &str, manifests: &[Manifest]) -> Result<(), String> {
        let catalog = Catalog {
            database: database.into(),
            store: self.name.clone(),
            written: Timestamp::now(),
            backups: manifests.iter().map(CatalogEntry::of).collect(),
        };
        let body = serde_json::to_vec_pretty(&catalog).expect("a catalog serializes");
        self.inner
            .put(&self.prefix.clone().join(CATALOG), PutPayload::from(body))
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The catalog the store holds, if any.
    pub async fn catalog(&self) -> Result<Option<Catalog>, String> {
        match self.inner.get(&self.prefix.clone().join(CATALOG)).await {
            Ok(r) => {
                let body = bounded(r, 16 << 20).await.map_err(|e| e.to_string())?;
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| format!("unreadable catalog: {e}"))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reads one file of backup `id` as stored.
    async fn read(
        &self,
        id: &str,
        file: &str,
    ) -> Result<impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static + use<>, StoreError> {
        Ok(self.inner.get(&self.path(id, file)).await?.into_stream())
    }

    /// The dump `rec` of backup `id`, in the clear (decrypted on the way when
    /// the store holds it sealed).
    pub async fn open_dump(
        &self,
        id: &str,
        rec: &DumpRecord,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DumpError> {
        let raw = match self.read(id, &rec.file).await {
            Ok(s) => into_reader(Box::pin(s)),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(DumpError::Corrupt(format!(
                    "backup {id} in store {}: {} is missing",
                    self.name, rec.file
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.unseal(id, rec, raw).await
    }

    async fn unseal<R: tokio::io::AsyncRead + Send + Unpin + 'static>(
        &self,
        id: &str,
        rec: &DumpRecord,
        raw: R,
    ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, DumpError> {
        let Some(sealed) = rec.stored.as_ref().and_then(|s| s.sealed.as_ref()) else {
            return Ok(Box::new(raw));
        };
        let Some(keys) = &self.keys else {
            return Err(DumpError::Key(format!(
                "backup {id} in store {}: {} is encrypted to key {}, and the store has no encryption key",
                self.name, rec.file, sealed.key_id
            )));
        };
        keys.open(&sealed.key_id, raw)
            .await
            .map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
            .map_err(|why| DumpError::Key(format!("backup {id} in store {}: {}: {why}", self.name, rec.file)))
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
        ids.retain(|id| id != except && !is_wal_folder(id));
        ids.sort();
        Ok(ids)
    }
}

/// Which backups retention removes: beyond the newest `count`, or older than
/// `max_age`; never the newest one. `manifests` is newest first. Returns
/// those to delete now, and those expired but locked until a later time
/// (the store would refuse: they wait).
pub fn expired(
    manifests: &[Manifest],
    count: usize,
    max_age: Option<std::time::Duration>,
    now: Timestamp,
) -> (Vec<String>, Vec<(String, Timestamp)>) {
    let (mut now_, mut later) = (vec![], vec![]);
    for (i, m) in manifests.iter().enumerate().skip(1) {
        let old = i >= count || max_age.is_some_and(|a| now.as_second() - m.started.as_second() > a.as_secs() as i64);
        if !old {
            continue;
        }
        match &m.locked {
            Some(l) if l.until > now => later.push((m.id.clone(), l.until)),
            _ => now_.push(m.id.clone()),
        }
    }
    (now_, later)
}

/// The folder of a Database's archived WAL, next to its backups (before
/// the WAL was kept per instance: see [`wal_folder`]).
pub const WAL: &str = "wal";

/// The folder of the WAL archived from the instance `system` (by its
/// system identifier): a Database rebuilt on another instance (a failover)
/// archives next to the old one's WAL, never over it.
pub fn wal_folder(system: Option<&str>) -> String {
    match system {
        Some(s) => format!("{WAL}-{s}"),
        None => WAL.into(),
    }
}

/// Whether a folder next to the backups holds WAL (not a backup).
pub fn is_wal_folder(id: &str) -> bool {
    id == WAL
        || id
            .strip_prefix("wal-")
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// The name of the catalog next to a Database's backups.
pub const CATALOG: &str = "catalog.json";

/// Every backup a store holds for one Database, written with each backup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// `namespace/name` of the Database.
    pub database: String,
    /// The store's name.
    pub store: String,
    pub written: Timestamp,
    /// Newest first.
    pub backups: Vec<CatalogEntry>,
}

/// One backup in a catalog.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CatalogEntry {
    pub id: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub bytes: u64,
    pub databases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl CatalogEntry {
    fn of(m: &Manifest) -> Self {
        Self {
            id: m.id.clone(),
            started: m.started,
            finished: m.finished,
            bytes: m.bytes(),
            databases: m.databases.iter().map(|d| d.name.clone()).collect(),
            locked_until: m.locked.as_ref().map(|l| l.until),
            key_id: m.key_id().map(str::to_string),
        }
    }
}

impl Manifest {
    /// The key its dumps are sealed to, if they are.
    pub fn key_id(&self) -> Option<&str> {
        self.databases
            .iter()
            .find_map(|d| d.stored.as_ref()?.sealed.as_ref().map(|s| s.key_id.as_str()))
    }
}

/// An object read whole, refused beyond `limit` bytes.
async fn bounded(r: object_store::GetResult, limit: u64) -> Result<Bytes, StoreError> {
    if r.meta.size > limit {
        return Err(object_store::Error::Generic {
            store: "backup store",
            source: format!(
                "{} is {} bytes, more than the {limit} expected",
                r.meta.location, r.meta.size
            )
            .into(),
        });
    }
    r.bytes().await
}

/// Keeps `read` as a byte stream usable by tokio's readers.
pub fn into_reader(
    s: impl Stream<Item = Result<Bytes, StoreError>> + Send + Unpin + 'static,
) -> impl tokio::io::AsyncRead + Send + Unpin {
    tokio_util::io::StreamReader::new(s.map(|r| r.map_err(std::io::Error::other)))
}

/// Reads the dump through and checks it against the manifest: the stored
/// object's size and SHA-256 (when it is sealed), then the dump's, decrypted
/// on the way. A key that does not open it is a [`DumpError::Key`].
pub async fn check_dump(store: &Store, id: &str, rec: &DumpRecord) -> Result<(), DumpError> {
    let stored = Arc::new(std::sync::Mutex::new((Sha256::new(), 0u64)));
    let plain: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match store.local_dump(id, rec) {
        Some(path) => match tokio::fs::File::open(&path).await {
            Ok(f) => Box::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DumpError::Corrupt(format!(
                    "backup {id} in store {}: {} is missing",
                    store.name, rec.file
                )));
            }
            Err(e) => return Err(DumpError::Tool(format!("{}: {e}", path.display()))),
        },
        None => {
            let raw = match store.read(id, &rec.file).await {
                Ok(s) => s,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(DumpError::Corrupt(format!(
                        "backup {id} in store {}: {} is missing",
                        store.name, rec.file
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            let tap = stored.clone();
            let raw = raw.inspect(move |c| {
                if let Ok(c) = c {
                    let mut t = tap.lock().expect("hash lock");
                    t.0.update(c);
                    t.1 += c.len() as u64;
                }
            });
            store.unseal(id, rec, into_reader(Box::pin(raw))).await?
        }
    };
    let (sha, bytes) =
        hash_all(plain)
            .await
            .map_err(|e| match rec.stored.as_ref().and_then(|s| s.sealed.as_ref()) {
                Some(s) => DumpError::Corrupt(format!(
                    "backup {id} in store {}: {} does not decrypt whole with key {}: {e}",
                    store.name, rec.file, s.key_id
                )),
                None => DumpError::Tool(format!("reading backup {id} in store {}: {e}", store.name)),
            })?;
    if let Some(s) = &rec.stored {
        let (h, n) = std::mem::take(&mut *stored.lock().expect("hash lock"));
        let got = hex(&h.finalize());
        if got != s.sha256 || n != s.bytes {
            return Err(DumpError::Corrupt(format!(
                "backup {id} in store {}: the stored {} has sha256 {got} ({n} bytes), the manifest says {} ({} bytes)",
                store.name, rec.file, s.sha256, s.bytes
            )));
        }
    }
    if sha != rec.sha256 || bytes != rec.bytes {
        return Err(DumpError::Corrupt(format!(
            "backup {id} in store {}: {} has sha256 {sha} ({bytes} bytes), the manifest says {} ({} bytes)",
            store.name, rec.file, rec.sha256, rec.bytes
        )));
    }
    Ok(())
}

async fn hash_all(mut r: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((hex(&hasher.finalize()), bytes));
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
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
            locked: None,
            base: None,
            source: 0,
        }
    }

    #[test]
    fn store_errors_read_the_same_each_time() {
        let forbidden = "Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:41517/plain?x in 5.23481ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error><Code>SignatureDoesNotMatch</Code><RequestId>18ECF5D9</RequestId></Error>";
        assert_eq!(stable(forbidden), "HTTP 403 Forbidden SignatureDoesNotMatch");
        let refused = "Error performing GET http://127.0.0.1:42971/late in 281.075508ms, after 2 retries - HTTP error: error sending request";
        assert_eq!(stable(refused), "the endpoint does not answer (error sending request)");
        assert_eq!(stable("took 12ms then gave up after 3s"), "took then gave up after");
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

    #[test]
    fn each_instance_archives_its_wal_in_its_own_folder_never_taken_for_a_backup() {
        assert_eq!(wal_folder(Some("7312345678901234567")), "wal-7312345678901234567");
        assert_eq!(wal_folder(None), WAL);
        assert!(is_wal_folder("wal") && is_wal_folder("wal-7312345678901234567"));
        assert!(!is_wal_folder("wal-") && !is_wal_folder("wal-x1") && !is_wal_folder("20261201T101010Z"));
    }

    #[tokio::test]
    async fn unfinished_backups_are_found_and_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let spec: NamedStore =
            serde_json::from_value(serde_json::json!({"name": "here", "local": {"path": dir.path()}})).unwrap();
        let store = Store::open(&spec, "spec.backup.stores[0]", None, None, "ns", "db").unwrap();
        // A backup cut short: a part file and no manifest.
        let mut w = Upload::open(&[&store], "b1", "shop.dump", None).await;
        w.write(b"partial dump").await.unwrap();
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
        assert_eq!(store.manifests(0).await.unwrap().len(), 1);
    }

    #[test]
    fn retention_keeps_the_newest_count_within_max_age_and_always_one_and_waits_for_locks() {
        let now = Timestamp::now();
        let mut ms = vec![
            manifest("c", 10, now),
            manifest("b", 100, now),
            manifest("a", 1000, now),
        ];
        assert_eq!(expired(&ms, 2, None, now).0, ["a"]);
        assert_eq!(
            expired(&ms, 5, Some(std::time::Duration::from_secs(50)), now).0,
            ["b", "a"]
        );
        assert!(
            expired(&ms[..1], 1, Some(std::time::Duration::from_secs(1)), now)
                .0
                .is_empty()
        );
        let until = Timestamp::from_second(now.as_second() + 3600).unwrap();
        ms[2].locked = Some(Locked {
            mode: LockMode::Compliance,
            until,
        });
        ms[1].locked = Some(Locked {
            mode: LockMode::Compliance,
            until: Timestamp::from_second(now.as_second() - 1).unwrap(),
        });
        let (now_, later) = expired(&ms, 1, None, now);
        assert_eq!(now_, ["b"], "a lock that ran out no longer holds");
        assert_eq!(later, [("a".to_string(), until)]);
    }
}
