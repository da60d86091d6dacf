//! Servers against sushy-tools' Redfish emulator (fake driver, several
//! systems): inventory and cabling drift, power kept as desired, graceful
//! shutdown, reprovisioning from virtual media with its timeline, credentials
//! and TLS failures named, a BMC that never answers delaying only itself, and
//! a quiet steady state.

use std::{path::Path, time::Duration};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::support::{
    OPERATOR_USER, TestNamespace, audit, condition, eventually,
    operator::{Operator, Options},
    plane,
    redfish::{FakeSystem, Sushy},
    tls::{Certs, certs},
};

const A: &str = "a0000000-0000-4000-8000-00000000000a";
const B: &str = "b0000000-0000-4000-8000-00000000000b";
const C: &str = "c0000000-0000-4000-8000-00000000000c";

fn secret(name: &str, user: &str, password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, annotations: {{reprise.dev/for: \"Server/*\"}}}}\nstringData: {{username: {user}, password: \"{password}\"}}\n---\n"
    )
}

fn server(name: &str, address: &str, system: &str, creds: &str, extra: &str) -> String {
    format!(
        "apiVersion: reprise.dev/v1alpha1\nkind: Server\nmetadata: {{name: {name}}}\nspec:\n  bmc: {{address: \"{address}\", credentialsSecretRef: {{name: {creds}}}, systemId: {system}}}\n  pollInterval: 2s\n{extra}---\n"
    )
}

fn get(ns: &TestNamespace, name: &str) -> Value {
    serde_json::from_str(&ns.k(&["get", "server", name, "-o", "json"])).expect("json")
}

async fn wait_for(ns: &TestNamespace, name: &str, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    ns.wait_for(&format!("server/{name}"), what, secs, f).await
}

fn cond(v: &Value, type_: &str) -> Option<(String, String, String)> {
    condition(v, type_)
}

/// An emulator with one system, hv-a (A), powered on; HTTPS with (certificate, key).
fn hv_a(tls: Option<(&Path, &Path)>) -> Sushy {
    Sushy::start(
        &[FakeSystem {
            uuid: A,
            name: "hv-a",
            power: "On",
            macs: &["52:54:00:0a:00:01"],
        }],
        tls,
    )
}

/// Waits until reprise powered hv-a (system A) on again: its Event and the emulator's power.
async fn powered_on_again(ns: &TestNamespace, sushy: &Sushy, what: &str, secs: u64) {
    eventually(what, Duration::from_secs(secs), || async {
        let reasons = ns.k(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=hv-a",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        (reasons.contains("PoweredOn") && sushy.system(A)["PowerState"] == "On").then_some(())
    })
    .await;
}

fn operator(ns: &TestNamespace, bmc_timeout: u64) -> Operator {
    Operator::start(Options {
        extra: vec!["--bmc-timeout-seconds".into(), bmc_timeout.to_string()],
        ..Options::namespace(&ns.name)
    })
}

/// Serves `dir` over HTTP on loopback (the emulator downloads inserted media).
struct Files(std::process::Child, u16);

impl Files {
    fn serve(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(100));
        }
        Files(child, port)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn inventory_cabling_power_and_reprovisioning() {
    let sushy = Sushy::start(
        &[
            FakeSystem {
                uuid: A,
                name: "hv-a",
                power: "On",
                macs: &["52:54:00:0a:00:01", "52:54:00:0a:00:02"],
            },
            FakeSystem {
                uuid: B,
                name: "hv-b",
                power: "On",
                macs: &["52:54:00:0b:00:01"],
            },
            FakeSystem {
                uuid: C,
                name: "hv-c",
                power: "On",
                macs: &["52:54:00:0c:00:01"],
            },
        ],
        None,
    );
    let images = tempfile::tempdir().unwrap();
    std::fs::write(images.path().join("hypervisor.iso"), vec![0u8; 64 * 1024]).unwrap();
    let files = Files::serve(images.path());
    let ns = TestNamespace::new("srv-main");
    let mut op = operator(&ns, 10);
    op.wait_ready().await;
    let url = sushy.url();
    let yaml = secret("bmc", &sushy.user, &sushy.password)
        + &server(
            "hv-a",
            &url,
            A,
            "bmc",
            &format!(
                "  network:\n    interfaces:\n      - {{name: \"52:54:00:0a:00:01\", macAddress: \"52:54:00:0a:00:01\", switch: sw-core-1, port: Gi1/0/1}}\n      - {{name: \"52:54:00:0a:00:02\", macAddress: \"52:54:00:0a:00:02\"}}\n  provisioning: {{image: \"http://127.0.0.1:{}/hypervisor.iso\", ejectAfter: 3s}}\n",
                files.1
            ),
        )
        + &server(
            "hv-b",
            &url,
            B,
            "bmc",
            "  network:\n    interfaces:\n      - {name: \"52:54:00:0b:00:01\", macAddress: \"52:54:00:0b:00:99\"}\n      - {name: NIC.Slot.3-1, macAddress: \"52:54:00:0b:00:03\"}\n",
        )
        + &server("hv-c", &url, C, "bmc", "");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");

    // Inventory lands in status; the matching server is Ready.
    let out = ns.k(&["wait", "--for=condition=Ready", "server/hv-a", "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");
    let a = get(&ns, "hv-a");
    let inv = &a["status"]["inventory"];
    assert_eq!(inv["manufacturer"], "Sushy Emulator", "{inv}");
    assert_eq!(inv["nics"].as_array().unwrap().len(), 2, "{inv}");
    assert_eq!(a["status"]["powerState"], "On");
    assert_eq!(a["status"]["health"]["state"], "Healthy");

    // The server whose expected MAC differs shows the drift by name.
    let b = wait_for(&ns, "hv-b", "cabling drift", 30, |v| {
        cond(v, "InventoryMatches").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let drift = b["status"]["cablingDrift"].as_array().unwrap();
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert_eq!(drift[0]["interface"], "52:54:00:0b:00:01");
    assert_eq!(drift[0]["kind"], "UnexpectedMac");
    assert_eq!(drift[0]["observed"], "52:54:00:0b:00:01");
    assert_eq!(drift[1]["interface"], "NIC.Slot.3-1");
    assert_eq!(drift[1]["kind"], "Missing");

    // Powered off at the BMC while desired on: reprise powers it on, with an Event.
    sushy.reset(A, "ForceOff");
    powered_on_again(&ns, &sushy, "hv-a to be powered on again by reprise", 60).await;
    let lost = ns.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hv-a,reason=PoweredOn",
        "-o",
        "jsonpath={.items[0].message}",
    ]);
    assert!(lost.contains("should be on"), "{lost}");
    wait_for(&ns, "hv-a", "the health signal to be Healthy again", 30, |v| {
        v["status"]["health"]["state"] == "Healthy" && v["status"]["powerState"] == "On"
    })
    .await;

    // Desired off: a graceful shutdown.
    ns.k(&[
        "patch",
        "server",
        "hv-c",
        "--type",
        "merge",
        "-p",
        "{\"spec\":{\"online\":false}}",
    ]);
    eventually("hv-c to be shut down", Duration::from_secs(60), || async {
        (sushy.system(C)["PowerState"] == "Off").then_some(())
    })
    .await;
    let events = ns.k(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=hv-c",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("shutting it down gracefully"), "{events}");
    wait_for(&ns, "hv-c", "hv-c Ready while off", 30, |v| {
        cond(v, "Ready").is_some_and(|(s, _, _)| s == "True") && v["status"]["powerState"] == "Off"
    })
    .await;

    // Reprovision: media in, boot once from it, reset, booted, media out.
    ns.k(&["annotate", "server", "hv-a", "reprise.dev/action=reprovision/p1"]);
    let a = wait_for(&ns, "hv-a", "the reprovisioning to finish", 90, |v| {
        v["status"]["provisioning"]["phase"]
            .as_str()
            .is_some_and(|p| p != "InProgress")
    })
    .await;
    let p = &a["status"]["provisioning"];
    assert_eq!(p["phase"], "Succeeded", "{p}");
    let steps = crate::support::each(&p["steps"], "step");
    assert_eq!(
        steps,
        ["InsertMedia", "SetBootOverride", "Reset", "Booted", "EjectMedia"]
    );
    for s in p["steps"].as_array().unwrap() {
        assert!(s["duration"].as_str().unwrap().ends_with('s'), "{s}");
    }
    let sys = sushy.system(A);
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Cd", "{}", sys["Boot"]);
    // (The fake driver keeps the target and reports every override as Continuous.)
    let cd = sushy.get(&format!("/redfish/v1/Systems/{A}/VirtualMedia/Cd"));
    assert_eq!(cd["Inserted"], false, "ejected: {cd}");
    assert_eq!(a["status"]["lastAction"]["outcome"], "Done");

    // Steady state: polls every 2 s, nothing written.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let writes = audit::writes(plane().audit(), OPERATOR_USER, Some(&ns.name), from, Timestamp::now());
    assert!(writes.is_empty(), "steady state wrote: {writes:?}");
    assert!(
        !op.logs().contains(&sushy.password),
        "the BMC password appears in the log"
    );
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_and_tls_failures_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let Certs { ca, cert, key } = certs(dir.path(), "bmc");
    let wrong_ca = certs(dir.path(), "other").ca;
    let sushy = hv_a(Some((&cert, &key)));
    let ns = TestNamespace::new("srv-tls");
    let mut op = operator(&ns, 10);
    op.wait_ready().await;
    let ca_secret = |name: &str, pem: &Path| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, annotations: {{reprise.dev/for: \"Server/*\"}}}}\nstringData:\n  ca.crt: |\n{}---\n",
            indent(&std::fs::read_to_string(pem).unwrap())
        )
    };
    let url = sushy.url();
    let yaml = secret("bmc", &sushy.user, &sushy.password)
        + &secret("bmc-wrong", &sushy.user, "not-the-password-42")
        + &ca_secret("right-ca", &ca)
        + &ca_secret("wrong-ca", &wrong_ca)
        + &server("good", &url, A, "bmc", "")
            .replace("systemId", "caBundleSecretRef: {name: right-ca, key: ca.crt}, systemId")
        + &server("untrusted", &url, A, "bmc", "")
            .replace("systemId", "caBundleSecretRef: {name: wrong-ca, key: ca.crt}, systemId")
        + &server("badpass", &url, A, "bmc-wrong", "").replace("systemId", "insecureSkipVerify: true, systemId");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    let out = ns.k(&["wait", "--for=condition=Ready", "server/good", "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");
    let v = wait_for(&ns, "untrusted", "a TLS failure", 30, |v| {
        cond(v, "Reachable").is_some()
    })
    .await;
    let (s, reason, message) = cond(&v, "Reachable").unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("False", "TLSFailed"), "{message}");
    let v = wait_for(&ns, "badpass", "an authentication failure", 30, |v| {
        cond(v, "Reachable").is_some()
    })
    .await;
    let (s, reason, message) = cond(&v, "Reachable").unwrap();
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "AuthenticationFailed"),
        "{message}"
    );
    assert!(message.contains("401"), "{message}");
    assert_eq!(v["status"]["health"]["state"], "Unreachable");
    assert!(!op.logs().contains("not-the-password-42"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bmc_that_never_answers_delays_only_its_own_server() {
    let sushy = Sushy::start(
        &[
            FakeSystem {
                uuid: A,
                name: "a",
                power: "On",
                macs: &["52:54:00:0a:00:01"],
            },
            FakeSystem {
                uuid: B,
                name: "b",
                power: "On",
                macs: &["52:54:00:0b:00:01"],
            },
        ],
        None,
    );
    // Accepts connections, never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let ns = TestNamespace::new("srv-hang");
    // A long BMC timeout, so the others must be done long before it ends.
    let mut op = operator(&ns, 40);
    op.wait_ready().await;
    let yaml = secret("bmc", &sushy.user, &sushy.password)
        + &server("hung", &format!("http://127.0.0.1:{silent_port}"), A, "bmc", "")
        + &server("a", &sushy.url(), A, "bmc", "")
        + &server("b", &sushy.url(), B, "bmc", "");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    for name in ["a", "b"] {
        let out = ns.k(&[
            "wait",
            "--for=condition=Ready",
            &format!("server/{name}"),
            "--timeout=35s",
        ]);
        assert!(out.contains("condition met"), "{out}");
    }
    // The other servers were polled (several times) while the hung one still waits on its BMC.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let hung = get(&ns, "hung");
    assert!(
        cond(&hung, "Reachable").is_none(),
        "the hung BMC's poll should still be waiting: {}",
        hung["status"]
    );
    let v = wait_for(&ns, "hung", "the hung BMC to time out", 90, |v| {
        cond(v, "Reachable").is_some()
    })
    .await;
    let (s, reason, message) = cond(&v, "Reachable").unwrap();
    assert_eq!((s.as_str(), reason.as_str()), ("False", "Timeout"), "{message}");
    hold.abort();
}

/// A BMC that sends events (the stand-in front before sushy-tools: see
/// support/bmc_events.rs): a power loss is acted on within seconds though
/// the Server is polled every 10 minutes. (With `--bmc-events=false` the same
/// loss waits for the poll: this test then fails.)
#[tokio::test(flavor = "multi_thread")]
async fn a_power_loss_the_bmc_sends_as_an_event_is_acted_on_at_once() {
    let sushy = hv_a(None);
    let front = crate::support::bmc_events::EventFront::start(&sushy).await;
    let ns = TestNamespace::new("srv-events");
    let mut op = operator(&ns, 10);
    op.wait_ready().await;
    let yaml = secret("bmc", &sushy.user, &sushy.password)
        + &server("hv-a", &front.url, A, "bmc", "").replace("pollInterval: 2s", "pollInterval: 10m");
    let (ok, out) = ns.apply(&yaml);
    assert!(ok, "{out}");
    let out = ns.k(&["wait", "--for=condition=Ready", "server/hv-a", "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");
    eventually("reprise to read the BMC's events", Duration::from_secs(20), || async {
        (front.streams() == 1).then_some(())
    })
    .await;

    let lost = std::time::Instant::now();
    sushy.reset(A, "ForceOff");
    powered_on_again(
        &ns,
        &sushy,
        "hv-a powered on again by reprise, long before its next poll",
        30,
    )
    .await;
    println!(
        "power lost -> powered on again by reprise: {:.1}s; events sent by the BMC: {}",
        lost.elapsed().as_secs_f64(),
        front.sent()
    );
    assert!(front.sent() >= 1, "the BMC sent the loss as an event");
    assert_eq!(front.streams(), 1, "one stream, kept: {}", op.logs());
}
