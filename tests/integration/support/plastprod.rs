//! The PlastProd example (examples/plastprod) as a user applies it, with
//! every peer it names brought to loopback: a real PostgreSQL for shop-db,
//! one sushy-tools Redfish emulator per Server, a webhook receiver for the
//! responders, a file server for the mobile build and the provisioning image,
//! a backup directory, and the KubeVirt stand-in. The example's placeholder
//! addresses (`*.plastprod.example`, 10.0.10.x) are patched out before the
//! operator starts, so nothing ever dials them.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::{Value, json};

use super::{
    TestNamespace, eventually,
    kubevirt::StandIn,
    plane,
    postgres::{ADMIN, Postgres},
    redfish::{FakeSystem, Sushy},
    repo_root,
    webhooks::{self, Received},
};

/// The Servers of the example: name, BMC system id, NIC MACs.
pub const SERVERS: [(&str, &str, [&str; 3]); 2] = [
    (
        "hv-01",
        "a1000000-0000-4000-8000-0000000000a1",
        ["52:54:00:a1:00:01", "52:54:00:a1:00:02", "52:54:00:a1:00:03"],
    ),
    (
        "hv-02",
        "a2000000-0000-4000-8000-0000000000a2",
        ["52:54:00:a2:00:01", "52:54:00:a2:00:02", "52:54:00:a2:00:03"],
    ),
];

pub const PLAN: &str = "pra-plastprod";

pub struct World {
    pub ns: TestNamespace,
    pub pg: Postgres,
    /// Per Server of the example, its emulator.
    pub bmcs: Vec<(String, Sushy)>,
    /// The event-sending fronts before them, when the world was asked for them.
    pub fronts: Vec<super::bmc_events::EventFront>,
    pub hooks: Received,
    pub backups: tempfile::TempDir,
    _stand_in: StandIn,
}

/// A file server on loopback: the mobile build and the provisioning image.
async fn files(apk: Arc<Vec<u8>>) -> String {
    use axum::{Router, routing::get};
    let app = Router::new()
        .route("/plastprod.apk", get(move || async move { apk.as_ref().clone() }))
        .route("/hypervisor.iso", get(|| async { vec![0u8; 4096] }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

impl World {
    /// Applies the example to a new namespace, patched to the loopback peers.
    /// `server_poll`: a shorter BMC poll interval than the example's 60s, for
    /// tests. The operator is the caller's to start.
    pub async fn start(prefix: &str, server_poll: Option<&str>) -> World {
        Self::start_with(prefix, server_poll, false).await
    }

    /// As `start`; `bmc_events`: each Server's BMC sends events (the
    /// stand-in front of support/bmc_events.rs before its emulator).
    pub async fn start_with(prefix: &str, server_poll: Option<&str>, bmc_events: bool) -> World {
        use sha2::{Digest, Sha256};
        let ns = TestNamespace::new(prefix);
        let pg = Postgres::start();
        let bmcs: Vec<(String, Sushy)> = SERVERS
            .iter()
            .map(|(name, uuid, macs)| {
                let sushy = Sushy::start(
                    &[FakeSystem {
                        uuid,
                        name,
                        power: "On",
                        macs,
                    }],
                    None,
                );
                (name.to_string(), sushy)
            })
            .collect();
        let mut fronts = vec![];
        if bmc_events {
            for (_, sushy) in &bmcs {
                fronts.push(super::bmc_events::EventFront::start(sushy).await);
            }
        }
        let (hook, hooks) = webhooks::receiver().await;
        let apk: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sha: String = Sha256::digest(&apk).iter().map(|b| format!("{b:02x}")).collect();
        let files = files(Arc::new(apk)).await;
        let backups = tempfile::tempdir().unwrap();

        let examples: PathBuf = repo_root().join("examples/plastprod");
        let (ok, out) = plane().k_stdin(&["apply", "-n", &ns.name, "-f", examples.to_str().unwrap()], "");
        assert!(ok, "{out}");
        let patch = |object: &str, p: Value| {
            ns.k(&["patch", object, "--type", "merge", "-p", &p.to_string()]);
        };
        patch(
            "secret/postgres-admin",
            json!({"stringData": {"username": ADMIN, "password": pg.admin_password}}),
        );
        patch(
            "database/shop-db",
            json!({"spec": {
                "instance": {"external": {"host": "127.0.0.1", "port": pg.port, "sslMode": "Disable"}},
                // The site's store only (the off-site vault, its lock,
                // encryption and WAL are tested in offsite.rs).
                "backup": {"stores": [{"name": "site", "local": {"path": backups.path()}}], "wal": null},
            }}),
        );
        for (i, ((name, uuid, macs), (_, sushy))) in SERVERS.iter().zip(&bmcs).enumerate() {
            let address = fronts.get(i).map(|f| f.url.clone()).unwrap_or_else(|| sushy.url());
            patch(
                &format!("secret/bmc-{name}"),
                json!({"stringData": {"username": sushy.user, "password": sushy.password}}),
            );
            // The emulator names each NIC by its MAC.
            let server = ns.json(&format!("server/{name}"));
            let interfaces: Vec<Value> = server["spec"]["network"]["interfaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    i["name"] = i["macAddress"].clone();
                    i
                })
                .collect();
            assert_eq!(interfaces.len(), macs.len());
            let mut spec = json!({
                "bmc": {"address": address, "insecureSkipVerify": false, "systemId": uuid},
                "network": {"interfaces": interfaces},
                "provisioning": {"image": format!("{files}/hypervisor.iso")},
            });
            if let Some(poll) = server_poll {
                spec["pollInterval"] = json!(poll);
            }
            patch(&format!("server/{name}"), json!({ "spec": spec }));
        }
        patch(
            "application/mobile-app",
            json!({"spec": {"artifacts": [{"name": "android-apk", "url": format!("{files}/plastprod.apk"), "sha256": sha}]}}),
        );
        let plan = ns.json(&format!("recoveryplan/{PLAN}"));
        let responders: Vec<Value> = plan["spec"]["responders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let name = r["name"].as_str().unwrap().to_string();
                r["webhook"]["url"] = json!(format!("{hook}/{name}"));
                r
            })
            .collect();
        patch(
            &format!("recoveryplan/{PLAN}"),
            json!({"spec": {"responders": responders}}),
        );
        let stand_in = StandIn::start(plane().client().await, &ns.name);
        World {
            ns,
            pg,
            bmcs,
            fronts,
            hooks,
            backups,
            _stand_in: stand_in,
        }
    }

    /// With the operator running: waits until every object is Ready (hv-02's
    /// cabling drift aside), creates the shop's tables as its owner would,
    /// and takes a first backup and snapshot of everything that has backups.
    pub async fn settle(&self) {
        let ns = &self.ns;
        for o in [
            "database/shop-db",
            "application/web-shop",
            "application/mobile-app",
            "server/hv-01",
            "server/hv-02",
            "virtualmachines.reprise.dev/vm-web",
            "virtualmachines.reprise.dev/vm-api",
            "virtualmachines.reprise.dev/vm-postgres",
        ] {
            ns.k(&["wait", "--for=condition=Ready", o, "--timeout=120s"]);
        }
        self.pg.sql(
            "shop",
            "CREATE TABLE products (id serial PRIMARY KEY, name text, price numeric(10,2));
             CREATE TABLE customers (id serial PRIMARY KEY, name text);
             CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers, placed timestamptz DEFAULT now());
             CREATE TABLE order_lines (id serial PRIMARY KEY, order_id int REFERENCES orders, product int REFERENCES products, qty int);
             INSERT INTO products (name, price) SELECT 'product ' || g, g FROM generate_series(1, 200) g;
             INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 100) g;
             INSERT INTO orders (customer) SELECT 1 + g % 100 FROM generate_series(1, 5000) g;
             ALTER TABLE products OWNER TO shop_admin; ALTER TABLE customers OWNER TO shop_admin;
             ALTER TABLE orders OWNER TO shop_admin; ALTER TABLE order_lines OWNER TO shop_admin;",
        );
        ns.k(&["annotate", "database/shop-db", "reprise.dev/backup-now=settle"]);
        for vm in ["vm-web", "vm-api", "vm-postgres"] {
            ns.k(&[
                "annotate",
                &format!("virtualmachines.reprise.dev/{vm}"),
                "reprise.dev/backup-now=settle",
            ]);
        }
        eventually("the plan Ready", Duration::from_secs(120), || async {
            let plan = ns.json(&format!("recoveryplan/{PLAN}"));
            let ready = super::condition(&plan, "Ready").is_some_and(|c| c.0 == "True");
            let grants = ns.json("database/shop-db")["status"]["pendingGrants"]
                .as_array()
                .is_none_or(|g| g.is_empty());
            (ready && grants).then_some(())
        })
        .await;
    }

    /// The component's incidents.
    pub fn incidents(&self, kind: &str, name: &str) -> Vec<Value> {
        let list: Value = serde_json::from_str(&self.ns.k(&[
            "get",
            "incidents",
            "-o",
            "json",
            "-l",
            &format!("reprise.dev/component-kind={kind},reprise.dev/component={name}"),
        ]))
        .unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn bmc(&self, server: &str) -> &Sushy {
        &self.bmcs.iter().find(|(n, _)| n == server).unwrap().1
    }
}
