//! The stores of a Database as status tells them: each store's newest copy,
//! its age, whether it keeps up with the newest backup; which stores are
//! behind (and get a copy); the `BackupsHealthy` condition naming the stores
//! at fault. Pure decisions over a listing; the effects are in `backup`.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::backup;
use crate::{
    api::{common::Retention, database::StoreStatus},
    providers::backup_store::{Manifest, Stores, Unusable, expired},
};

/// Each store of the spec: its newest copy and whether it is the newest
/// backup. `broken` are the stores that could not be used or listed;
/// `notes` what the last write to a store said (its name first).
pub fn status(
    stores: &Stores,
    manifests: &[Manifest],
    broken: &[Unusable],
    notes: &[(String, String)],
    retention: &Retention,
    now: Timestamp,
) -> Vec<StoreStatus> {
    let newest = manifests.first().map(|m| m.id.as_str());
    stores
        .0
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (name, offsite) = match s {
                Ok(s) => (s.name.clone(), s.offsite),
                Err(u) => (u.name.clone(), u.offsite),
            };
            let own: Vec<Manifest> = manifests.iter().filter(|m| m.source == i).cloned().collect();
            let copy = own.first();
            let mut st = StoreStatus {
                name: name.clone(),
                offsite,
                healthy: false,
                message: String::new(),
                last_copy: copy.map(backup::record),
                rpo_seconds: copy.map(|m| (now.as_second() - m.started.as_second()).max(0)),
                key_id: copy.and_then(|m| m.key_id().map(str::to_string)),
                locked_until: copy.and_then(|m| m.locked.as_ref().map(|l| Time(l.until))),
            };
            let note = notes.iter().find(|(n, _)| *n == name).map(|(_, w)| w.clone());
            if let Some(u) = broken.iter().find(|u| u.name == name) {
                st.message = u.to_string();
            } else if let Some(n) = note {
                st.message = n;
            } else if copy.map(|m| m.id.as_str()) != newest {
                st.message = format!(
                    "behind: it lacks the newest backup {}; a copy is made at the next pass",
                    newest.unwrap_or_default()
                );
            } else {
                st.healthy = true;
                st.message = match copy {
                    Some(m) => format!("holds the newest backup {}", m.id),
                    None => "no backup yet".into(),
                };
                let (_, waiting) = expired(
                    &own,
                    retention.count as usize,
                    retention.max_age.as_ref().map(|a| a.as_std()),
                    now,
                );
                if let Some(until) = waiting.iter().map(|(_, u)| *u).min() {
                    st.message.push_str(&format!(
                        "; {} backup(s) past retention stay locked, the first until {until}: removed then",
                        waiting.len()
                    ));
                }
            }
            st
        })
        .collect()
}

/// For each usable store that lacks the newest backup: the store's index and
/// the newest backup's copy to read from (another store's).
pub fn behind<'m>(stores: &Stores, manifests: &'m [Manifest]) -> Vec<(usize, &'m Manifest)> {
    let Some(newest) = manifests.first() else {
        return vec![];
    };
    (0..stores.0.len())
        .filter(|&i| stores.get(i).is_some())
        .filter(|&i| !manifests.iter().any(|m| m.source == i && m.id == newest.id))
        .map(|i| (i, newest))
        .collect()
}

/// `BackupsHealthy` from the stores' status: None when every store is
/// healthy (the caller says what the newest backup is).
pub fn trouble(status: &[StoreStatus]) -> Option<(&'static str, String)> {
    let bad: Vec<String> = status
        .iter()
        .filter(|s| !s.healthy)
        .map(|s| format!("store {}: {}", s.name, s.message))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let reason = if status.iter().any(|s| s.last_copy.is_none() && !s.healthy) {
        "StoreUnavailable"
    } else {
        "StoreBehind"
    };
    Some((reason, bad.join("; ")))
}

/// The newest copy on an off-site store, and whether there is such a store.
pub fn offsite_newest(status: &[StoreStatus]) -> (bool, Option<Timestamp>) {
    let off: Vec<&StoreStatus> = status.iter().filter(|s| s.offsite).collect();
    let newest = off.iter().filter_map(|s| s.last_copy.as_ref().map(|c| c.time.0)).max();
    (!off.is_empty(), newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::database::NamedStore;
    use crate::providers::backup_store::Store;

    fn stores(dir: &std::path::Path) -> Stores {
        let open = |name: &str, offsite: bool| {
            let spec: NamedStore = serde_json::from_value(serde_json::json!({
                "name": name, "offsite": offsite, "local": {"path": dir.join(name)}
            }))
            .unwrap();
            Store::open(&spec, "spec.backup.stores[0]", None, None, "ns", "db")
        };
        Stores(vec![
            open("here", false).map_err(|_| unreachable!()),
            open("away", true).map_err(|_| unreachable!()),
            Err(Unusable {
                name: "gone".into(),
                offsite: true,
                field: "spec.backup.stores[2].s3.credentialsSecretRef".into(),
                why: "Secret \"s3\" not found".into(),
            }),
        ])
    }

    fn m(id: &str, secs: i64, source: usize) -> Manifest {
        let t = Timestamp::from_second(secs).unwrap();
        Manifest {
            id: id.into(),
            started: t,
            finished: t,
            server_version: "17".into(),
            databases: vec![],
            locked: None,
            base: None,
            source,
        }
    }

    #[test]
    fn a_store_behind_or_unusable_is_named_and_the_others_stay_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let s = stores(dir.path());
        // The newest backup landed here only; away holds the one before.
        let ms = vec![m("b2", 2000, 0), m("b1", 1000, 0), m("b1", 1000, 1)];
        let broken = vec![s.0[2].clone().unwrap_err()];
        let now = Timestamp::from_second(2100).unwrap();
        let st = status(&s, &ms, &broken, &[], &Retention::default(), now);
        assert!(st[0].healthy, "{:?}", st[0]);
        assert_eq!(st[0].rpo_seconds, Some(100));
        assert!(!st[1].healthy && st[1].message.contains("b2"), "{:?}", st[1]);
        assert_eq!(st[1].rpo_seconds, Some(1100));
        assert!(st[2].message.contains("spec.backup.stores[2].s3.credentialsSecretRef"));
        let (reason, msg) = trouble(&st).unwrap();
        assert_eq!(reason, "StoreUnavailable");
        assert!(msg.contains("store away") && msg.contains("store gone") && !msg.contains("store here"));
        let lag = behind(&s, &ms);
        assert_eq!(lag.len(), 1);
        assert_eq!((lag[0].0, lag[0].1.id.as_str()), (1, "b2"));
        // The RecoveryPlan reads the off-site copy's time, not the newest.
        assert_eq!(offsite_newest(&st), (true, Some(Timestamp::from_second(1000).unwrap())));
    }
}
