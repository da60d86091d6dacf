//! Who may read `/metrics` and `/reports`: with `--metrics-auth kubernetes`,
//! a request must carry a bearer token that the API server authenticates
//! (TokenReview) and authorizes (SubjectAccessReview) for `get` on the
//! non-resource URL `/metrics`, as controller-runtime's secure metrics do, or
//! on the object a report is drawn from (`get incidents` or `get
//! recoveryplans` in its namespace: whoever may read the object may read its
//! report, nobody else). Answers
//! are cached a minute per token (by its SHA-256, never the token itself),
//! at most 1,024 of them. Health endpoints stay open (the kubelet probes them).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
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

/// What a request would read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// The non-resource URL `/metrics`.
    Metrics,
    /// `get` on an object of reprise's API group (`incidents`, `recoveryplans`).
    Get {
        namespace: &'a str,
        resource: &'a str,
        name: &'a str,
    },
}

impl Access<'_> {
    fn key(&self) -> String {
        match self {
            Self::Metrics => "metrics".into(),
            Self::Get {
                namespace,
                resource,
                name,
            } => format!("get\0{namespace}\0{resource}\0{name}"),
        }
    }

    fn attributes(&self) -> (Option<NonResourceAttributes>, Option<ResourceAttributes>) {
        match *self {
            Self::Metrics => (
                Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                None,
            ),
            Self::Get {
                namespace,
                resource,
                name,
            } => (
                None,
                Some(ResourceAttributes {
                    group: Some(crate::api::GROUP.into()),
                    resource: Some(resource.into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    verb: Some("get".into()),
                    ..Default::default()
                }),
            ),
        }
    }
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
    pub async fn check(&self, authorization: Option<&str>, access: Access<'_>) -> Verdict {
        let Some(client) = &self.client else {
            return Verdict::Allowed;
        };
        let Some(token) = bearer(authorization) else {
            return Verdict::Unauthenticated;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(token.as_bytes())
            .chain_update([0])
            .chain_update(access.key().as_bytes())
            .finalize()
            .into();
        if let Some((at, v)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < TTL
        {
            return v.clone();
        }
        let verdict = match review(client, token, access).await {
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

async fn review(client: &Client, token: &str, access: Access<'_>) -> Result<Verdict, kube::Error> {
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
    let (non_resource, resource) = access.attributes();
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: non_resource,
            resource_attributes: resource,
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
