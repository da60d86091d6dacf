//! One file of a backup written to every store at once, as it comes: hashed
//! in the clear once, encrypted for each store that encrypts, uploaded in
//! parts. A store that fails drops out with its reason; the others go on.

use object_store::{ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Locked, Store,
    crypt::{Sealed, Sealer},
};
use crate::providers::{artifacts::hex, database::DumpError};

/// An object as a store holds it, when that differs from the dump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
}

struct Target<'s> {
    store: &'s Store,
    writer: Option<WriteMultipart>,
    sealer: Option<(Sealer, Sealed)>,
    /// The stored bytes' hash, kept only when they differ from the dump's.
    hash: Option<Sha256>,
    bytes: u64,
    failed: Option<String>,
}

impl Target<'_> {
    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(super::stable(&why));
        }
        if let Some(w) = self.writer.take() {
            tokio::spawn(async move {
                let _ = w.abort().await;
            });
        }
    }

    async fn put(&mut self, data: Vec<u8>) {
        let Some(w) = self.writer.as_mut() else { return };
        if let Err(e) = w.wait_for_capacity(4).await {
            return self.fail(format!("uploading: {e}"));
        }
        if let Some(h) = self.hash.as_mut() {
            h.update(&data);
        }
        self.bytes += data.len() as u64;
        w.write(&data);
    }
}

/// One file of backup `id` going to several stores.
pub struct Upload<'s> {
    id: String,
    file: String,
    targets: Vec<Target<'s>>,
    locked: Vec<Option<Locked>>,
    plain: Sha256,
    bytes: u64,
}

/// What one store made of an upload.
pub struct Landed {
    pub store: String,
    pub result: Result<Option<Stored>, String>,
}

impl<'s> Upload<'s> {
    /// Starts the file in each store; `started` (the backup's start) sets
    /// the retention of stores that lock.
    pub async fn open(
        stores: &[&'s Store],
        id: &str,
        file: &str,
        started: Option<k8s_openapi::jiff::Timestamp>,
    ) -> Self {
        let mut targets = vec![];
        let mut locked = vec![];
        for store in stores {
            let mut t = Target {
                store,
                writer: None,
                sealer: None,
                hash: None,
                bytes: 0,
                failed: None,
            };
            match store.keys().map(|k| k.seal()).transpose() {
                Ok(s) => {
                    t.hash = s.as_ref().map(|_| Sha256::new());
                    t.sealer = s;
                }
                Err(e) => t.failed = Some(format!("encryption: {e}")),
            }
            if t.failed.is_none() {
                match store.inner.put_multipart(&store.path(id, file)).await {
                    Ok(u) => t.writer = Some(WriteMultipart::new_with_chunk_size(u, 8 << 20)),
                    Err(e) => t.failed = Some(format!("starting the upload: {}", super::stable(&e.to_string()))),
                }
            }
            locked.push(started.and_then(|s| store.lock_for(s)));
            targets.push(t);
        }
        Self {
            id: id.into(),
            file: file.into(),
            targets,
            locked,
            plain: Sha256::new(),
            bytes: 0,
        }
    }

    /// Writes `chunk` to every store still in; fails only when none is.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), DumpError> {
        self.plain.update(chunk);
        self.bytes += chunk.len() as u64;
        for t in &mut self.targets {
            if t.writer.is_none() {
                continue;
            }
            let data = match t.sealer.as_mut() {
                Some((s, _)) => match s.update(chunk) {
                    Ok(d) => d,
                    Err(e) => {
                        t.fail(format!("encrypting: {e}"));
                        continue;
                    }
                },
                None => chunk.to_vec(),
            };
            t.put(data).await;
        }
        if self.targets.iter().all(|t| t.writer.is_none()) {
            return Err(DumpError::Tool(format!(
                "no store took the dump: {}",
                self.failures().join("; ")
            )));
        }
        Ok(())
    }

    fn failures(&self) -> Vec<String> {
        self.targets
            .iter()
            .filter_map(|t| Some(format!("{}: {}", t.store.name, t.failed.as_ref()?)))
            .collect()
    }

    /// The dump's size and SHA-256 in the clear.
    pub fn plain(&self) -> (u64, String) {
        (self.bytes, hex(&self.plain.clone().finalize()))
    }

    /// Completes the file in every store still in (with its retention where
    /// the store locks); says per store what it holds, or why not.
    pub async fn finish(self) -> Vec<Landed> {
        let mut out = vec![];
        for (mut t, locked) in self.targets.into_iter().zip(self.locked) {
            let sealed = match t.sealer.take() {
                Some((s, sealed)) => match s.finish() {
                    Ok(last) => {
                        t.put(last).await;
                        Some(sealed)
                    }
                    Err(e) => {
                        t.fail(format!("encrypting: {e}"));
                        None
                    }
                },
                None => None,
            };
            let result = match (t.writer.take(), t.failed.take()) {
                (Some(w), None) => match w.finish().await {
                    Ok(_) => {
                        let path = t.store.path(&self.id, &self.file);
                        t.store.retain(&path, locked.as_ref()).await.map(|()| {
                            sealed.map(|s| Stored {
                                bytes: t.bytes,
                                sha256: t.hash.take().map(|h| hex(&h.finalize())).unwrap_or_default(),
                                sealed: Some(s),
                            })
                        })
                    }
                    Err(e) => Err(format!("completing the upload: {}", super::stable(&e.to_string()))),
                },
                (_, Some(why)) => Err(why),
                (None, None) => Err("the upload stopped".into()),
            };
            out.push(Landed {
                store: t.store.name.clone(),
                result,
            });
        }
        out
    }

    /// Abandons the file everywhere.
    pub async fn abort(self) {
        for t in self.targets {
            if let Some(w) = t.writer {
                let _ = w.abort().await;
            }
        }
    }
}
