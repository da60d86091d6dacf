//! Site: one failure domain (a data centre, a region) with its own cluster
//! running reprise, and the witness that says which site is active.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{ActionRecord, Condition, Duration, SecretKeyRef},
    contract::{Health, HealthState},
    database::S3Store,
};

/// Annotation on the local Site asking it to hand the lease to a peer site
/// (a planned relocation): `reprise.dev/relocate-to: <site>`.
pub const RELOCATE_TO_ANNOTATION: &str = "reprise.dev/relocate-to";

/// A site of the plan. Each cluster holds a Site for every site (the same
/// manifests), with `local: true` on the one it runs in. The local Site
/// names the witness: an S3 bucket in a third failure domain where the
/// active site holds a lease, renewed with conditional writes; a standby
/// takes it over only once it has expired, with a higher epoch that fences
/// the old holder out.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reprise.dev",
    version = "v1alpha1",
    kind = "Site",
    namespaced,
    doc = "A site of the plan: the local one names the witness that says which site is active.",
    status = "SiteStatus",
    category = "reprise",
    printcolumn(name = "Local", type_ = "boolean", json_path = ".spec.local"),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.role"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(name = "Holder", type_ = "string", json_path = ".status.holder"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.local || has(self.witness)").message("spec.witness is required on the local Site"))]
pub struct SiteSpec {
    /// Whether reprise runs in this site. Exactly one Site of a namespace is local.
    #[serde(default)]
    pub local: bool,
    /// What the site is, for people (e.g. "Paris, building B").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Where the lease saying which site is active lives (required on the
    /// local Site; every site must name the same bucket and lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
    /// When the witness holds no lease yet (a first start), whether this
    /// site takes it. Set it on one site only; the others wait as standby.
    #[serde(default)]
    pub starts_active: bool,
    /// The plan bundle (on the local Site): while active, reprise publishes
    /// every reprise object of the namespace (specs and labels; never status
    /// or Secrets) next to the lease, signed with this key; a standby checks
    /// the signature and, when it takes over, creates what its cluster
    /// lacks, servers first, applications last. Both sites hold the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleSpec>,
    /// Where this site differs from the one that published the bundle: a
    /// JSON merge patch (RFC 7386) to an object's spec, applied when this
    /// site rebuilds it (e.g. the database host of this site, a VM's
    /// `hostRef` hv-01 → hv-11). An override naming an object the bundle
    /// does not hold is reported in `status.failover`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub overrides: Vec<Override>,
    /// The traffic step of a takeover, once every wave is healthy: a JSON
    /// message POSTed to this webhook (DNS, a GSLB, a load balancer: yours
    /// to switch) with the site, the epoch (the fencing token: a receiver
    /// ignores an epoch lower than one it has seen) and a `deliveryId` that
    /// is the same if reprise has to send it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<super::recovery_plan::Webhook>,
}

/// A change to one bundle object when this site rebuilds it: its spec
/// patched, or the object replaced by one of this site's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.specPatch) != has(self.replacedBy)").message("spec.overrides: give an override either specPatch or replacedBy"))]
pub struct Override {
    /// The object's kind: `Server`, `VirtualMachine`, `Database`,
    /// `Application`, `MaintenanceWindow` or `RecoveryPlan`.
    #[schemars(regex(pattern = r"^(Server|VirtualMachine|Database|Application|MaintenanceWindow|RecoveryPlan)$"))]
    pub kind: String,
    /// The object's name (in the bundle).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A JSON merge patch to its spec (`null` removes a field).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[schemars(schema_with = "free_form_object")]
    pub spec_patch: serde_json::Value,
    /// This site's own object of the same kind that stands for it (e.g.
    /// Server hv-01 → hv-11): the bundle's object is not created here, the
    /// takeover waits for this one instead, and every reference to it in
    /// the objects rebuilt here (a VM's `hostRef`, an Application's
    /// `dependsOn`) names this one. It must exist in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub replaced_by: Option<String>,
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// How the plan bundle is signed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleSpec {
    /// The HMAC-SHA256 key (any length; 32 random bytes are plenty).
    pub key_secret_ref: SecretKeyRef,
}

/// The plan bundle this site published (active) or read and checked (standby).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleStatus {
    /// The first 12 hex digits of the objects' SHA-256.
    pub version: String,
    /// The site that published it.
    pub site: String,
    /// The epoch that site held when it published it.
    pub epoch: u64,
    /// When it was published.
    pub published: String,
    /// How many objects it holds.
    pub objects: u32,
    /// Whether its signature was checked (a standby's reading).
    pub verified: bool,
    /// What happened last (a bad signature, an unreadable bundle).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A takeover's rebuild from the bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverRecord {
    /// When the lease was taken.
    pub at: Time,
    /// The epoch taken.
    pub epoch: u64,
    /// The bundle applied (its version), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Objects created from it (`Kind/name`), in the order they were.
    #[serde(default)]
    pub created: Vec<String>,
    /// Objects the cluster already held (left as they are).
    #[serde(default)]
    pub present: Vec<String>,
    /// Objects created with one of this site's overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
    /// Bundle objects this site's own stand for (`Kind/name → name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<String>,
    /// What went wrong, if anything.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The site that held the lease before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Its last renewal seen: where the loss of that site is counted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<MicroTime>,
    /// The waves, in order: each starts once every object of the one before
    /// reports healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
    /// When the last wave's objects all reported healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<MicroTime>,
}

/// One wave of a failover: the bundle's objects of one kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// The kind (`RecoveryPlan` and `MaintenanceWindow` first, then
    /// `Server`, `VirtualMachine`, `Database`, `Application`).
    pub kind: String,
    /// When its objects were created.
    pub started: MicroTime,
    /// When they all reported healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<MicroTime>,
    /// Its objects' names.
    #[serde(default)]
    pub objects: Vec<String>,
    /// What it waits for, or how it ended (e.g. a database's recovery point).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The local site's health, as the recovery engine reads it.
/// - `Healthy`: acting or standing by as it should.
/// - `FailingOver`: it took the lease from a lost site and is rebuilding the
///   plan's components wave by wave (the site Incident waits for it).
/// - `NeedsApproval`: a standby that cannot read the witness while the
///   active site's last heartbeat is older than its lease: it may be lost,
///   but only a person can tell; its site Incident waits for their approval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SiteHealthState {
    Healthy,
    FailingOver,
    NeedsApproval,
}

impl HealthState for SiteHealthState {
    fn is_failure(self) -> bool {
        self != Self::Healthy
    }
    fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// The witness: a lease object in an S3 bucket, written only with
/// conditional writes (`If-None-Match` to create, `If-Match` on its ETag to
/// renew or take over), so two sites can never both write the same epoch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.renewInterval) + duration(self.renewInterval) + duration(self.renewInterval) <= duration(self.leaseDuration)").message("spec.witness.renewInterval must be at most a third of leaseDuration"))]
#[x_kube(validation = Rule::new("duration(self.maxClockSkew) + duration(self.maxClockSkew) + duration(self.maxClockSkew) + duration(self.maxClockSkew) <= duration(self.leaseDuration)").message("spec.witness.maxClockSkew must be at most a quarter of leaseDuration"))]
pub struct Witness {
    /// The bucket (in a third failure domain: neither site's loss takes it).
    pub s3: S3Store,
    /// Name of the lease object (`<prefix><lease>.json`); the sites of one
    /// plan name the same.
    #[serde(default = "default_lease")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub lease: String,
    /// How long a renewal holds the lease: a standby takes over only this
    /// long (plus `maxClockSkew`) after the last renewal.
    #[serde(default = "default_lease_duration")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('3s') && duration(self) <= duration('1h')").message("spec.witness.leaseDuration must be between 3s and 1h"))]
    pub lease_duration: Duration,
    /// How often the active site renews it.
    #[serde(default = "default_renew_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("spec.witness.renewInterval must be at least 1s"))]
    pub renew_interval: Duration,
    /// The largest difference between the sites' clocks: the active site
    /// stops acting this long before its lease ends, a standby waits this
    /// long after.
    #[serde(default = "default_skew")]
    pub max_clock_skew: Duration,
}

fn default_lease() -> String {
    "reprise-site-lease".into()
}

fn default_lease_duration() -> Duration {
    "20s".parse().expect("valid duration")
}

fn default_renew_interval() -> Duration {
    "5s".parse().expect("valid duration")
}

fn default_skew() -> Duration {
    "2s".parse().expect("valid duration")
}

/// What a site is doing, as the local operator sees it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SiteRole {
    /// Holds the lease and acts.
    Active,
    /// Another site holds the lease (or none does yet): watches, does not act.
    Standby,
    /// Held the lease and found a newer epoch held by another site: stopped
    /// acting, its Applications scaled to zero.
    Demoted,
    /// Held the lease but cannot confirm it (the witness unreachable past the
    /// lease's end): stopped acting until it can.
    Fenced,
}

/// Observed state of a Site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SiteStatus {
    /// The `metadata.generation` the status was computed from.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions: `Ready` (the witness answers and the role is known),
    /// `WitnessReachable`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The site's role: for the local site, what it does; for a peer, `Active`
    /// when it holds the lease, else `Standby`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<SiteRole>,
    /// The newest epoch seen in the witness (the fencing token).
    #[serde(default)]
    pub epoch: u64,
    /// The epoch this site held last (local site only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_epoch: Option<u64>,
    /// The site holding the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Since when the role is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why the site has this role, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The plan bundle published (active) or read (standby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleStatus>,
    /// The last takeover's rebuild from the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverRecord>,
    /// The local site's health signal (a failover under way is a failure the
    /// site's own controller is repairing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health<SiteHealthState>>,
    /// The answer to the last action asked of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<ActionRecord>,
    /// The epoch a person approved taking without the witness (the site
    /// Incident's `failover` step), kept until the witness holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_epoch: Option<u64>,
    /// On a standby: per component of the plan bundle, what it could rebuild
    /// from now (measured every lease duration, at most every minute; the
    /// age is the metric `reprise_site_replicated_rpo_seconds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Replica>,
}

/// What a standby can read of one component, to rebuild it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    /// `Kind/name`.
    pub component: String,
    /// The off-site store holding the newest point (Databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// When its newest finished backup there was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_backup: Option<MicroTime>,
    /// When its newest WAL there was archived (a restore reaches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_wal: Option<MicroTime>,
    /// Whether this site could rebuild it now.
    pub can_rebuild: bool,
    /// Why not, or what limits it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
