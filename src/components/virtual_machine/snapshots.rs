//! VM snapshots: scheduled (cron) and asked for (`reprise.dev/backup-now`),
//! recorded in status, pruned by retention (never the newest ready one).

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

use crate::{
    api::{VirtualMachine, database::BACKUP_NOW_ANNOTATION, virtual_machine::VmBackupStatus},
    providers::vm::VmEngine,
    runtime::{Error, report::Report},
};

fn next_due(vm: &VirtualMachine, last: Option<Timestamp>) -> Option<Timestamp> {
    let schedule = &vm.spec.backup.as_ref()?.schedule;
    crate::runtime::schedule::next_due(schedule, last, vm.metadata.creation_timestamp.as_ref())
}

/// Takes a snapshot when one is due or asked, records the newest, applies
/// retention. Returns when the next one is due.
pub async fn reconcile<E: VmEngine>(
    r: &mut Report<'_, VirtualMachine>,
    kv: &E,
    vm: &VirtualMachine,
) -> Result<Option<Duration>, Error>
where
    Error: From<E::Error>,
{
    let Some(spec) = &vm.spec.backup else {
        return Ok(None);
    };
    let last_attempt = r.status.last_backup_attempt.as_ref().map(|t| t.0);
    let asked = vm
        .annotations()
        .get(BACKUP_NOW_ANNOTATION)
        .filter(|v| r.status.backup_now.as_ref() != Some(*v))
        .cloned();
    let due = next_due(vm, last_attempt);
    if asked.is_some() || due.is_some_and(|d| d <= r.now) {
        let name = format!("{}-{}", vm.name_any(), r.now.strftime("%Y%m%d%H%M%S"));
        kv.snapshot(vm, &name).await?;
        r.status.last_backup_attempt = Some(Time(r.now));
        if let Some(v) = asked {
            r.status.backup_now = Some(v);
        }
        r.event(
            EventType::Normal,
            "SnapshotTaken",
            "Backup",
            format!("VirtualMachineSnapshot {name} created"),
        );
    }
    let snaps = kv.snapshots(vm).await?;
    // Retention: the newest `count`, none older than `maxAge`, never the newest ready one.
    let newest_ready = snaps.iter().find(|s| s.ready).map(|s| s.name.clone());
    for (i, s) in snaps.iter().enumerate() {
        let too_many = i >= spec.retention.count as usize;
        let too_old = spec
            .retention
            .max_age
            .as_ref()
            .is_some_and(|a| r.now.as_second() - s.created.as_second() > a.as_std().as_secs() as i64);
        if (too_many || too_old) && Some(&s.name) != newest_ready.as_ref() {
            kv.delete_snapshot(vm, &s.name).await?;
            r.event(
                EventType::Normal,
                "SnapshotPruned",
                "Backup",
                format!("retention removed {}", s.name),
            );
        }
    }
    r.status.last_backup = snaps.first().map(|s| VmBackupStatus {
        name: s.name.clone(),
        time: Time(s.created),
        duration: s
            .ready_at
            .filter(|_| s.ready)
            .map(|t| format!("{}s", (t.as_second() - s.created.as_second()).max(0))),
        size_bytes: s.size_bytes,
        ready: s.ready,
    });
    let next = next_due(vm, r.status.last_backup_attempt.as_ref().map(|t| t.0));
    let mut wait = next.map(|n| Duration::from_secs((n.as_second() - Timestamp::now().as_second()).max(1) as u64));
    if snaps.first().is_some_and(|s| !s.ready) {
        wait = Some(wait.map_or(Duration::from_secs(2), |w| w.min(Duration::from_secs(2))));
    }
    Ok(wait)
}
