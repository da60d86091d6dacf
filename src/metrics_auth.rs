//! Who may read `/metrics`: with `--metrics-auth kubernetes`, a request must
//! carry a bearer token that the API server authenticates (TokenReview) and
//! authorizes for `get` on the non-resource URL `/metrics`
//! (SubjectAccessReview), as controller-runtime's secure metrics do. Answers
//! are cached a minute per token (by its SHA-256, never the token itself),
//! at most 1,024 of them. Health endpoints stay open (the kubelet probes them).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};
use sha2::{Digest, Sha256};

/// Whether `/metrics` asks who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Anyone who reaches the port reads the metrics (bind to loopback then).
    None,
    /// TokenReview + SubjectAccessReview through the API server.
    Kubernetes,
}

/// The verdict on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or one the API server does not know: 401.
    Unauthenticated,
    /// A known user without `get` on `/metrics`: 403.
    Forbidden,
}

const TTL: Duration = Duration::from_secs(60);
const MAX_CACHED: usize = 1024;

pub struct Gate {
    client: Option<Client>,
    cache: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl Gate {
    pub fn new(mode: Mode, client: Client) -> Self {
        Self {
            client: (mode == Mode::Kubernetes).then_some(client),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn open() -> Self {
        Self {
            client: None,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict for a request with this `Authorization` header.
    pub async fn check(&self, authorization: Option<&str>) -> Verdict {
        let Some(client) = &self.client else {
            return Verdict::Allowed;
        };
        let Some(token) = bearer(authorization) else {
            return Verdict::Unauthenticated;
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, v)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < TTL
        {
            return v.clone();
        }
        let verdict = match review(client, token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot review a metrics token; refusing");
                return Verdict::Unauthenticated;
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, (at, _)| at.elapsed() < TTL);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), verdict.clone()));
        verdict
    }
}

/// The token of a `Bearer` Authorization header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 16 * 1024).then_some(token)
}

async fn review(client: &Client, token: &str) -> Result<Verdict, kube::Error> {
    let tr = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let tr = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &tr)
        .await?;
    let Some(user) = tr.status.filter(|s| s.authenticated == Some(true)).and_then(|s| s.user) else {
        return Ok(Verdict::Unauthenticated);
    };
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".into()),
                verb: Some("get".into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sar = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(if sar.status.is_some_and(|s| s.allowed) {
        Verdict::Allowed
    } else {
        Verdict::Forbidden
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
        let huge = format!("Bearer {}", "x".repeat(20_000));
        assert_eq!(bearer(Some(&huge)), None);
    }
}
