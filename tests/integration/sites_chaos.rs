//! Split brain, with the real operators: paris and lyon, each in its own
//! control plane, each reaching the witness through a relay the test can
//! cut, under random faults — the holder's operator paused (SIGSTOP) for
//! less or more than a lease, a site cut from the witness, the witness
//! stopped. Each cluster's shop is deleted every second, so every moment a
//! site acts shows in its cluster's audit log as a repair. Over every run:
//! each repair lies inside a lease its site held (from the witness's object
//! versions), and leases of different epochs never overlap — never two
//! sites acting at once, never one acting at an epoch not its own.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::{
    sites::{APP, Rng, ShopDeleter, acting, lease_records, operator, site_namespaces, sites_yaml},
    support::{TestNamespace, eventually, operator::Operator, proxy::Relay, s3::Seaweed},
};

/// One site: its namespace, its operator, its relay to the witness.
struct Side {
    name: &'static str,
    ns: TestNamespace,
    op: Operator,
    relay: Relay,
}

/// A lease a site held: from its takeover's write to the end of its last renewal.
#[derive(Debug)]
struct Held {
    site: String,
    epoch: u64,
    from: Timestamp,
    until: Timestamp,
}

/// Every epoch's lease, from the witness's object versions.
fn leases(s3: &Seaweed) -> Vec<Held> {
    let versions = lease_records(s3);
    let at = |v: &Value, k: &str| v[k].as_str().unwrap().parse::<Timestamp>().unwrap();
    let mut by_epoch: std::collections::BTreeMap<u64, Held> = Default::default();
    for v in &versions {
        let (epoch, site) = (v["epoch"].as_u64().unwrap(), v["site"].as_str().unwrap().to_string());
        let h = by_epoch.entry(epoch).or_insert_with(|| Held {
            site: site.clone(),
            epoch,
            from: at(v, "renewed"),
            until: at(v, "until"),
        });
        assert_eq!(h.site, site, "epoch {epoch} written for two sites: {versions:?}");
        h.from = h.from.min(at(v, "renewed"));
        h.until = h.until.max(at(v, "until"));
    }
    by_epoch.into_values().collect()
}

/// The epoch the witness holds now.
fn current_epoch(s3: &Seaweed) -> u64 {
    let body = s3.get("witness", "reprise-site-lease.json");
    serde_json::from_slice::<Value>(&body).unwrap()["epoch"]
        .as_u64()
        .unwrap()
}

async fn side(name: &'static str, ns: TestNamespace, s3: &Seaweed) -> Side {
    let relay = Relay::start(s3.endpoint().trim_start_matches("http://").to_string()).await;
    let mut op = operator(&ns);
    op.wait_ready().await;
    let yaml = sites_yaml(name, s3, "").replace(&s3.endpoint(), &format!("http://127.0.0.1:{}", relay.port));
    for y in [yaml.as_str(), APP] {
        let (ok, out) = ns.apply(y);
        assert!(ok, "{out}");
    }
    Side { name, ns, op, relay }
}

fn role_of(s: &Side) -> String {
    s.ns.json(&format!("site/{}", s.name))["status"]["role"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until one site is active and the other stands by (or is demoted);
/// returns the active one's index.
async fn settled(sides: &[Side; 2], run: u64) -> usize {
    eventually(
        &format!("run {run}: one site active, the other not"),
        Duration::from_secs(90),
        || async {
            let roles = [role_of(&sides[0]), role_of(&sides[1])];
            let standing = |r: &str| r == "Standby" || r == "Demoted";
            match (roles[0].as_str(), roles[1].as_str()) {
                ("Active", r) if standing(r) => Some(0),
                (r, "Active") if standing(r) => Some(1),
                _ => None,
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn split_brain_on_two_planes_never_two_sites_act_at_once() {
    let runs: u64 = std::env::var("REPRISE_SITE_CHAOS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut s3 = Seaweed::start();
    s3.create_bucket("witness", false);
    s3.boto("s3.put_bucket_versioning(Bucket='witness', VersioningConfiguration={'Status': 'Enabled'})")
        .unwrap();
    let (a, b) = site_namespaces();
    let mut sides = [side("paris", a, &s3).await, side("lyon", b, &s3).await];
    let start = Timestamp::now();
    let deleter = ShopDeleter::start(&[&sides[0].ns, &sides[1].ns]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("site chaos: seed {seed}");
    let mut rng = Rng(seed);
    let mut faults = vec![];
    let mut unmoved = 0;
    for run in 0..runs {
        let holder = settled(&sides, run).await;
        let (h, other) = (&sides[holder], &sides[1 - holder]);
        let secs = 2 + rng.below(14);
        let epoch = current_epoch(&s3);
        let kind = rng.below(4);
        let fault = match kind {
            0 => {
                h.op.freeze(true);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                h.op.freeze(false);
                format!("{} paused {secs}s", h.name)
            }
            1 => {
                h.relay.freeze(true);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                h.relay.freeze(false);
                format!("{} cut from the witness {secs}s", h.name)
            }
            2 => {
                other.relay.freeze(true);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                other.relay.freeze(false);
                format!("{} (standing by) cut from the witness {secs}s", other.name)
            }
            _ => {
                s3.stop();
                tokio::time::sleep(Duration::from_secs(secs)).await;
                s3.restart();
                format!("witness stopped {secs}s")
            }
        };
        if kind >= 2 {
            // Neither the standby cut off nor the witness down ever moves the lease.
            settled(&sides, run).await;
            assert_eq!(current_epoch(&s3), epoch, "run {run}: {fault} moved the lease");
            unmoved += 1;
        }
        eprintln!("site chaos run {run}: {fault}");
        faults.push(fault);
    }
    settled(&sides, runs).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    deleter.stop();

    let held = leases(&s3);
    for pair in held.windows(2) {
        assert!(
            pair[0].until < pair[1].from,
            "epoch {} ({}) lasted until {}, past epoch {} ({})'s takeover at {}",
            pair[0].epoch,
            pair[0].site,
            pair[0].until,
            pair[1].epoch,
            pair[1].site,
            pair[1].from
        );
    }
    let mut repairs = vec![];
    for s in sides.iter_mut() {
        let acts = acting(&s.ns, start, Timestamp::now());
        for w in &acts {
            let inside = held
                .iter()
                .find(|l| l.site == s.name && l.from <= w.at && w.at <= l.until);
            assert!(
                inside.is_some(),
                "{} repaired at {} outside every lease it held: {held:?}\nfaults: {faults:?}",
                s.name,
                w.at
            );
        }
        repairs.push(format!("{} by {}", acts.len(), s.name));
        assert!(s.op.exited().is_none(), "{}'s operator runs on", s.name);
    }
    eprintln!(
        "site chaos: {runs} faults ({}); {} epochs ({}); {unmoved} faults of the standby or the witness, none moved the lease; repairs {}; each inside its site's lease, none overlapping",
        faults.join("; "),
        held.len(),
        held.iter()
            .map(|l| format!("{}:{}", l.epoch, l.site))
            .collect::<Vec<_>>()
            .join(" "),
        repairs.join(", ")
    );
}
