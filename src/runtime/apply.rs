//! Owned Kubernetes objects: the label that marks them, and drift detection
//! (`crate::drift`) that compares only the fields reprise sets. The objects
//! themselves are applied server-side, under the owning kind's field manager,
//! by their component: Deployments and Services, connection Secrets,
//! KubeVirt VMs.

/// Label on every object reprise owns (the owned-object watches select on it).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "reprise");

pub use crate::drift::{fingerprint, is_subset};
