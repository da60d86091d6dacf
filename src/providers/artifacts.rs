//! Checking a stored artifact: reachable, and its content hashes to the
//! expected sha256. The body is streamed through the hash, never held whole.

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub ok: bool,
    pub size_bytes: Option<u64>,
    pub took: Duration,
    /// Empty when ok; otherwise what was found or what failed.
    pub message: String,
}

/// An HTTP client for artifact checks: bounded connect and total time.
pub fn client(timeout: Duration) -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .expect("an HTTP client with default TLS settings builds")
}

/// Downloads `url` through a SHA-256 and compares with `expected` (lower-case hex).
pub async fn check(client: &reqwest::Client, url: &str, expected: &str) -> Checked {
    let start = Instant::now();
    let failed = |message: String, size: Option<u64>| Checked {
        ok: false,
        size_bytes: size,
        took: start.elapsed(),
        message,
    };
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) => return failed(format!("unreachable: {}", error_chain(&e)), None),
    };
    if !response.status().is_success() {
        return failed(format!("HTTP {}", response.status()), None);
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => {
                size += bytes.len() as u64;
                hasher.update(&bytes);
            }
            Err(e) => {
                return failed(
                    format!("download interrupted after {size} bytes: {}", error_chain(&e)),
                    Some(size),
                );
            }
        }
    }
    let found = hex(&hasher.finalize());
    if found == expected {
        Checked {
            ok: true,
            size_bytes: Some(size),
            took: start.elapsed(),
            message: String::new(),
        }
    } else {
        failed(format!("sha256 is {found}, expected {expected}"), Some(size))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::hex;
    use sha2::{Digest, Sha256};

    #[test]
    fn hex_is_lower_case_sha256() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
