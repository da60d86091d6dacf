//! Database reconciler: reaches the PostgreSQL instance, keeps its
//! databases, roles, passwords and grants as the spec says, writes a
//! connection Secret per login role, takes scheduled and asked-for backups,
//! restores what disappears from the newest backup that verifies, and
//! publishes the health signal the recovery engine reads.

pub mod archive;
pub mod backup;
pub mod connection;
pub mod contract;
pub mod liveness;
pub mod pitr;
pub mod restore;
pub mod scratch;
pub mod stores;

use crate::runtime::Action;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{MicroTime, Time},
    jiff::Timestamp,
};
use kube::{Resource, ResourceExt, api::ObjectMeta, runtime::events::EventType};

use crate::runtime::{
    Context, Error,
    apply::MANAGED_BY,
    kind::Kind,
    report::{Report, requested_action, unknown_action},
    secrets,
    validation::{Invalid, check_cron, report_invalid},
};
use crate::{
    api::{
        Database,
        common::{ComponentKind, ConditionStatus, find_condition, reasons},
        contract::{ActionOutcome, ActionVerb, Health, Request},
        database::{
            BACKUP_NOW_ANNOTATION, DatabaseHealthState, DatabaseStatus, RESTORE_TO_ANNOTATION, RestoreInProgress,
            RestoreOutcome, RestoreRecord, SslMode,
        },
    },
    crash,
    providers::{
        backup_store::{Manifest, Store, Unusable},
        database::{DatabaseEngine, DesiredRole, EngineError, Outcome, Target},
        postgres::{Postgres, dump::Tools},
    },
    telemetry::{ObjectLabels, OutcomeLabels},
};
use restore::Missing;

pub const REACHABLE: &str = "Reachable";
pub const ACCOUNTS_READY: &str = "AccountsReady";
pub const BACKUPS_HEALTHY: &str = "BackupsHealthy";

/// Checks that need no API call.
pub fn validate_spec(db: &Database) -> Result<(), Invalid> {
    if let Some(b) = &db.spec.backup {
        check_cron("spec.backup.schedule", &b.schedule)?;
    }
    if let Some(v) = &db.spec.verify {
        for (i, t) in v.tables.iter().enumerate() {
            if !db.spec.databases.iter().any(|d| d.name == t.database) {
                return Err(Invalid::new(
                    format!("spec.verify.tables[{i}].database"),
                    format!("{:?} is not one of spec.databases", t.database),
                ));
            }
        }
    }
    if let Some(ext) = &db.spec.instance.external
        && matches!(ext.ssl_mode, SslMode::VerifyCA | SslMode::VerifyFull)
        && ext.ca_bundle_secret_ref.is_none()
    {
        return Err(Invalid::new(
            "spec.instance.external.caBundleSecretRef",
            format!(
                "sslMode {:?} verifies the server against a CA bundle: name one",
                ext.ssl_mode
            ),
        ));
    }
    Ok(())
}

/// The Secrets a Database reads (a change to any of them reconciles it).
pub fn secrets_named(db: &Database) -> Vec<String> {
    let mut names = vec![];
    if let Some(ext) = &db.spec.instance.external {
        names.push(ext.admin_secret_ref.name.clone());
        names.extend(ext.ca_bundle_secret_ref.iter().map(|r| r.name.clone()));
    }
    names.extend(
        db.spec
            .roles
            .iter()
            .filter_map(|r| r.password_secret_ref.as_ref().map(|p| p.name.clone())),
    );
    for store in db.spec.backup.iter().flat_map(|b| b.all_stores()) {
        names.extend(store.s3.map(|s3| s3.credentials_secret_ref.name));
        names.extend(store.encryption.map(|e| e.key_secret_ref.name));
    }
    names
}

/// The connection Secret of a login role: `<database object>-<role>` (`_` → `-`).
pub fn connection_secret_name(db: &str, role: &str) -> String {
    format!("{db}-{}", role.replace('_', "-"))
}

/// The connection Secret applications mount: host, port, database, user, password, uri.
fn connection_secret(
    db: &Database,
    engine: &impl DatabaseEngine,
    target: &Target,
    role: &DesiredRole,
) -> Option<Secret> {
    let password = role.password.as_ref()?;
    let database = role
        .grants
        .first()
        .map(|g| g.database.clone())
        .or_else(|| db.spec.databases.first().map(|d| d.name.clone()))
        .unwrap_or_else(|| "postgres".into());
    let data: BTreeMap<String, ByteString> = engine
        .connection_details(target, &role.name, &password.0, &database)
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(connection_secret_name(&db.name_any(), &role.name)),
            namespace: db.namespace(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                ("reprise.dev/database".to_string(), db.name_any()),
                ("reprise.dev/role".to_string(), role.name.replace('_', "-")),
            ])),
            owner_references: db.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    })
}

/// One reconcile's view of a Database: the status being built, the Events to publish.
type Pass<'a> = Report<'a, Database>;

/// What a Database's reconcile adds to the shared report.
trait DatabasePass {
    fn state(&self) -> Option<DatabaseHealthState>;
    fn health(&mut self, state: DatabaseHealthState, message: impl Into<String>);
    fn action(&mut self, req: Request, outcome: ActionOutcome, message: String);
    fn finish(self, requeue: Duration) -> impl std::future::Future<Output = Result<Action, Error>> + Send;
}

impl DatabasePass for Pass<'_> {
    fn state(&self) -> Option<DatabaseHealthState> {
        self.status.health.as_ref().map(|h| h.state)
    }

    /// Sets the health signal; `since` moves only when the database turns
    /// healthy or stops being healthy: a failure keeps its first observation
    /// through Unreachable, DataMissing, Restoring (and across restarts).
    fn health(&mut self, state: DatabaseHealthState, message: impl Into<String>) {
        self.status.health = Some(Health::observe(self.status.health.as_ref(), state, message, self.now));
    }

    fn action(&mut self, req: Request, outcome: ActionOutcome, message: String) {
        let (record, type_, note) = crate::runtime::report::action_record(self.now, req.verb, req.id, outcome, message);
        self.event(type_, "RecoveryAction", "Recover", note);
        self.status.last_action = Some(record);
    }

    /// Ready, the RPO, the status write, the Events; then when to look again.
    async fn finish(mut self, requeue: Duration) -> Result<Action, Error> {
        fn ok(s: &DatabaseStatus, t: &str) -> bool {
            find_condition(&s.conditions, t).is_some_and(|c| c.status == ConditionStatus::True)
        }
        let healthy = self.state() == Some(DatabaseHealthState::Healthy);
        let (ready, reason, message) = if !ok(&self.status, REACHABLE) {
            let c = find_condition(&self.status.conditions, REACHABLE).cloned();
            let (r, m) = c.map(|c| (c.reason, c.message)).unwrap_or_default();
            (false, r, m)
        } else if !healthy {
            let h = self.status.health.clone().map(|h| h.message).unwrap_or_default();
            (false, "DataMissing".to_string(), h)
        } else if !ok(&self.status, ACCOUNTS_READY) {
            let c = find_condition(&self.status.conditions, ACCOUNTS_READY).cloned();
            (
                false,
                "AccountsNotReady".to_string(),
                c.map(|c| c.message).unwrap_or_default(),
            )
        } else {
            (
                true,
                reasons::RECONCILED.to_string(),
                "reachable; databases, roles and grants as specified".to_string(),
            )
        };
        self.set(reasons::READY, ready, &reason, message);
        // The RPO moves with time; refresh it with other changes, or every 5 minutes.
        if let Some(b) = self.status.last_backup.clone() {
            self.status.rpo_seconds = Some((self.now.as_second() - b.time.0.as_second()).max(0));
            if let Some(old) = &self.obj.status {
                keep_rpo_unless_due(&mut self.status, old, self.obj.metadata.generation.unwrap_or(0));
            }
            self.ctx
                .metrics
                .database_last_backup
                .get_or_create(&ObjectLabels {
                    namespace: self.obj.namespace().unwrap_or_default(),
                    name: self.obj.name_any(),
                })
                .set(crate::telemetry::unix_seconds(b.time.0));
        }
        // Each store's newest copy: an off-site copy left behind shows here.
        for st in &self.status.stores {
            let Some(copy) = &st.last_copy else { continue };
            self.ctx
                .metrics
                .store_last_copy
                .get_or_create(&crate::telemetry::StoreLabels {
                    namespace: self.obj.namespace().unwrap_or_default(),
                    name: self.obj.name_any(),
                    store: st.name.clone(),
                    offsite: st.offsite.to_string(),
                })
                .set(crate::telemetry::unix_seconds(copy.time.0));
        }
        // Events on transitions of reachability, and everything gathered.
        let was = self
            .obj
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, REACHABLE).map(|c| c.status));
        let now_ok = ok(&self.status, REACHABLE);
        if was
            != Some(if now_ok {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            })
        {
            let c = find_condition(&self.status.conditions, REACHABLE).cloned();
            if let Some(c) = c {
                let type_ = if now_ok { EventType::Normal } else { EventType::Warning };
                let reason = if now_ok { "Reachable" } else { "Unreachable" };
                self.event(type_, reason, "Connect", c.message);
            }
        }
        self.write().await?;
        Ok(Action::requeue(requeue))
    }
}

/// The RPO figures move with time: they are written with other changes, or
/// when one moved by 5 minutes or more; else the old figures stay.
fn keep_rpo_unless_due(new: &mut DatabaseStatus, old: &DatabaseStatus, generation: i64) {
    let rpos = |s: &DatabaseStatus| -> Vec<Option<i64>> {
        std::iter::once(s.rpo_seconds)
            .chain(s.stores.iter().map(|x| x.rpo_seconds))
            .collect()
    };
    let (fresh, before) = (rpos(new), rpos(old));
    let mut same = new.clone();
    same.rpo_seconds = old.rpo_seconds;
    for (s, o) in same.stores.iter_mut().zip(&old.stores) {
        s.rpo_seconds = o.rpo_seconds;
    }
    // Compared as it would be written (with the conditions kstatus derives).
    let mut written = same.clone();
    crate::runtime::kstatus::derive(&mut written.conditions, generation);
    let moved = fresh.len() != before.len()
        || fresh.iter().zip(&before).any(|(f, b)| match (f, b) {
            (Some(f), Some(b)) => (f - b).abs() >= 300,
            (f, b) => f.is_some() != b.is_some(),
        });
    // As JSON: times are written to the second.
    if serde_json::to_value(&written).ok() == serde_json::to_value(old).ok() && !moved {
        *new = same;
    }
}

pub fn reconcile(obj: Arc<Database>, ctx: Arc<Context>) -> BoxFuture<'static, Result<Action, Error>> {
    async move {
        let db = obj.as_ref();
        if let Err(invalid) = validate_spec(db) {
            return report_invalid(&ctx, db, &invalid).await;
        }
        let resolved = match connection::resolve(&ctx, db).await? {
            Ok(r) => r,
            Err(invalid) => return report_invalid(&ctx, db, &invalid).await,
        };
        run(&ctx, db, resolved).await
    }
    .boxed()
}

/// A request through the action annotation.
type Asked = Option<Request>;

/// What one pass works with once the instance answers.
struct Live<'a, E> {
    ctx: &'a Context,
    db: &'a Database,
    r: &'a connection::Resolved,
    engine: E,
}

impl<E: DatabaseEngine> Live<'_, E> {
    fn has_stores(&self) -> bool {
        !self.r.stores.is_empty()
    }

    fn peers(&self) -> restore::Peers<'_, E> {
        restore::Peers {
            engine: &self.engine,
            stores: &self.r.stores,
        }
    }
}

/// Opens the conversation with the engine `spec.engine` names, then runs the pass.
async fn run(ctx: &Context, db: &Database, r: connection::Resolved) -> Result<Action, Error> {
    match db.spec.engine {
        crate::api::database::Engine::PostgreSQL => {
            let tools = Tools {
                bin_dir: ctx.settings.postgres_bin_dir.clone(),
            };
            let reached = Postgres::connect(r.target.clone(), tools).await;
            // Watched between probes while it answers or is away; a login
            // it refuses is left to the probe.
            if reached.as_ref().err().is_none_or(|e| liveness::away(e.reason)) {
                liveness::keep(ctx, db, &r.target, |t| async move {
                    crate::providers::postgres::Watch::open(&t).await
                });
            }
            pass(ctx, db, &r, reached).await
        }
    }
}

async fn pass<E: DatabaseEngine>(
    ctx: &Context,
    db: &Database,
    r: &connection::Resolved,
    reached: Result<E, EngineError>,
) -> Result<Action, Error> {
    let probe = ctx.settings.database_probe_interval;
    let mut pass = Pass::new(ctx, db);
    let mut action = requested_action(db, pass.status.last_action.as_ref());

    // 1. Reach the instance. While it does not answer, an action asked of it
    //    waits (the engine's step has its timeout), and the instance is probed
    //    again soon: a restart of the server is ridden out, not failed at once.
    let engine = match reached {
        Ok(e) => e,
        Err(e) => {
            pass.set(REACHABLE, false, e.reason, e.message.clone());
            pass.health(DatabaseHealthState::Unreachable, format!("{}: {}", e.reason, e.message));
            let again = if action.is_some() {
                Duration::from_secs(2)
            } else {
                probe
            };
            return pass.finish(again.min(probe)).await;
        }
    };
    pass.set(
        REACHABLE,
        true,
        "Connected",
        format!(
            "{} {} at {}:{}",
            engine.name(),
            engine.version(),
            r.target.host,
            r.target.port
        ),
    );
    pass.status.server_version = Some(engine.version().to_string());
    let live = Live { ctx, db, r, engine };
    if let Some(req) = action.take_if(|r| r.action() == Some(ActionVerb::Reconnect)) {
        pass.action(req, ActionOutcome::Done, "the instance answered".into());
    }

    // 2. Roles first: databases may be owned by them.
    let owner = format!("{}/{}", db.namespace().unwrap_or_default(), db.name_any());
    let names: Vec<String> = db.spec.databases.iter().map(|d| d.name.clone()).collect();
    let mut out = Outcome::default();
    let mut accounts_error: Option<EngineError> = live
        .engine
        // Never drop a role left unmanaged by a conflict: it is still in the spec.
        .ensure_roles(
            &owner,
            &r.roles,
            db.spec.prune && r.conflicts.is_empty(),
            &names,
            &mut out,
        )
        .await
        .err();

    // 3. What is gone: restored when a backup holds it, else created (new database).
    let (manifests, broken) = live.r.stores.manifests().await;
    let asked_restore = action.take_if(|r| r.action() == Some(ActionVerb::Restore));
    match (asked_restore, db.annotations().get(RESTORE_TO_ANNOTATION)) {
        (Some(req), Some(point)) => pitr_now(&mut pass, &live, &manifests, req, point).await?,
        (asked, _) => {
            if let Err(e) = data(&mut pass, &live, &manifests, asked, &mut out).await? {
                accounts_error.get_or_insert(e);
            }
        }
    }

    // A drill: restored into scratch databases, verified, dropped.
    if let Some(asked) = action.take_if(|r| r.action() == Some(ActionVerb::Drill)) {
        drill_now(&mut pass, &live, &manifests, asked).await;
    }

    // 4. Owners and grants, once databases and tables are there.
    if accounts_error.is_none() {
        accounts_error = owners_and_grants(&live, &mut out).await.err();
    }
    record_accounts(&mut pass, accounts_error.as_ref(), out, r.roles.len());

    // 5. A connection Secret per login role.
    connection_secrets(&mut pass, &live).await?;

    // 6. Backups: on schedule, on request, never of a database missing data.
    let asked_backup = action.take_if(|r| r.action() == Some(ActionVerb::Backup));
    let requeue = backups(
        &mut pass,
        &live,
        asked_backup,
        accounts_error.is_none(),
        manifests,
        broken,
    )
    .await;
    if let Some(req) = action {
        let why = unknown_action(&req.verb, ComponentKind::Database);
        pass.action(req, ActionOutcome::Rejected, why);
    }
    pass.finish(requeue.min(probe)).await
}

/// A connection Secret per login role; one whose name is taken by a Secret
/// this Database does not control is left alone and reported (Conflict).
async fn connection_secrets(pass: &mut Pass<'_>, live: &Live<'_, impl DatabaseEngine>) -> Result<(), Error> {
    let (ctx, db) = (pass.ctx, pass.obj);
    let mut conflicts = live.r.conflicts.clone();
    for role in &live.r.roles {
        let Some(secret) = connection_secret(db, &live.engine, &live.r.target, role) else {
            continue;
        };
        match secrets::apply_owned(ctx, Database::MANAGER, &secret).await? {
            secrets::Applied::Recreated => {
                ctx.metrics.repaired("Database", "Secret", "Recreated");
                pass.event(
                    EventType::Warning,
                    "Recreated",
                    "Repair",
                    format!("connection Secret {} was deleted; recreated it", secret.name_any()),
                );
            }
            secrets::Applied::NotOurs(why) => conflicts.push(format!(
                "spec.roles[] {}: {why}; rename the role or the Secret",
                role.name
            )),
            secrets::Applied::Written | secrets::Applied::Unchanged => {}
        }
    }
    if !conflicts.is_empty() {
        pass.fail_and_tell(ACCOUNTS_READY, reasons::CONFLICT, "Reconcile", conflicts.join("; "));
    }
    Ok(())
}

/// What an interrupted restore left, finished or cleared (see
/// `restore::finish_interrupted`), each step told in an Event.
async fn clear_interrupted(pass: &mut Pass<'_>, live: &Live<'_, impl DatabaseEngine>) -> Result<(), EngineError> {
    for note in restore::finish_interrupted(&live.peers(), live.db).await? {
        pass.event(EventType::Normal, "RestoreResumed", "Restore", note);
    }
    Ok(())
}

/// Step 3: an interrupted restore finished or cleared, what is gone found,
/// new databases created, the rest restored (or held by a maintenance window),
/// a restore that finished before a restart verified. Err: the PostgreSQL
/// error that stopped it (reported with the accounts).
async fn data(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    manifests: &[Manifest],
    asked: Asked,
    out: &mut Outcome,
) -> Result<Result<(), EngineError>, Error> {
    let db = live.db;
    if live.has_stores()
        && let Err(e) = clear_interrupted(pass, live).await
    {
        return Ok(Err(e));
    }
    let missing = match restore::find_missing(&live.engine, db, manifests).await {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let (restorable, fresh): (Vec<Missing>, Vec<Missing>) = missing
        .into_iter()
        .partition(|m| manifests.iter().any(|b| m.held_by(b)));
    let mut notes = vec![];
    for m in &fresh {
        match m {
            Missing::Database(name) => {
                let owner = db
                    .spec
                    .databases
                    .iter()
                    .find(|d| &d.name == name)
                    .and_then(|d| d.owner.as_deref());
                match live.engine.create_database(name, owner).await {
                    Ok(()) => out.changes.push(format!("created database {name}")),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Missing::Table { .. } => notes.push(format!("{} does not exist yet (no backup holds it)", m.describe())),
        }
    }
    // Inside a Pause maintenance window only a restore someone asks for runs.
    let held = (!restorable.is_empty() && asked.is_none())
        .then(|| crate::runtime::holds::held_by(&live.ctx.stores, db))
        .flatten();
    if let Some(window) = held {
        let what: Vec<String> = restorable.iter().map(Missing::describe).collect();
        pass.health(
            DatabaseHealthState::DataMissing,
            format!(
                "gone: {}; not restored while MaintenanceWindow {window} holds recovery",
                what.join(", ")
            ),
        );
    } else if restorable.is_empty() {
        let checked = finished_before_restart(pass, live, manifests).await;
        if checked != Some(false) {
            pass.health(
                DatabaseHealthState::Healthy,
                if notes.is_empty() {
                    "every database and every table of the newest backup is present".to_string()
                } else {
                    notes.join("; ")
                },
            );
        }
        if let Some(req) = asked {
            pass.action(
                req,
                ActionOutcome::Done,
                "nothing to restore: every database and every table of the newest backup is present (a present database is never overwritten)"
                    .into(),
            );
        }
    } else {
        restore_now(pass, live, &restorable, manifests, asked).await?;
    }
    Ok(Ok(()))
}

/// A restore recorded as under way whose data is all present now (it finished
/// before a restart): verified against the backups it came from, and
/// recorded. Returns whether it verified (None: there was none).
async fn finished_before_restart(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    manifests: &[Manifest],
) -> Option<bool> {
    let p = pass.status.restore_in_progress.clone().filter(|_| live.has_stores())?;
    if p.backups.is_empty() {
        // A point-in-time restore cut short: its staged copy was swapped in
        // only if it had verified (see finish_interrupted); it is not re-checked.
        let mut rec = restore::record(p.targets.clone(), p.failure_observed.0);
        rec.started = p.started.clone();
        restore::conclude(
            &mut rec,
            &[],
            None,
            &["a point-in-time restore was interrupted by a restart; ask for it again".into()],
            p.failure_observed.0,
        );
        let asked = p.request.map(|id| Request {
            verb: ActionVerb::Restore.as_str().into(),
            id,
        });
        end_restore(pass, live.ctx, rec, asked);
        return Some(false);
    }
    let backups: Vec<(String, &Manifest)> = p
        .backups
        .iter()
        .filter_map(|b| {
            let (name, id) = b.split_once(": ")?;
            Some((name.to_string(), manifests.iter().find(|m| m.id == id)?))
        })
        .collect();
    let observed = p.failure_observed.0;
    let mut rec = restore::record(p.targets.clone(), observed);
    rec.started = p.started.clone();
    restore::verify_finished(&live.peers(), live.db, &backups, &mut rec, observed).await;
    rec.message = if rec.outcome == RestoreOutcome::Verified {
        "finished before the operator restarted; verified by the operator that took over".into()
    } else {
        format!("finished before the operator restarted: {}", rec.message)
    };
    let verified = rec.outcome == RestoreOutcome::Verified;
    let asked = p.request.map(|id| Request {
        verb: ActionVerb::Restore.as_str().into(),
        id,
    });
    end_restore(pass, live.ctx, rec, asked);
    Some(verified)
}

/// Restores what is gone from the newest backup that verifies, with the
/// restore written to status before it starts.
async fn restore_now(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    restorable: &[Missing],
    manifests: &[Manifest],
    asked: Asked,
) -> Result<(), Error> {
    let what: Vec<String> = restorable.iter().map(Missing::describe).collect();
    pass.health(DatabaseHealthState::DataMissing, format!("gone: {}", what.join(", ")));
    // The failure's first observation: kept across states and restarts.
    let observed = pass.status.health.as_ref().map(|h| h.since.0).unwrap_or(pass.now);
    pass.health(DatabaseHealthState::Restoring, format!("restoring {}", what.join(", ")));
    let mut rec = restore::record(what.clone(), observed);
    let (chosen, failures) = restore::choose(&live.r.stores, restorable, manifests, &mut rec).await;
    pass.status.restore_in_progress = Some(RestoreInProgress {
        targets: what.clone(),
        backups: chosen
            .iter()
            .map(|c| format!("{}: {}", c.database, c.manifest.id))
            .collect(),
        failure_observed: MicroTime(observed),
        started: rec.started.clone(),
        request: asked.as_ref().map(|r| r.id.clone()),
    });
    pass.event(
        EventType::Warning,
        "DataMissing",
        "Restore",
        format!(
            "{} gone; restoring from the newest backup that verifies",
            what.join(", ")
        ),
    );
    pass.checkpoint().await?;
    crash::point("restore:recorded");
    restore::run(&live.peers(), live.db, &chosen, failures, observed, &mut rec).await;
    end_restore(pass, live.ctx, rec, asked);
    // Said now, with its Events, not after the rest of the pass (copies to
    // stores that missed a backup can take minutes): the incident ends when
    // the data is back.
    pass.flush().await
}

/// A requested point-in-time restore of every database of the spec, over
/// the live ones, recorded in status before it starts.
async fn pitr_now(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    manifests: &[Manifest],
    req: Request,
    point: &str,
) -> Result<(), Error> {
    let field = format!("the {RESTORE_TO_ANNOTATION} annotation");
    if live.db.spec.backup.as_ref().and_then(|b| b.wal.as_ref()).is_none() {
        let why = format!("{field} asks for a point-in-time restore, which needs spec.backup.wal");
        pass.action(req, ActionOutcome::Rejected, why);
        return Ok(());
    }
    // What a restore cut short by a restart left: an unverified staged copy
    // is dropped (the restore runs again below), a verified one swapped in.
    match clear_interrupted(pass, live).await {
        Ok(()) => {}
        Err(e) => {
            pass.action(
                req,
                ActionOutcome::Failed,
                format!("clearing an interrupted restore: {e}"),
            );
            return Ok(());
        }
    }
    let point = match crate::providers::postgres::replay::Point::parse(point) {
        Ok(p) => p,
        Err(e) => {
            pass.action(req, ActionOutcome::Rejected, format!("{field}: {e}"));
            return Ok(());
        }
    };
    let targets: Vec<String> = live
        .db
        .spec
        .databases
        .iter()
        .map(|d| format!("database {} to {}", d.name, point.describe()))
        .collect();
    let mut rec = restore::record(targets.clone(), pass.now);
    pass.health(
        DatabaseHealthState::Restoring,
        format!("restoring {}", targets.join(", ")),
    );
    pass.status.restore_in_progress = Some(RestoreInProgress {
        targets: targets.clone(),
        backups: vec![],
        failure_observed: MicroTime(pass.now),
        started: rec.started.clone(),
        request: Some(req.id.clone()),
    });
    pass.event(
        EventType::Normal,
        "PointInTimeRestore",
        "Restore",
        format!(
            "restoring {} from a base backup and the archived WAL",
            targets.join(", ")
        ),
    );
    pass.checkpoint().await?;
    crash::point("pitr:recorded");
    let tools = Tools {
        bin_dir: live.ctx.settings.postgres_bin_dir.clone(),
    };
    let recovery = pitr::Recovery {
        engine: &live.engine,
        tools: &tools,
        admin: &live.r.target,
        stores: &live.r.stores,
    };
    pitr::run(&recovery, live.db, manifests, &point, &mut rec).await;
    end_restore(pass, live.ctx, rec, Some(req));
    pass.flush().await
}

/// Records a restore that ended: status, health, Events, metric, the action's answer.
fn end_restore(pass: &mut Pass<'_>, ctx: &Context, rec: RestoreRecord, asked: Asked) {
    for why in &rec.skipped_backups {
        pass.event(
            EventType::Warning,
            "BackupCorrupt",
            "Restore",
            format!("skipped: {why}"),
        );
    }
    ctx.metrics
        .database_restores
        .get_or_create(&OutcomeLabels {
            outcome: format!("{:?}", rec.outcome),
        })
        .inc();
    let checked = rec
        .contents_checked
        .as_ref()
        .map(|c| format!("{} table(s) with {} rows and ", c.tables, c.rows))
        .unwrap_or_default();
    let summary = format!(
        "{} from backup {}{} ({} bytes in {}, data-loss window {}s): {}",
        rec.targets.join(", "),
        rec.backup_id.as_deref().unwrap_or("none"),
        rec.store.as_ref().map(|s| format!(" in store {s}")).unwrap_or_default(),
        rec.bytes_restored,
        rec.duration,
        rec.data_loss_window_seconds.unwrap_or(0),
        if rec.outcome == RestoreOutcome::Verified {
            format!("{checked}{} verify table(s) match the backup", rec.verification.len())
        } else {
            format!("{:?}: {}", rec.outcome, rec.message)
        }
    );
    if rec.outcome == RestoreOutcome::Verified {
        pass.event(EventType::Normal, "Restored", "Restore", format!("restored {summary}"));
        pass.health(DatabaseHealthState::Healthy, format!("restored {summary}"));
    } else {
        pass.event(
            EventType::Warning,
            "RestoreFailed",
            "Restore",
            format!("restore of {summary}"),
        );
        pass.health(DatabaseHealthState::RestoreFailed, format!("restore of {summary}"));
    }
    if let Some(req) = asked {
        let outcome = if rec.outcome == RestoreOutcome::Verified {
            ActionOutcome::Done
        } else {
            ActionOutcome::Failed
        };
        pass.action(req, outcome, summary);
    }
    pass.status.restore_in_progress = None;
    pass.status.last_restore = Some(rec);
}

/// A drill: the newest backup restored into scratch databases, verified, dropped.
async fn drill_now(pass: &mut Pass<'_>, live: &Live<'_, impl DatabaseEngine>, manifests: &[Manifest], req: Request) {
    if !live.has_stores() {
        pass.action(
            req,
            ActionOutcome::Rejected,
            "no backup store: spec.backup is unset".into(),
        );
        return;
    }
    let id = req.id.clone();
    let rec = scratch::run(&live.peers(), live.db, manifests, &id).await;
    let summary = format!(
        "drill: backup {} restored into scratch copies and dropped in {} ({} bytes): {}",
        rec.backup_id.as_deref().unwrap_or("none"),
        rec.duration,
        rec.bytes_restored,
        if rec.outcome == RestoreOutcome::Verified {
            format!("{} verify table(s) match the manifest", rec.verification.len())
        } else {
            format!("{:?}: {}", rec.outcome, rec.message)
        }
    );
    let verified = rec.outcome == RestoreOutcome::Verified;
    pass.event(
        if verified {
            EventType::Normal
        } else {
            EventType::Warning
        },
        if verified { "DrillVerified" } else { "DrillFailed" },
        "Drill",
        summary.clone(),
    );
    let outcome = if verified {
        ActionOutcome::Done
    } else {
        ActionOutcome::Failed
    };
    pass.action(req, outcome, summary);
    pass.status.last_drill = Some(rec);
}

/// Step 4: each database's owner, then every role's grants.
async fn owners_and_grants(live: &Live<'_, impl DatabaseEngine>, out: &mut Outcome) -> Result<(), EngineError> {
    let engine = &live.engine;
    for d in &live.db.spec.databases {
        if let Some(o) = &d.owner
            && engine.database_exists(&d.name).await.unwrap_or(false)
            && engine.ensure_owner(&d.name, o).await?
        {
            out.changes.push(format!("database {} is now owned by {o}", d.name));
        }
    }
    engine.ensure_grants(&live.r.roles, out).await
}

/// The accounts' condition, what waits, what is left over, what changed.
fn record_accounts(pass: &mut Pass<'_>, error: Option<&EngineError>, out: Outcome, roles: usize) {
    match error {
        Some(e) => pass.set(ACCOUNTS_READY, false, e.reason, e.message.clone()),
        None => {
            let waiting = if out.pending.is_empty() {
                String::new()
            } else {
                format!("; {} grant(s) wait for their objects", out.pending.len())
            };
            pass.set(
                ACCOUNTS_READY,
                true,
                "AsSpecified",
                format!("{roles} role(s) as specified{waiting}"),
            );
        }
    }
    pass.status.pending_grants = out.pending;
    pass.status.orphan_roles = out.orphans;
    if !out.changes.is_empty() {
        pass.event(
            EventType::Normal,
            "AccountsChanged",
            "Reconcile",
            out.changes.join("; "),
        );
    }
}

/// Step 6: a backup when one is due or asked (never of a database missing
/// data), a copy of the newest backup to each store that lacks it, each
/// store's status; returns when the next backup is due.
async fn backups(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    asked: Asked,
    accounts_ok: bool,
    mut manifests: Vec<Manifest>,
    mut broken: Vec<Unusable>,
) -> Duration {
    let probe = live.ctx.settings.database_probe_interval;
    let db = live.db;
    let Some(spec) = &db.spec.backup else {
        return probe;
    };
    let last_attempt = pass.status.last_backup_attempt.as_ref().map(|t| t.0);
    let due = backup::next_due(db, last_attempt);
    let now_asked = db
        .annotations()
        .get(BACKUP_NOW_ANNOTATION)
        .filter(|v| pass.status.backup_now.as_ref() != Some(*v))
        .cloned();
    let scheduled = due.is_some_and(|d| d <= pass.now);
    let healthy = pass.state() == Some(DatabaseHealthState::Healthy);
    let usable: Vec<&Store> = live
        .r
        .stores
        .usable()
        .into_iter()
        .filter(|s| !broken.iter().any(|b| b.name == s.name))
        .collect();
    let mut notes: Vec<(String, String)> = vec![];
    let mut failed = false;
    let wrote;
    // The WAL archiver runs before a backup is taken (after a restart, too):
    // an asked base backup answers once the WAL to its end is archived.
    archiving(live);
    if (scheduled || now_asked.is_some() || asked.is_some()) && healthy && accounts_ok && !usable.is_empty() {
        pass.status.last_backup_attempt = Some(Time(pass.now));
        if let Some(v) = now_asked {
            pass.status.backup_now = Some(v);
        }
        let mut base_end = None;
        let (outcome, message) = backup_now(pass, live, &usable, &mut notes, &mut base_end).await;
        wrote = true;
        failed = outcome != "Succeeded";
        if let Some(req) = asked {
            let (answer, message) = match (outcome, base_end) {
                ("Succeeded", Some(end)) => wal_to_its_end(live, end, message).await,
                ("Succeeded", None) => (ActionOutcome::Done, message),
                _ => (ActionOutcome::Failed, message),
            };
            pass.action(req, answer, message);
        }
    } else {
        if let Some(req) = asked {
            let why = if usable.is_empty() {
                "no backup store can be used now (see the BackupsHealthy condition)"
            } else {
                "the database is not healthy: no backup of missing data"
            };
            pass.action(req, ActionOutcome::Rejected, why.into());
        }
        wrote = catch_up(pass, live, &manifests, &broken, &mut notes).await;
    }
    if wrote {
        (manifests, broken) = live.r.stores.manifests().await;
        write_catalogs(live, &manifests).await;
    }
    store_status(
        pass,
        live,
        &spec.retention,
        (&manifests, &broken, &notes),
        (failed, wrote && !failed),
        due,
    );
    pass.status.wal = archiving(live);
    match backup::next_due(db, pass.status.last_backup_attempt.as_ref().map(|t| t.0)) {
        Some(next) => {
            let wait = next.as_second() - Timestamp::now().as_second();
            probe.min(Duration::from_secs(wait.max(1) as u64))
        }
        None => probe,
    }
}

/// An asked backup with a base answers Done once the WAL to the base's end
/// is archived too: a restore from it needs that WAL (e.g. the peer of a
/// relocation, restoring to the newest point).
async fn wal_to_its_end(live: &Live<'_, impl DatabaseEngine>, end: u64, message: String) -> (ActionOutcome, String) {
    let Some(every) = live
        .db
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.wal.as_ref())
        .map(|w| w.upload_interval.as_std())
    else {
        return (ActionOutcome::Done, message);
    };
    let uid = live.db.uid().unwrap_or_default();
    match archive::wait_archived(&uid, end, every * 3 + Duration::from_secs(30)).await {
        Ok(()) => (ActionOutcome::Done, format!("{message}; the WAL to its end archived")),
        Err(why) => (ActionOutcome::Failed, format!("{message}; but {why}")),
    }
}

/// Keeps the WAL archiver of the Database running as the spec says (or
/// stopped); what it has archived, for status.
fn archiving(live: &Live<'_, impl DatabaseEngine>) -> Option<crate::api::database::WalStatus> {
    use sha2::{Digest, Sha256};
    let db = live.db;
    let uid = db.uid().unwrap_or_default();
    let Some(w) = db.spec.backup.as_ref().and_then(|b| b.wal.as_ref()) else {
        archive::stop(&uid);
        return None;
    };
    let ns = db.namespace().unwrap_or_default();
    let slot = w
        .slot
        .clone()
        .unwrap_or_else(|| crate::providers::postgres::wal::slot_name(&ns, &db.name_any()));
    let mut key = Sha256::new();
    key.update(db.metadata.generation.unwrap_or(0).to_be_bytes());
    key.update(live.r.target.password.0.as_bytes());
    for s in live.r.stores.usable() {
        key.update(s.fingerprint.as_bytes());
    }
    let setup = archive::Setup {
        target: live.r.target.clone(),
        tools: Tools {
            bin_dir: live.ctx.settings.postgres_bin_dir.clone(),
        },
        stores: live.r.stores.clone(),
        slot: slot.clone(),
        interval: w.upload_interval.as_std(),
        key: crate::providers::artifacts::hex(&key.finalize()),
        wanted: {
            let dbs = live.ctx.stores.databases.clone();
            let uid = uid.clone();
            // A site that stops being the active one stops writing WAL to the stores.
            let (fence, stores) = (live.ctx.fence.clone(), live.ctx.stores.clone());
            Arc::new(move || {
                fence.permit(&stores, &ns).is_ok()
                    && dbs.state().iter().any(|d| {
                        d.0.as_ref().is_ok_and(|d| {
                            d.uid().as_deref() == Some(uid.as_str())
                                && d.spec.backup.as_ref().is_some_and(|b| b.wal.is_some())
                        })
                    })
            })
        },
    };
    let progress = archive::ensure(&uid, setup);
    Some(archive::status(&progress, &slot))
}

/// Copies the newest backup into each store that lacks it (a store that
/// was down when it was taken); returns whether it wrote anything.
async fn catch_up(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    manifests: &[Manifest],
    broken: &[Unusable],
    notes: &mut Vec<(String, String)>,
) -> bool {
    let stores = &live.r.stores;
    let mut wrote = false;
    for (to, m) in stores::behind(stores, manifests) {
        let (Some(from), Some(dest)) = (stores.get(m.source), stores.get(to)) else {
            continue;
        };
        if broken.iter().any(|b| b.name == dest.name) {
            continue;
        }
        wrote = true;
        match backup::copy(from, m, dest).await {
            Ok(_) => pass.event(
                EventType::Normal,
                "BackupCopied",
                "Backup",
                format!("backup {} copied from store {} to store {}", m.id, from.name, dest.name),
            ),
            Err(e) => {
                let why = format!(
                    "copying backup {} from store {}: {e}; retried at the next pass",
                    m.id, from.name
                );
                pass.event(
                    EventType::Warning,
                    "BackupCopyFailed",
                    "Backup",
                    format!("store {}: {why}", dest.name),
                );
                notes.push((dest.name.clone(), why));
            }
        }
    }
    wrote
}

/// Writes each usable store's catalog of what it holds.
async fn write_catalogs(live: &Live<'_, impl DatabaseEngine>, manifests: &[Manifest]) {
    let name = format!("{}/{}", live.db.namespace().unwrap_or_default(), live.db.name_any());
    for (i, store) in live.r.stores.0.iter().enumerate() {
        let Ok(store) = store else { continue };
        let own: Vec<Manifest> = manifests.iter().filter(|m| m.source == i).cloned().collect();
        if let Err(e) = store.write_catalog(&name, &own).await {
            tracing::warn!(store = store.name, error = %e, "cannot write the backup catalog");
        }
    }
}

/// Each store's status, the newest backup, and `BackupsHealthy`.
fn store_status(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    retention: &crate::api::common::Retention,
    (manifests, broken, notes): (&[Manifest], &[Unusable], &[(String, String)]),
    (backup_failed, backed_up): (bool, bool),
    due: Option<Timestamp>,
) {
    let st = stores::status(&live.r.stores, manifests, broken, notes, retention, pass.now);
    // The newest backup any store holds (one found in the stores counts too,
    // e.g. after the Database was created again over existing stores).
    if let Some(newest) = manifests.first()
        && pass.status.last_backup.as_ref().is_none_or(|b| b.id < newest.id)
    {
        pass.status.last_backup = Some(backup::record(newest));
    }
    // A failed backup stays said until one succeeds.
    let failed_before = find_condition(&pass.status.conditions, BACKUPS_HEALTHY)
        .is_some_and(|c| c.reason == "BackupFailed" && c.status == ConditionStatus::False);
    let keep_failure = backup_failed || (failed_before && !backed_up);
    if !keep_failure {
        match (stores::trouble(&st), &pass.status.last_backup) {
            (Some((reason, why)), _) => pass.set(BACKUPS_HEALTHY, false, reason, why),
            (None, Some(b)) => {
                let names: Vec<&str> = st.iter().map(|s| s.name.as_str()).collect();
                let msg = format!("the newest backup {} is in every store ({})", b.id, names.join(", "));
                pass.set(BACKUPS_HEALTHY, true, "BackupSucceeded", msg);
            }
            (None, None) => {
                let when = due.map(|d| d.to_string()).unwrap_or_default();
                pass.set(
                    BACKUPS_HEALTHY,
                    false,
                    "NoBackupYet",
                    format!("the first backup is due at {when}"),
                );
            }
        }
    }
    pass.status.stores = st;
}

/// Takes one backup into every usable store and applies each store's
/// retention: (outcome, message). What a store made of it goes to `notes`.
async fn backup_now(
    pass: &mut Pass<'_>,
    live: &Live<'_, impl DatabaseEngine>,
    usable: &[&Store],
    notes: &mut Vec<(String, String)>,
    base_end: &mut Option<u64>,
) -> (&'static str, String) {
    let ctx = live.ctx;
    let result = backup::take(&live.engine, usable, live.db).await;
    let (outcome, message) = match result {
        Ok(taken) => {
            let first = &taken.landed[0];
            let rec = backup::record(first);
            ctx.metrics.database_backup_bytes.inc_by(first.bytes());
            let names: Vec<&str> = usable
                .iter()
                .filter(|s| !taken.failed.iter().any(|(n, _)| *n == s.name))
                .map(|s| s.name.as_str())
                .collect();
            let mut message = format!(
                "backup {}: {} bytes in {}, in store(s) {}",
                rec.id,
                first.bytes(),
                rec.duration,
                names.join(", ")
            );
            for (name, why) in &taken.failed {
                message.push_str(&format!("; store {name} failed: {why}"));
                notes.push((
                    name.clone(),
                    format!("backup {} failed: {why}; copied at the next pass", taken.id),
                ));
            }
            for store in usable.iter().filter(|s| names.contains(&s.name.as_str())) {
                let pruned = match store.manifests(0).await {
                    Ok(own) => backup::prune(store, live.db, &own).await,
                    Err(e) => Err(e.to_string()),
                };
                match pruned {
                    Ok(p) if !p.gone.is_empty() => message.push_str(&format!(
                        "; retention removed {} from store {}",
                        p.gone.join(", "),
                        store.name
                    )),
                    Ok(_) => {}
                    Err(e) => message.push_str(&format!("; retention failed in store {}: {e}", store.name)),
                }
            }
            let type_ = if taken.failed.is_empty() {
                EventType::Normal
            } else {
                EventType::Warning
            };
            pass.event(type_, "BackupSucceeded", "Backup", message.clone());
            pass.status.last_backup = Some(rec);
            *base_end = first
                .base
                .as_ref()
                .and_then(|b| b.end_lsn.as_deref())
                .and_then(crate::providers::postgres::wal::parse_lsn);
            ("Succeeded", message)
        }
        Err(e) => {
            let last = pass
                .status
                .last_backup
                .as_ref()
                .map(|b| format!("; the last good backup is still {}", b.id))
                .unwrap_or_default();
            let message = format!("backup failed: {e}{last}");
            pass.set(BACKUPS_HEALTHY, false, "BackupFailed", message.clone());
            pass.event(EventType::Warning, "BackupFailed", "Backup", message.clone());
            ("Failed", message)
        }
    };
    ctx.metrics
        .database_backups
        .get_or_create(&OutcomeLabels {
            outcome: outcome.into(),
        })
        .inc();
    (outcome, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_tables_must_be_in_declared_databases() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Database",
            "metadata": {"name": "d"},
            "spec": {
                "instance": {"external": {"host": "db", "adminSecretRef": {"name": "a"}}},
                "databases": [{"name": "shop"}],
                "verify": {"tables": [{"database": "shop", "name": "orders"}, {"database": "crm", "name": "x"}]}
            }
        }))
        .unwrap();
        let e = validate_spec(&db).unwrap_err();
        assert_eq!(e.field, "spec.verify.tables[1].database");
    }
}
