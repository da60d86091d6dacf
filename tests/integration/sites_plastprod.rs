//! The whole PlastProd example on two sites: paris runs it (its control
//! plane, its PostgreSQL, a Redfish emulator per hypervisor, the KubeVirt
//! stand-in), lyon stands by in a second control plane with hypervisors of
//! its own (hv-11, hv-12, another emulator, switched off) and its own
//! PostgreSQL. paris is lost (every process of the site killed); lyon
//! rebuilds the plan from the signed bundle on its own hosts.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::{
    databases::cond_is,
    sites::{BUNDLE, archived, operator, role, sites_yaml},
    support::{
        TestNamespace, eventually,
        kubevirt::StandIn,
        operator::{Operator, Options},
        plane_b,
        plastprod::{PLAN, World},
        postgres::{ADMIN, Postgres},
        redfish::{FakeSystem, Sushy},
        s3::Seaweed,
    },
};

/// lyon's hypervisors: (name, the paris Server it stands for, system id, NIC MACs).
const LYON_HOSTS: [(&str, &str, &str, [&str; 1]); 2] = [
    (
        "hv-11",
        "hv-01",
        "b1100000-0000-4000-8000-0000000000b1",
        ["52:54:00:b1:00:01"],
    ),
    (
        "hv-12",
        "hv-02",
        "b1200000-0000-4000-8000-0000000000b2",
        ["52:54:00:b2:00:01"],
    ),
];

/// Every table's rows and a checksum of their content.
fn tables(pg: &Postgres) -> String {
    pg.sql(
        "shop",
        "SELECT string_agg(t || ':' || n || ':' || h, ' ' ORDER BY t) FROM (
           SELECT 'products' t, count(*) n, md5(string_agg(p::text, ',' ORDER BY id)) h FROM products p
           UNION ALL SELECT 'customers', count(*), md5(string_agg(c::text, ',' ORDER BY id)) FROM customers c
           UNION ALL SELECT 'orders', count(*), md5(string_agg(o::text, ',' ORDER BY id)) FROM orders o
           UNION ALL SELECT 'order_lines', count(*), md5(coalesce(string_agg(l::text, ',' ORDER BY id), '')) FROM order_lines l) x",
    )
    .trim()
    .to_string()
}

/// paris: the example, its database's backups and WAL in the vault (the
/// off-site store both sites read), its Sites, the plan naming both sites.
fn paris(world: &World, s3: &Seaweed) {
    let ns = &world.ns;
    let (ok, out) = ns.apply(&sites_yaml("paris", s3, BUNDLE));
    assert!(ok, "{out}");
    let patch = |object: &str, p: Value| {
        ns.k(&["patch", object, "--type", "merge", "-p", &p.to_string()]);
    };
    patch(
        "secret/backup-vault",
        json!({"stringData": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}}),
    );
    patch(
        "database/shop-db",
        json!({"spec": {"backup": {
            "stores": [{"name": "vault", "offsite": true, "s3": {"endpoint": s3.endpoint(), "bucket": "vault", "credentialsSecretRef": {"name": "backup-vault"}}}],
            "wal": {"uploadInterval": "1s"},
        }}}),
    );
    // The example's levels are its own three: the loss of a site gets a fourth.
    let sites = json!([
        {"op": "add", "path": "/spec/levels/-", "value": {"level": 4, "name": "site", "appliesTo": ["Site"], "minWindow": "1h", "maxWindow": "4h", "responders": [{"name": "plastprod-it", "modes": ["Remote"]}]}},
        {"op": "add", "path": "/spec/sites", "value": ["paris", "lyon"]},
    ]);
    let out = ns.k(&[
        "patch",
        &format!("recoveryplan/{PLAN}"),
        "--type",
        "json",
        "-p",
        &sites.to_string(),
    ]);
    assert!(out.contains("patched"), "{out}");
}

/// lyon's cluster: the example's Secrets (its own instance's admin), its
/// own switched-off hypervisors, its Sites with the mapping hv-01 → hv-11,
/// hv-02 → hv-12 and its instance for shop-db. No plan, VM, database or
/// application: those come from the bundle.
fn lyon(b: &TestNamespace, s3: &Seaweed, pg_b: &Postgres, bmc: &Sushy, image: &str) {
    let secrets = crate::support::repo_root().join("examples/plastprod/00-secrets.yaml");
    let (ok, out) = b
        .plane
        .k_stdin(&["apply", "-n", &b.name, "-f", secrets.to_str().unwrap()], "");
    assert!(ok, "{out}");
    let patch = |object: &str, p: Value| {
        b.k(&["patch", object, "--type", "merge", "-p", &p.to_string()]);
    };
    patch(
        "secret/postgres-admin",
        json!({"stringData": {"username": ADMIN, "password": pg_b.admin_password}}),
    );
    patch(
        "secret/backup-vault",
        json!({"stringData": {"accessKeyId": s3.access_key, "secretAccessKey": s3.secret_key}}),
    );
    let mut yaml = String::new();
    let mut overrides = vec![];
    for (name, stands_for, uuid, macs) in LYON_HOSTS {
        yaml += &format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: bmc-{name}, annotations: {{reprise.dev/for: Server/{name}}}}}\nstringData: {{username: {}, password: {}}}\n\
             ---\napiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}, labels: {{plastprod.example/plan: pra}}}}\n\
             spec:\n  role: hypervisor\n  online: true\n  pollInterval: 3s\n  provisioning: {{image: \"{image}\"}}\n  bmc: {{address: \"{}\", systemId: {uuid}, credentialsSecretRef: {{name: bmc-{name}}}}}\n  network:\n    interfaces:\n      - {{name: \"{}\", macAddress: \"{}\", switch: sw-lyon-1, port: Gi1/0/1, vlan: 10}}\n",
            bmc.user,
            bmc.password,
            bmc.url(),
            macs[0],
            macs[0],
        );
        overrides.push(json!({"kind": "Server", "name": stands_for, "replacedBy": name}));
    }
    let (ok, out) = b.apply(&yaml);
    assert!(ok, "{out}");
    let (ok, out) = b.apply(&sites_yaml("lyon", s3, BUNDLE));
    assert!(ok, "{out}");
    overrides.push(json!({"kind": "Database", "name": "shop-db",
        "specPatch": {"instance": {"external": {"host": "127.0.0.1", "port": pg_b.port, "sslMode": "Disable"}}}}));
    patch("site/lyon", json!({"spec": {"overrides": overrides}}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_fails_over_to_the_standby_site_on_its_own_hosts() {
    let s3 = Seaweed::start();
    s3.create_bucket("witness", false);
    s3.create_bucket("vault", false);
    let mut world = World::start("pp2", Some("3s")).await;
    paris(&world, &s3);
    let b = TestNamespace::on(plane_b(), &world.ns.name);
    let pg_b = Postgres::start();
    let systems: Vec<FakeSystem> = LYON_HOSTS
        .iter()
        .map(|(name, _, uuid, macs)| FakeSystem {
            uuid,
            name,
            power: "Off",
            macs,
        })
        .collect();
    let lyon_bmc = Sushy::start(&systems, None);
    // The same provisioning image as paris's (the plan's Server procedure reprovisions).
    let image = world.ns.json("server/hv-01")["spec"]["provisioning"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    lyon(&b, &s3, &pg_b, &lyon_bmc, &image);
    let _lyon_kubevirt = StandIn::start(b.plane.client().await, &b.name);

    let mut op_a = Operator::start(Options {
        extra: vec!["--database-probe-seconds".into(), "2".into()],
        ..Options::namespace(&world.ns.name)
    });
    let _op_b = operator(&b);
    op_a.wait_ready().await;
    world.settle().await;
    role(&b, "lyon", "Standby", 60).await;
    let a = &world.ns;
    a.wait_for("database/shop-db", "WAL streaming", 60, |v| {
        v["status"]["wal"]["streaming"] == true
    })
    .await;
    // Orders after the base backup: only the WAL holds them.
    world.pg.sql(
        "shop",
        "INSERT INTO order_lines (order_id, product, qty) SELECT g, 1 + g % 200, g % 7 FROM generate_series(1, 3000) g",
    );
    archived(a, &world.pg).await;
    let before = tables(&world.pg);
    b.wait_for("site/lyon", "lyon's replica of shop-db", 60, |v| {
        v["status"]["replicas"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["component"] == "Database/shop-db" && r["canRebuild"] == true)
        })
    })
    .await;
    // The standby acts on nothing: its hypervisors stay off, the mapping holds.
    let site = b.json("site/lyon");
    assert!(cond_is(&site, "Ready", "True"), "{}", site["status"]);
    for (_, _, uuid, _) in LYON_HOSTS {
        assert_eq!(
            lyon_bmc.system(uuid)["PowerState"],
            "Off",
            "the standby powered a host on"
        );
    }

    // paris is lost: its operator (with its children), its PostgreSQL, its BMCs.
    op_a.kill();
    world.pg.stop();
    world.bmcs.clear();
    let lost = std::time::Instant::now();
    role(&b, "lyon", "Active", 60).await;
    let taken = lost.elapsed();
    let v = b
        .wait_for("site/lyon", "the failover completed", 300, |v| {
            !v["status"]["failover"]["completed"].is_null()
        })
        .await;
    let rebuilt = lost.elapsed();
    let f = &v["status"]["failover"];
    let waves: Vec<(&str, Vec<&str>)> = f["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let objects = w["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o.as_str().unwrap())
                .collect();
            (w["kind"].as_str().unwrap(), objects)
        })
        .collect();
    assert_eq!(
        waves,
        [
            ("RecoveryPlan", vec![PLAN]),
            ("MaintenanceWindow", vec!["hypervisor-patching-2026-12"]),
            ("Server", vec!["hv-11", "hv-12"]),
            ("VirtualMachine", vec!["vm-api", "vm-postgres", "vm-web"]),
            ("Database", vec!["shop-db"]),
            ("Application", vec!["mobile-app", "web-shop"]),
        ],
        "{f}"
    );
    assert_eq!(
        f["replaced"],
        json!(["Server/hv-01 → hv-11", "Server/hv-02 → hv-12"]),
        "{f}"
    );
    assert_eq!(f["message"], Value::Null, "{f}");
    // Rebuilt on lyon's own hosts: paris's Servers never created here, the
    // VMs placed on lyon's, running, the hosts powered on by the takeover.
    assert!(
        b.k(&["get", "servers", "-o", "name"])
            .split_whitespace()
            .eq(["server.reprise.dev/hv-11", "server.reprise.dev/hv-12"])
    );
    for (vm, host) in [("vm-web", "hv-11"), ("vm-api", "hv-11"), ("vm-postgres", "hv-12")] {
        let v = b.json(&format!("virtualmachines.reprise.dev/{vm}"));
        assert_eq!(v["spec"]["hostRef"]["name"], host, "{vm}");
        assert!(cond_is(&v, "Ready", "True"), "{vm}: {}", v["status"]);
    }
    for (_, _, uuid, _) in LYON_HOSTS {
        assert_eq!(lyon_bmc.system(uuid)["PowerState"], "On");
    }
    // Every row and its content, the WAL's included.
    let db = b.json("database/shop-db");
    assert_eq!(db["status"]["lastRestore"]["outcome"], "Verified", "{}", db["status"]);
    assert_eq!(tables(&pg_b), before, "every table, before and after");
    for app in ["web-shop", "mobile-app"] {
        b.wait_for(&format!("application/{app}"), "Ready on lyon", 60, |v| {
            cond_is(v, "Ready", "True")
        })
        .await;
    }
    // One site Incident, resolved within the site level, its measures.
    let inc = eventually("the site Incident resolved", Duration::from_secs(60), || async {
        let list: Value = serde_json::from_str(&b.k(&["get", "incidents", "-o", "json"])).unwrap();
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .find(|i| i["spec"]["component"]["kind"] == "Site" && i["status"]["phase"] == "Resolved")
    })
    .await;
    assert_eq!(inc["spec"]["level"], 4);
    assert_eq!(inc["status"]["measures"]["deadlineMet"], true, "{}", inc["status"]);
    let heartbeat: Timestamp = f["lastHeartbeat"].as_str().unwrap().parse().unwrap();
    let closed: Timestamp = inc["status"]["closedAt"].as_str().unwrap().parse().unwrap();
    let lease_end = heartbeat + k8s_openapi::jiff::SignedDuration::from_secs(8);
    eprintln!(
        "PlastProd failover: lyon active {taken:?} after paris was lost, every wave healthy after {rebuilt:?}; \
         from the lease's end to the Incident resolved {:#}; waves: {}",
        closed.duration_since(lease_end),
        f["waves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| format!("{} {}", w["kind"], w["message"]))
            .collect::<Vec<_>>()
            .join("; ")
    );
}
