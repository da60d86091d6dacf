//! The witness: a compare-and-swap register in an S3 bucket, holding the
//! lease that says which site is active. Every write is conditional —
//! `If-None-Match: *` to create it, `If-Match: <ETag>` to replace what was
//! read — so of two sites writing from the same reading, exactly one wins;
//! the bucket's own consistency is the only agreement used.

use std::{future::Future, sync::Arc};

use k8s_openapi::jiff::Timestamp;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, aws::AmazonS3Builder, path::Path,
};
use serde::{Deserialize, Serialize};

/// The lease: who is active, at which epoch, until when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The site holding it.
    pub site: String,
    /// The fencing token: raised by every change of holder.
    pub epoch: u64,
    /// Until when it holds (the holder's clock); a standby takes over only after.
    pub until: Timestamp,
    /// When the holder last wrote it (its heartbeat).
    pub renewed: Timestamp,
    /// The site that wrote it, when it is not the holder (a handover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

/// What was read: the lease and the version a conditional write must match.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub lease: Lease,
    pub version: UpdateVersion,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WitnessError {
    /// Another site wrote first: read again.
    #[error("another site wrote the lease first")]
    Conflict,
    /// The witness did not answer (or refused): no decision can be made on it.
    #[error("the witness is unreachable: {0}")]
    Unreachable(String),
    /// The lease object is not a lease.
    #[error("the lease object is not a lease: {0}")]
    Corrupt(String),
}

/// A compare-and-swap register holding the lease.
pub trait Register: Send + Sync {
    /// The lease, if there is one.
    fn read(&self) -> impl Future<Output = Result<Option<Held>, WitnessError>> + Send;
    /// Writes `lease` if there is none (`prev` None) or if the register
    /// still holds `prev`; `Conflict` otherwise.
    fn write(&self, lease: &Lease, prev: Option<&Held>) -> impl Future<Output = Result<Held, WitnessError>> + Send;
}

/// The lease object in an S3 bucket.
pub struct S3Witness {
    store: Arc<dyn ObjectStore>,
    key: Path,
}

/// Where and as whom to reach the witness.
pub struct S3Config<'a> {
    pub endpoint: Option<&'a str>,
    pub bucket: &'a str,
    pub region: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub lease: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

/// Leases are a few hundred bytes; anything bigger is not one.
const MAX_LEASE_BYTES: u64 = 4096;

impl S3Witness {
    pub fn new(c: &S3Config<'_>) -> Result<Self, String> {
        // A witness that does not answer within a few seconds is as good as
        // down: the lease is shorter than object_store's default patience.
        let retry = object_store::RetryConfig {
            max_retries: 1,
            retry_timeout: std::time::Duration::from_secs(3),
            ..Default::default()
        };
        let client = object_store::ClientOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2))
            .with_timeout(std::time::Duration::from_secs(4));
        let mut b = AmazonS3Builder::new()
            .with_retry(retry)
            .with_client_options(client)
            .with_bucket_name(c.bucket)
            .with_access_key_id(c.access_key_id)
            .with_secret_access_key(c.secret_access_key)
            .with_region(c.region.unwrap_or("us-east-1"));
        if let Some(e) = c.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| format!("cannot configure the witness: {e}"))?;
        let key = format!("{}{}.json", c.prefix.unwrap_or(""), c.lease);
        Ok(Self {
            store: Arc::new(store),
            key: Path::from(key),
        })
    }

    /// Where the lease lives (for messages).
    pub fn key(&self) -> &str {
        self.key.as_ref()
    }

    /// Where the plan bundle lives: next to the lease.
    fn bundle_key(&self) -> Path {
        Path::from(format!("{}.bundle", self.key.as_ref().trim_end_matches(".json")))
    }

    /// Writes the plan bundle (the active site only).
    pub async fn put_bundle(&self, bytes: Vec<u8>) -> Result<(), WitnessError> {
        self.store
            .put(&self.bundle_key(), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(unreachable)
    }

    /// The plan bundle and its ETag, unless it is still `known` (None: no bundle).
    pub async fn get_bundle(&self, known: Option<&str>, max: u64) -> Result<BundleRead, WitnessError> {
        let opts = object_store::GetOptions {
            if_none_match: known.map(str::to_string),
            ..Default::default()
        };
        let got = match self.store.get_opts(&self.bundle_key(), opts).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(BundleRead::Absent),
            Err(object_store::Error::NotModified { .. }) => return Ok(BundleRead::Unchanged),
            Err(e) => return Err(unreachable(e)),
        };
        if got.meta.size > max {
            return Err(WitnessError::Corrupt(format!("a bundle of {} bytes", got.meta.size)));
        }
        let etag = got.meta.e_tag.clone().unwrap_or_default();
        let bytes = got.bytes().await.map_err(unreachable)?;
        Ok(BundleRead::New {
            bytes: bytes.to_vec(),
            etag,
        })
    }
}

/// What reading the bundle gave.
pub enum BundleRead {
    Absent,
    Unchanged,
    New { bytes: Vec<u8>, etag: String },
}

fn unreachable(e: object_store::Error) -> WitnessError {
    // The first line only: no request ids or bodies in status.
    let text = e.to_string();
    WitnessError::Unreachable(text.lines().next().unwrap_or_default().chars().take(300).collect())
}

impl Register for S3Witness {
    async fn read(&self) -> Result<Option<Held>, WitnessError> {
        let got = match self.store.get(&self.key).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(unreachable(e)),
        };
        if got.meta.size > MAX_LEASE_BYTES {
            return Err(WitnessError::Corrupt(format!("{} bytes", got.meta.size)));
        }
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(unreachable)?;
        let lease: Lease = serde_json::from_slice(&bytes).map_err(|e| WitnessError::Corrupt(e.to_string()))?;
        Ok(Some(Held { lease, version }))
    }

    async fn write(&self, lease: &Lease, prev: Option<&Held>) -> Result<Held, WitnessError> {
        let body = serde_json::to_vec(lease).expect("a lease serializes");
        let mode = match prev {
            None => PutMode::Create,
            Some(h) => PutMode::Update(UpdateVersion {
                e_tag: h.version.e_tag.clone(),
                // The ETag alone: S3's If-Match compares it.
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self.store.put_opts(&self.key, PutPayload::from(body), opts).await {
            Ok(r) => Ok(Held {
                lease: lease.clone(),
                version: UpdateVersion {
                    e_tag: r.e_tag,
                    version: r.version,
                },
            }),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                // A retried write may have landed the first time: ours if the
                // register holds exactly what we wrote.
                match self.read().await? {
                    Some(h) if &h.lease == lease => Ok(h),
                    _ => Err(WitnessError::Conflict),
                }
            }
            Err(e) => Err(unreachable(e)),
        }
    }
}
