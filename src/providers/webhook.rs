//! Posting a JSON message to a responder's webhook: 5 s to connect and 10 s
//! in all for each attempt, a bounded number of attempts with backoff, no
//! redirect followed.

use std::time::Duration;

/// The outcome of a delivery: how many attempts, and the last answer or error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub ok: bool,
    pub attempts: u32,
    pub message: String,
}

/// An HTTP client for webhooks: a bounded connect and total time per attempt,
/// no redirect followed (a token never travels elsewhere).
pub fn client() -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with default TLS settings builds")
}

/// POSTs `body` to `url` (with a bearer `token` if given): up to `attempts`
/// tries, 1 s then 2 s, 4 s … apart; each bounded by the client's timeout.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
    attempts: u32,
) -> Delivery {
    let mut message = String::new();
    for attempt in 1..=attempts.max(1) {
        let mut req = http.post(url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                return Delivery {
                    ok: true,
                    attempts: attempt,
                    message: format!("HTTP {}", r.status().as_u16()),
                };
            }
            Ok(r) => message = format!("HTTP {}", r.status().as_u16()),
            Err(e) => message = crate::providers::artifacts::error_chain(&e),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(4))).await;
        }
    }
    Delivery {
        ok: false,
        attempts: attempts.max(1),
        message,
    }
}
