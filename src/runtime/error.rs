//! Errors of a reconcile. Each has a short category used as a metric label
//! and an Event reason.

/// A reconcile that could not finish. Invalid specs are not errors: they are
/// reported in status and wait for the next change (see `validation`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the operator is shutting down")]
    ShuttingDown,
    #[error("VM engine: {0}")]
    Engine(String),
    /// What the object would write exists and something else controls it.
    #[error("{0}")]
    NotOurs(String),
    /// The site stopped being active between the reconcile's start and its
    /// write (see `fence::Fence::still`): the write was not sent.
    #[error("{0}")]
    NotActive(String),
}

impl From<crate::providers::vm::VmError> for Error {
    fn from(e: crate::providers::vm::VmError) -> Self {
        match e {
            crate::providers::vm::VmError::Kube(k) => Error::Kube(k),
            crate::providers::vm::VmError::Engine(m) => Error::Engine(m),
        }
    }
}

impl Error {
    /// Short category, for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "Conflict",
            Error::Kube(kube::Error::Api(e)) if e.code == 403 => "Forbidden",
            Error::Kube(kube::Error::Api(_)) => "ApiError",
            Error::Kube(_) => "ApiUnreachable",
            Error::Encode(_) => "EncodeError",
            Error::ShuttingDown => "ShuttingDown",
            Error::Engine(_) => "EngineError",
            Error::NotOurs(_) => "Conflict",
            Error::NotActive(_) => "SiteNotActive",
        }
    }
}
