//! Client-side encryption of dumps with age (X25519 recipients, the age v1
//! format: ChaCha20-Poly1305 in 64 KiB chunks, authenticated end to end, a
//! truncated file never decrypts). Encryption is streamed through a spool the
//! uploader drains after each write; decryption is streamed too. Nothing
//! decrypted is written anywhere but into the reader's consumer.

use std::{
    collections::BTreeMap,
    io::Write,
    str::FromStr,
    sync::{Arc, Mutex},
};

use age::{secrecy::ExposeSecret, x25519};
use serde::{Deserialize, Serialize};

/// What the manifest records of an encrypted object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sealed {
    /// Always `age`.
    pub format: String,
    /// `<secret key>:<age recipient>`: the key it was encrypted to.
    pub key_id: String,
}

/// The identities of an encryption Secret: the one new backups use and every
/// other key of the Secret that holds one (older backups' keys).
pub struct Keyring {
    secret: String,
    current: String,
    identities: Vec<(String, x25519::Identity)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("secret", &self.secret)
            .field("current", &self.current)
            .field("keys", &self.identities.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Reads Secret `secret`'s `data`; `current` must hold an identity.
    pub fn new(secret: &str, current: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let parse = |v: &[u8]| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| x25519::Identity::from_str(s.trim()).ok())
        };
        let Some(raw) = data.get(current) else {
            return Err(format!("Secret {secret:?} lacks the key {current:?}"));
        };
        if parse(raw).is_none() {
            return Err(format!(
                "key {current:?} of Secret {secret:?} is not an age X25519 identity (AGE-SECRET-KEY-1...)"
            ));
        }
        let identities = data.iter().filter_map(|(k, v)| Some((k.clone(), parse(v)?))).collect();
        Ok(Self {
            secret: secret.into(),
            current: current.into(),
            identities,
        })
    }

    fn id_of(key: &str, identity: &x25519::Identity) -> String {
        format!("{key}:{}", identity.to_public())
    }

    fn current(&self) -> &x25519::Identity {
        &self
            .identities
            .iter()
            .find(|(k, _)| *k == self.current)
            .expect("checked in new")
            .1
    }

    /// The id of the key new backups are encrypted to.
    pub fn key_id(&self) -> String {
        Self::id_of(&self.current, self.current())
    }

    /// A streaming encryptor to the current key, writing into a spool.
    pub fn seal(&self) -> Result<(Sealer, Sealed), String> {
        let recipient = self.current().to_public();
        let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(|e| format!("age: {e}"))?;
        let spool = Spool::default();
        let writer = enc.wrap_output(spool.clone()).map_err(|e| format!("age: {e}"))?;
        Ok((
            Sealer { writer, spool },
            Sealed {
                format: "age".into(),
                key_id: self.key_id(),
            },
        ))
    }

    /// The identity that opens what was sealed to `key_id`: the key of that
    /// name if it still holds that recipient, else any key that does.
    fn opener(&self, key_id: &str) -> Result<&x25519::Identity, String> {
        self.identities
            .iter()
            .find(|(k, i)| Self::id_of(k, i) == key_id)
            .or_else(|| {
                let recipient = key_id.rsplit_once(':').map(|(_, r)| r).unwrap_or(key_id);
                self.identities
                    .iter()
                    .find(|(_, i)| i.to_public().to_string() == recipient)
            })
            .map(|(_, i)| i)
            .ok_or_else(|| {
                format!(
                    "it is encrypted to key {key_id}, and Secret {:?} holds no identity for it",
                    self.secret
                )
            })
    }

    /// A reader of the plaintext of `input`, sealed to `key_id`.
    pub async fn open<R>(
        &self,
        key_id: &str,
        input: R,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<R>, String>
    where
        R: tokio::io::AsyncRead + Send + Unpin,
    {
        use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
        let identity = self.opener(key_id)?;
        let d = age::Decryptor::new_async(input.compat())
            .await
            .map_err(|e| format!("not an age file: {e}"))?;
        let r = d
            .decrypt_async(std::iter::once(identity as &dyn age::Identity))
            .map_err(|e| format!("key {key_id} does not open it: {e}"))?;
        Ok(r.compat())
    }

    /// A reader of the plaintext of `input`, sealed to any key of the Secret.
    pub async fn open_any<R>(&self, input: R) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<R>, String>
    where
        R: tokio::io::AsyncRead + Send + Unpin,
    {
        use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
        let d = age::Decryptor::new_async(input.compat())
            .await
            .map_err(|e| format!("not an age file: {e}"))?;
        let r = d
            .decrypt_async(self.identities.iter().map(|(_, i)| i as &dyn age::Identity))
            .map_err(|e| format!("no key of Secret {:?} opens it: {e}", self.secret))?;
        Ok(r.compat())
    }

    /// Whether the Secret's current key is this identity (tests, diagnostics).
    pub fn holds(&self, key: &str) -> bool {
        self.identities.iter().any(|(k, _)| k == key)
    }
}

/// A new identity, as a Secret holds it (for tests and `kubectl create secret`).
pub fn generate() -> (String, String) {
    let i = x25519::Identity::generate();
    (i.to_string().expose_secret().to_string(), i.to_public().to_string())
}

/// The ciphertext an encryptor has produced and not yet handed on.
#[derive(Clone, Default)]
pub struct Spool(Arc<Mutex<Vec<u8>>>);

impl Spool {
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("spool lock"))
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("spool lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An encryptor whose ciphertext collects in its spool.
pub struct Sealer {
    writer: age::stream::StreamWriter<Spool>,
    spool: Spool,
}

impl Sealer {
    /// Encrypts `plain`; returns the ciphertext ready so far.
    pub fn update(&mut self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        self.writer.write_all(plain)?;
        Ok(self.spool.take())
    }

    /// The last chunk, sealed as the last.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        let spool = self.writer.finish()?;
        Ok(spool.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn ring(keys: &[(&str, &str)], current: &str) -> Result<Keyring, String> {
        let data = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        Keyring::new("backup-key", current, &data)
    }

    #[tokio::test]
    async fn sealed_streams_open_with_their_key_and_only_with_it() {
        let (old, _) = generate();
        let (new, _) = generate();
        let before = ring(&[("k1", &old)], "k1").unwrap();
        let (mut s, sealed) = before.seal().unwrap();
        let mut out = s.update(&vec![7u8; 200_000]).unwrap();
        out.extend(s.update(b"tail").unwrap());
        out.extend(s.finish().unwrap());
        assert!(out.starts_with(b"age-encryption.org/v1\n"));
        assert!(sealed.key_id.starts_with("k1:age1"), "{}", sealed.key_id);
        // Rotated: k2 is current, k1 still opens what it sealed.
        let after = ring(&[("k1", &old), ("k2", &new)], "k2").unwrap();
        let mut plain = vec![];
        after
            .open(&sealed.key_id, &out[..])
            .await
            .unwrap()
            .read_to_end(&mut plain)
            .await
            .unwrap();
        assert_eq!(plain.len(), 200_004);
        // Without k1 it does not open, and says which key it needs.
        let without = ring(&[("k2", &new)], "k2").unwrap();
        let why = match without.open(&sealed.key_id, &out[..]).await {
            Err(e) => e,
            Ok(_) => panic!("opened without its key"),
        };
        assert!(why.contains(&sealed.key_id) && why.contains("backup-key"), "{why}");
        // Truncated: the reader fails rather than return a short plaintext.
        let mut short = vec![];
        let cut = after.open(&sealed.key_id, &out[..out.len() - 100]).await.unwrap();
        assert!(Box::pin(cut).read_to_end(&mut short).await.is_err());
    }

    #[test]
    fn the_current_key_must_be_an_identity() {
        assert!(ring(&[("k1", "not a key")], "k1").unwrap_err().contains("not an age"));
        assert!(ring(&[], "k1").unwrap_err().contains("lacks the key"));
        let (k, _) = generate();
        let r = ring(&[("k1", &k), ("note", "hello")], "k1").unwrap();
        assert!(r.holds("k1") && !r.holds("note"));
    }
}
