//! A planned relocation (`reprise.dev/relocate-to`) loses nothing: before
//! the lease goes, the site quiesces — its Applications stop (the fence
//! holds them: no new writes), then each Database with backups takes a
//! final one (through its `backup` action, the contract's way) — so the
//! peer, restoring to the newest point, finds every row.

use kube::ResourceExt;

use crate::{
    api::{
        Site,
        common::{ComponentKind, ComponentRef, find_condition, reasons},
        contract::{ActionOutcome, ActionVerb, Component},
    },
    runtime::{Context, Error, fence::SITE_NOT_ACTIVE, stores as registry},
};

/// Where the quiesce before a relocation to `peer` stands: Ok when the
/// lease may go, else what it waits for (a final backup is asked here).
pub async fn quiesced(ctx: &Context, site: &Site, peer: &str, epoch: u64) -> Result<Result<(), String>, Error> {
    let ns = site.namespace().unwrap_or_default();
    if ctx.fence.get(&ns).and_then(|s| s.quiescing).as_deref() != Some(peer) {
        return Ok(Err(format!("relocating to site {peer}: stopping the applications")));
    }
    let running: Vec<String> = ctx
        .stores
        .applications
        .state()
        .iter()
        .filter_map(|a| a.0.as_ref().ok())
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
        .filter(|a| {
            let held = a
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, reasons::READY))
                .is_some_and(|c| c.reason == SITE_NOT_ACTIVE && c.message.contains("relocating"));
            !held
        })
        .map(|a| a.name_any())
        .collect();
    if !running.is_empty() {
        return Ok(Err(format!(
            "relocating to site {peer}: stopping Application {}",
            running.join(", ")
        )));
    }
    let id = format!(
        "relocate-{}-e{epoch}",
        site.uid().unwrap_or_default().chars().take(8).collect::<String>()
    );
    let mut waiting = vec![];
    for db in ctx
        .stores
        .databases
        .state()
        .iter()
        .filter_map(|d| d.0.as_ref().ok())
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()) && d.spec.backup.is_some())
    {
        let name = db.name_any();
        match db.last_action().filter(|a| a.id == id) {
            Some(a) if a.outcome == ActionOutcome::Done => continue,
            Some(a) if matches!(a.outcome, ActionOutcome::Failed | ActionOutcome::Rejected) => {
                return Ok(Err(format!(
                    "relocating to site {peer}: the final backup of Database {name} failed ({}): the lease stays here; remove the annotation or fix it",
                    a.message
                )));
            }
            _ => {}
        }
        if db.pending_request().is_none_or(|r| r.id != id) {
            let c = ComponentRef {
                kind: ComponentKind::Database,
                name: name.clone(),
            };
            registry::request_action(ctx, &ns, &c, ActionVerb::Backup, &id).await?;
            crate::crash::point("relocate:backup-asked");
        }
        waiting.push(name);
    }
    if waiting.is_empty() {
        Ok(Ok(()))
    } else {
        Ok(Err(format!(
            "relocating to site {peer}: applications stopped; the final backup of Database {}",
            waiting.join(", ")
        )))
    }
}
