//! A BMC's answers are untrusted input. Against BMCs that misbehave (the fake
//! in support/fake_bmc.rs) reprise never sends a request — credentials
//! included — anywhere but the BMC's own origin under /redfish/, reads
//! bounded bodies and collections, ends slow conversations at their deadline
//! without holding up the other servers, backs off when the BMC refuses, keeps
//! what a BMC does give when one part fails, and records a reprovisioning's
//! boot only on evidence of a reboot. Against the DMTF's public service trees
//! (served by sushy-tools' `sushy-static`) it reads the inventory the trees hold.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::{
    TestNamespace, condition, eventually,
    fake_bmc::{self, Behaviour, Elsewhere, Events, FakeBmc, server_yaml},
    operator::{Operator, Options},
};

fn operator(ns: &TestNamespace, extra: &[&str]) -> Operator {
    Operator::start(Options {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::namespace(&ns.name)
    })
}

/// Waits until the Server has been polled (its Reachable condition is set) and `f` holds.
async fn polled(ns: &TestNamespace, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    ns.wait_for(&format!("server/{name}"), what, 60, |v| {
        condition(v, "Reachable").is_some() && f(v)
    })
    .await
}

fn errors(v: &Value) -> String {
    v["status"]["inventory"]["errors"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_leaves_the_bmc_origin_or_its_redfish_tree() {
    let elsewhere = Elsewhere::start().await;
    let other = elsewhere.base.clone();
    let other_authority = other.trim_start_matches("http:");
    let cases = [
        (
            "absolute",
            Behaviour {
                nics_link: Some(format!("{other}/redfish/v1/Systems/1/EthernetInterfaces")),
                ..Default::default()
            },
        ),
        (
            "protocol-relative",
            Behaviour {
                nics_link: Some(format!("{other_authority}/redfish/v1/Systems/1/EthernetInterfaces")),
                ..Default::default()
            },
        ),
        (
            "dotdot",
            Behaviour {
                nics_link: Some("/redfish/v1/../../secret/EthernetInterfaces".into()),
                ..Default::default()
            },
        ),
        (
            "encoded",
            Behaviour {
                nics_link: Some("/redfish/v1/%2e%2e/%2E%2e/secret".into()),
                ..Default::default()
            },
        ),
        (
            "session",
            Behaviour {
                sessions: Some(Some(format!("{other}/redfish/v1/SessionService/Sessions/1"))),
                ..Default::default()
            },
        ),
        (
            "redirect",
            Behaviour {
                redirect_systems: Some(format!("{other}/redfish/v1/Systems")),
                ..Default::default()
            },
        ),
        (
            "target",
            Behaviour {
                reset_target: Some(format!("{other}/redfish/v1/Systems/1/Actions/ComputerSystem.Reset")),
                power: Some("Off".into()),
                ..Default::default()
            },
        ),
    ];
    let mut bmcs = vec![];
    let mut yaml = String::new();
    for (name, b) in cases {
        let bmc = FakeBmc::start(b).await;
        yaml += &server_yaml(name, &bmc.url, "  pollInterval: 2s\n");
        bmcs.push((name, bmc));
    }
    let ns = TestNamespace::new("bmc-origin");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");

    for name in ["absolute", "protocol-relative", "dotdot", "encoded"] {
        let v = polled(&ns, name, "the NIC link refused", |v| errors(v).contains("refused")).await;
        assert_eq!(condition(&v, "Reachable").unwrap().0, "True", "{name}: {}", v["status"]);
        assert!(
            v["status"]["inventory"]["nics"].as_array().is_none_or(|n| n.is_empty()),
            "{name}: {}",
            v["status"]
        );
        assert_eq!(v["status"]["inventory"]["model"], "FB-1", "trimmed: {}", v["status"]);
    }
    let v = polled(&ns, "redirect", "the redirect refused", |v| {
        condition(v, "Reachable").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = condition(&v, "Reachable").unwrap();
    assert_eq!(reason, "LinkRefused", "{message}");
    assert!(message.contains("redirect"), "{message}");
    let v = polled(&ns, "session", "a poll with a session", |v| {
        condition(v, "Reachable").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(v["status"]["inventory"]["serial"], "FAKE-0001");
    polled(&ns, "target", "the reset target refused", |v| {
        v["status"]["powerRequest"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("refused"))
    })
    .await;

    // Two more rounds of polls, then: nothing reached the other host; nothing
    // outside /redfish/ reached the BMCs; no secret in the operator's log.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        elsewhere.heard().is_empty(),
        "requests reached another host: {:?}",
        fake_bmc::by_path(&elsewhere.heard())
    );
    for (name, bmc) in &bmcs {
        let seen = bmc.seen();
        assert!(seen.len() > 3, "{name} was polled: {:?}", fake_bmc::by_path(&seen));
        let outside: Vec<_> = seen.iter().filter(|s| !s.path.starts_with("/redfish/")).collect();
        assert!(outside.is_empty(), "{name}: requests outside /redfish/: {outside:?}");
    }
    let logs = op.logs();
    for secret in [fake_bmc::PASSWORD, "fake-session-token-77"] {
        assert!(!logs.contains(secret), "the operator's log holds {secret}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_and_endless_bodies_and_huge_collections_are_read_within_bounds() {
    let many: Vec<String> = (0..10_000)
        .map(|i| format!("52:54:{:02x}:{:02x}:{:02x}:01", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let huge = FakeBmc::start(Behaviour {
        huge_nic: Some((1, 50 << 20)),
        ..Default::default()
    })
    .await;
    let endless = FakeBmc::start(Behaviour {
        endless_nic: Some(0),
        ..Default::default()
    })
    .await;
    let crowded = FakeBmc::start(Behaviour {
        nics: Some(many),
        ..Default::default()
    })
    .await;
    let ns = TestNamespace::new("bmc-bounds");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let yaml = server_yaml("huge", &huge.url, "  pollInterval: 2s\n")
        + &server_yaml("endless", &endless.url, "  pollInterval: 2s\n")
        + &server_yaml("crowded", &crowded.url, "  pollInterval: 2s\n");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");

    for name in ["huge", "endless"] {
        let v = polled(&ns, name, "the body refused", |v| errors(v).contains("larger than")).await;
        assert_eq!(condition(&v, "Reachable").unwrap().0, "True", "{}", v["status"]);
        assert_eq!(
            v["status"]["inventory"]["nics"].as_array().unwrap().len(),
            1,
            "{}",
            v["status"]
        );
    }
    let v = polled(&ns, "crowded", "the NICs read up to the bound", |v| {
        errors(v).contains("more than 64 members")
    })
    .await;
    assert_eq!(v["status"]["inventory"]["nics"].as_array().unwrap().len(), 64);
    // A few more polls: each costs at most the bound's NIC reads.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let polls = crowded.count("GET", "/redfish/v1/Systems/1") - crowded.count("GET", "/redfish/v1/Systems/1/");
    let nic_reads = crowded.count("GET", "/redfish/v1/Systems/1/EthernetInterfaces/");
    println!("10,000-member collection: {polls} polls, {nic_reads} NIC reads");
    assert!(polls >= 3, "{polls} polls");
    assert!(nic_reads <= polls * 64, "{nic_reads} NIC reads in {polls} polls");
    let (rss, peak) = op.rss_kib();
    println!("operator RSS {} MiB, peak {} MiB", rss / 1024, peak / 1024);
    assert!(peak < 100 * 1024, "the operator's peak RSS is {} MiB", peak / 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_resets_back_off_and_bad_members_spoil_nothing() {
    let refusing = FakeBmc::start(Behaviour {
        power: Some("Off".into()),
        refuse_reset: true,
        ..Default::default()
    })
    .await;
    let stuck = FakeBmc::start(Behaviour {
        power: Some("Off".into()),
        power_stuck: true,
        ..Default::default()
    })
    .await;
    let partial = FakeBmc::start(Behaviour {
        nics: Some((1..=5).map(|i| format!("52:54:00:fb:00:0{i}")).collect()),
        missing_nic: Some(1),
        chassis_null: true,
        page_size: Some(2),
        ..Default::default()
    })
    .await;
    let ns = TestNamespace::new("bmc-refused");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let yaml = server_yaml("refusing", &refusing.url, "  pollInterval: 2s\n")
        + &server_yaml("stuck", &stuck.url, "  pollInterval: 2s\n")
        + &server_yaml("partial", &partial.url, "  pollInterval: 2s\n");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    let start = Instant::now();

    // One member fails, the chassis link is null, the collection is paged:
    // every other NIC is kept and the failing one is named.
    let v = polled(&ns, "partial", "the partial inventory", |v| errors(v).contains("NIC 1")).await;
    let nics = crate::support::each(&v["status"]["inventory"]["nics"], "macAddress");
    assert_eq!(
        nics,
        [
            "52:54:00:fb:00:01",
            "52:54:00:fb:00:03",
            "52:54:00:fb:00:04",
            "52:54:00:fb:00:05"
        ],
        "{}",
        v["status"]
    );
    assert_eq!(condition(&v, "Reachable").unwrap().0, "True");
    assert_eq!(v["status"]["health"]["state"], "Healthy");

    // 45 s of a BMC that refuses every reset, and of one whose power never follows.
    let left = Duration::from_secs(45).saturating_sub(start.elapsed());
    tokio::time::sleep(left).await;
    let refused = refusing.count("POST", "/redfish/v1/Systems/1/Actions");
    let stuck_asks = stuck.count("POST", "/redfish/v1/Systems/1/Actions");
    println!("in 45 s: {refused} resets refused, {stuck_asks} resets that never took effect");
    assert!((2..=5).contains(&refused), "{refused} reset attempts in 45 s");
    assert_eq!(stuck_asks, 1, "a reset that was accepted is waited on, not repeated");
    let v = ns.json("server/refusing");
    let req = &v["status"]["powerRequest"];
    assert!(
        req["refused"].as_str().unwrap().contains("ResourceInUse"),
        "the BMC's ExtendedInfo is kept: {req}"
    );
    assert_eq!(v["status"]["health"]["state"], "PowerLost");
    let events: Value = serde_json::from_str(&ns.k(&[
        "get",
        "events.events.k8s.io",
        "-o",
        "json",
        "--field-selector",
        "regarding.name=refusing,reason=PowerRefused",
    ]))
    .unwrap();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one Event for one refusal repeated: {events}");
    assert_eq!(
        items[0]["series"]["count"].as_u64().unwrap_or(1),
        refused as u64,
        "{}",
        items[0]
    );
}

/// Serves any path with 200 (the provisioning image).
async fn image_server() -> String {
    let app = axum::Router::new().fallback(|| async { "an installer image" });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reprovisioning_boots_only_on_evidence_and_checks_its_image() {
    let images = image_server().await;
    let stuck = FakeBmc::start(Behaviour {
        power_stuck: true,
        ..Default::default()
    })
    .await;
    let unreachable = FakeBmc::start(Behaviour::default()).await;
    let closed = crate::support::free_port();
    let ns = TestNamespace::new("bmc-reprov");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let yaml = server_yaml(
        "stuck",
        &stuck.url,
        &format!("  pollInterval: 2s\n  provisioning: {{image: \"{images}/image.iso\", bootTimeout: 4s}}\n"),
    ) + &server_yaml(
        "unreachable",
        &unreachable.url,
        &format!("  pollInterval: 2s\n  provisioning: {{image: \"http://127.0.0.1:{closed}/image.iso\"}}\n"),
    );
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    for name in ["stuck", "unreachable"] {
        polled(&ns, name, "a first poll", |v| {
            condition(v, "Ready").is_some_and(|c| c.0 == "True")
        })
        .await;
        ns.k(&[
            "annotate",
            &format!("server/{name}"),
            "reprise.dev/action=reprovision/r1",
        ]);
    }
    // The reset was accepted, the power never went off: no boot is recorded.
    let v = polled(&ns, "stuck", "the provisioning to end", |v| {
        v["status"]["provisioning"]["phase"]
            .as_str()
            .is_some_and(|p| p != "InProgress")
    })
    .await;
    let p = &v["status"]["provisioning"];
    assert_eq!(p["phase"], "TimedOut", "{p}");
    let last = p["steps"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["step"].as_str(), last["outcome"].as_str()),
        (Some("Booted"), Some("TimedOut")),
        "{p}"
    );
    assert!(
        last["message"].as_str().unwrap().contains("no evidence of a reboot"),
        "{p}"
    );
    // An image nobody serves is not inserted.
    let v = polled(&ns, "unreachable", "the provisioning to fail", |v| {
        v["status"]["provisioning"]["phase"] == "Failed"
    })
    .await;
    let p = &v["status"]["provisioning"];
    let first = &p["steps"][0];
    assert_eq!(first["step"], "InsertMedia");
    assert!(first["message"].as_str().unwrap().contains("not reachable"), "{p}");
    assert_eq!(
        unreachable.count("POST", "/redfish/v1/Systems/1/VirtualMedia"),
        0,
        "nothing inserted"
    );
    assert_eq!(v["status"]["lastAction"]["outcome"], "Failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_bmcs_delay_only_their_own_servers() {
    const HEALTHY: usize = 30;
    const SLOW: usize = 9;
    let mut healthy = vec![];
    let mut slow = vec![];
    let mut yaml = String::new();
    for i in 0..HEALTHY {
        let b = FakeBmc::start(Behaviour::default()).await;
        yaml += &server_yaml(&format!("ok-{i}"), &b.url, "  pollInterval: 5s\n");
        healthy.push(b);
    }
    for i in 0..SLOW {
        let b = FakeBmc::start(Behaviour {
            delay: Some(Duration::from_secs(8)),
            ..Default::default()
        })
        .await;
        yaml += &server_yaml(&format!("slow-{i}"), &b.url, "  pollInterval: 5s\n");
        slow.push(b);
    }
    let ns = TestNamespace::new("bmc-slow");
    // Each call may take 10 s, a whole conversation 30 s; 8 conversations at once.
    let mut op = operator(&ns, &["--bmc-timeout-seconds", "10", "--bmc-concurrency", "8"]);
    op.wait_ready().await;
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    // Once the slow ones have run out of time once, measure a minute.
    eventually("every slow BMC to time out once", Duration::from_secs(120), || async {
        let timed_out = (0..SLOW)
            .filter(|i| condition(&ns.json(&format!("server/slow-{i}")), "Reachable").is_some_and(|c| c.1 == "Timeout"))
            .count();
        (timed_out == SLOW).then_some(())
    })
    .await;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let to = Instant::now();
    let mut worst_gap = Duration::ZERO;
    let mut fewest = usize::MAX;
    for b in &healthy {
        let mut polls: Vec<Instant> = b
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path == "/redfish/v1/Systems/1" && s.at >= from && s.at <= to)
            .map(|s| s.at)
            .collect();
        polls.sort();
        fewest = fewest.min(polls.len());
        let mut last = from;
        for p in polls.iter().chain([&to]) {
            worst_gap = worst_gap.max(p.duration_since(last));
            last = *p;
        }
    }
    println!(
        "{HEALTHY} healthy BMCs (5 s poll) beside {SLOW} answering in 8 s per call: fewest polls in 60 s {fewest}, worst gap {:.1} s",
        worst_gap.as_secs_f64()
    );
    assert!(fewest >= 9, "a healthy server was polled {fewest} times in 60 s");
    assert!(
        worst_gap <= Duration::from_secs(11),
        "a healthy server waited {worst_gap:?} between polls"
    );
}

/// `sushy-static` serving one of the DMTF's public mockups.
struct Static(Child, u16);

impl Static {
    fn serve(tree: &Path) -> Self {
        let port = crate::support::free_port();
        let bin = crate::support::redfish::venv().join("bin/sushy-static");
        let child = Command::new(bin)
            .arg("-m")
            .arg(tree)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sushy-static");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sushy-static did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Static(child, port)
    }
}

impl Drop for Static {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mockups() -> PathBuf {
    crate::support::repo_root().join("../shared/redfish-mockups/dmtf")
}

/// A resource of a mockup tree, read from its file.
fn read(tree: &Path, link: &str) -> Value {
    let rel = link.trim_start_matches("/redfish/v1").trim_matches('/');
    let file = tree.join(rel).join("index.json");
    serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))).unwrap()
}

fn members(tree: &Path, link: &str) -> Vec<String> {
    read(tree, link)["Members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["@odata.id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What reprise should read from `system` of `tree`, read independently from its files.
fn expected(tree: &Path, system: &str) -> Value {
    let s = read(tree, system);
    let trim = |v: &Value| v.as_str().map(|x| x.trim().to_string());
    let mut macs: Vec<String> = s["EthernetInterfaces"]["@odata.id"]
        .as_str()
        .map(|l| members(tree, l))
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let n = read(tree, l);
            n["MACAddress"]
                .as_str()
                .or(n["PermanentMACAddress"].as_str())
                .map(|m| m.trim().to_ascii_lowercase())
                .unwrap_or_else(|| "null".into())
        })
        .collect();
    macs.sort();
    let adapters: usize = s["Links"]["Chassis"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["@odata.id"].as_str())
        .map(|c| {
            read(tree, c)["NetworkAdapters"]["@odata.id"]
                .as_str()
                .map(|a| members(tree, a).len())
                .unwrap_or(0)
        })
        .sum();
    serde_json::json!({
        "manufacturer": trim(&s["Manufacturer"]),
        "model": trim(&s["Model"]),
        "serial": trim(&s["SerialNumber"]),
        "cpus": s["ProcessorSummary"]["Count"],
        "memoryGiB": s["MemorySummary"]["TotalSystemMemoryGiB"].as_f64(),
        "health": s["Status"]["HealthRollup"].as_str().or(s["Status"]["Health"].as_str()),
        "power": s["PowerState"],
        "macs": macs,
        "adapters": adapters,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dmtf_public_trees_read_as_their_files_say() {
    let root = mockups();
    assert!(root.is_dir(), "the DMTF mockups are in ../shared: {}", root.display());
    let ns = TestNamespace::new("bmc-dmtf");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let mut servers = vec![];
    let mut yaml = String::new();
    let mut statics = vec![];
    for tree in ["public-rackmount1", "public-tower", "public-bladed"] {
        let dir = root.join(tree);
        let serve = Static::serve(&dir);
        let url = format!("http://127.0.0.1:{}", serve.1);
        let systems = members(&dir, "/redfish/v1/Systems");
        // A bladed enclosure manages several systems: name the one wanted.
        let picks: Vec<&String> = if systems.len() > 1 {
            systems.iter().take(2).collect()
        } else {
            vec![&systems[0]]
        };
        for (i, sys) in picks.iter().enumerate() {
            let name = format!("{}-{i}", tree.trim_start_matches("public-"));
            let id = sys.trim_end_matches('/').rsplit('/').next().unwrap();
            let mut doc = server_yaml(&name, &url, "");
            if systems.len() > 1 {
                doc = doc.replace(
                    &format!("credentialsSecretRef: {{name: {name}-bmc}}}}"),
                    &format!("credentialsSecretRef: {{name: {name}-bmc}}, systemId: \"{id}\"}}"),
                );
            }
            yaml += &doc;
            servers.push((name, dir.clone(), sys.to_string()));
        }
        statics.push(serve);
    }
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    for (name, tree, system) in &servers {
        let want = expected(tree, system);
        let v = polled(&ns, name, "the inventory", |v| v["status"]["inventory"].is_object()).await;
        let st = &v["status"];
        assert_eq!(condition(&v, "Reachable").unwrap().0, "True", "{name}: {st}");
        let inv = &st["inventory"];
        let mut macs = crate::support::each(&inv["nics"], "macAddress");
        macs.sort();
        let got = serde_json::json!({
            "manufacturer": inv["manufacturer"],
            "model": inv["model"],
            "serial": inv["serial"],
            "cpus": inv["cpus"],
            "memoryGiB": inv["memoryGib"].as_f64(),
            "health": st["bmcHealth"],
            "power": st["powerState"],
            "macs": macs,
            "adapters": inv["networkAdapters"].as_array().map_or(0, |a| a.len()),
        });
        assert_eq!(got, want, "{name} ({system}): inventory {inv}");
        println!("{name}: {got}");
    }
    assert!(!op.logs().contains(fake_bmc::PASSWORD));
}

/// A BMC's event stream is untrusted like its answers: a stream address on
/// another host is never dialled, a line that never ends is cut at the bound
/// (and the stream opened again only after a growing wait), and a flood of
/// events makes at most one look a second.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_event_streams_are_bounded_and_never_followed_elsewhere() {
    let elsewhere = Elsewhere::start().await;
    let with = |e: Events| Behaviour {
        events: Some(e),
        ..Default::default()
    };
    let away = FakeBmc::start(with(Events::Elsewhere(format!(
        "{}/redfish/v1/EventService/SSE",
        elsewhere.base
    ))))
    .await;
    let endless = FakeBmc::start(with(Events::EndlessLine)).await;
    let flood = FakeBmc::start(with(Events::Flood)).await;
    let ns = TestNamespace::new("bmc-events");
    let mut op = operator(&ns, &[]);
    op.wait_ready().await;
    let slow = "  pollInterval: 10m\n";
    let yaml = server_yaml("away", &away.url, slow)
        + &server_yaml("endless", &endless.url, slow)
        + &server_yaml("flood", &flood.url, slow);
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    for name in ["away", "endless", "flood"] {
        polled(&ns, name, "Ready", |v| {
            condition(v, "Ready").is_some_and(|c| c.0 == "True")
        })
        .await;
    }
    let looks = |b: &FakeBmc| b.count("GET", "/redfish/v1/Systems/1") - b.count("GET", "/redfish/v1/Systems/1/");
    let (flood_before, started) = (looks(&flood), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let flood_looks = looks(&flood) - flood_before;
    let secs = started.elapsed().as_secs_f64();
    let streams = endless.count("GET", "/redfish/v1/EventService/SSE");
    println!(
        "in {secs:.1}s: {flood_looks} looks at the flooding BMC's system; the endless stream opened {streams} times"
    );
    assert!(elsewhere.heard().is_empty(), "{:?}", elsewhere.heard());
    assert!(
        flood_looks >= 3,
        "the flood's events were heard (a look each second at most): {flood_looks}"
    );
    assert!(
        flood_looks as f64 <= secs + 2.0,
        "{flood_looks} looks in {secs:.1}s: events wake a Server once a second at most"
    );
    assert!(
        (2..=6).contains(&streams),
        "the endless stream was cut and opened again after a growing wait: {streams} opens"
    );
    for name in ["away", "endless", "flood"] {
        let v = ns.json(&format!("server/{name}"));
        assert_eq!(condition(&v, "Ready").unwrap().0, "True", "{name}: {}", v["status"]);
    }
    assert!(op.exited().is_none(), "the operator is up: {}", op.logs());
}
