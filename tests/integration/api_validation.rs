//! Invalid resources are rejected by the real API server (OpenAPI schema and
//! CEL rules), each with a message that names the field.

use kube::{
    Api, ResourceExt,
    api::{DynamicObject, PostParams},
    core::ApiResource,
};
use serde_json::{Value, json};

use crate::support::{TestNamespace, plane};

fn meta(kind: &str) -> Value {
    json!({"apiVersion": "reprise.dev/v1alpha1", "kind": kind, "metadata": {"name": "x"}})
}

fn with_spec(kind: &str, spec: Value) -> Value {
    let mut v = meta(kind);
    v["spec"] = spec;
    v
}

fn server() -> Value {
    with_spec(
        "Server",
        json!({
            "bmc": {"address": "https://10.0.10.11", "credentialsSecretRef": {"name": "bmc"}},
            "network": {"interfaces": [{"name": "nic1", "macAddress": "52:54:00:00:00:01"}]},
            "provisioning": {"image": "http://deploy.example/os.iso"}
        }),
    )
}

fn vm() -> Value {
    with_spec(
        "VirtualMachine",
        json!({"cpu": 2, "memory": "2Gi", "disks": [{"name": "root", "containerDisk": {"image": "debian:12"}}]}),
    )
}

fn database() -> Value {
    with_spec(
        "Database",
        json!({
            "instance": {"external": {"host": "db.example", "adminSecretRef": {"name": "admin"}}},
            "databases": [{"name": "shop"}],
            "roles": [{"name": "app", "passwordSecretRef": {"name": "accounts", "key": "app"},
                       "grants": [{"database": "shop", "privileges": ["Connect"]}]}],
            "backup": {"schedule": "0 * * * *", "store": {"local": {"path": "/backups"}}}
        }),
    )
}

fn application() -> Value {
    with_spec(
        "Application",
        json!({"type": "Web", "version": "1.0.0", "image": "registry.example/app:{version}"}),
    )
}

fn plan() -> Value {
    with_spec(
        "RecoveryPlan",
        json!({
            "responders": [{"name": "it", "type": "Internal", "phone": "+33 1 00 00 00 00"},
                           {"name": "vendor", "type": "Vendor", "phone": "+33 2 00 00 00 00", "contract": {"until": "2027-06-30"}}],
            "levels": [{"level": 1, "appliesTo": ["Application", "Database"], "minWindow": "15m", "maxWindow": "30m",
                        "responders": [{"name": "it"}]}],
            "procedures": [{"kind": "Application", "steps": [{"name": "restart", "action": "Restart"}]}]
        }),
    )
}

fn window() -> Value {
    with_spec(
        "MaintenanceWindow",
        json!({"selector": {}, "start": "2026-12-12T20:00:00Z", "end": "2026-12-12T23:00:00Z", "reason": "patching"}),
    )
}

fn incident() -> Value {
    with_spec(
        "Incident",
        json!({"planRef": {"name": "p"}, "component": {"kind": "Application", "name": "shop"}, "level": 1, "cause": "Deployment deleted"}),
    )
}

/// Sets the value at a JSON pointer (its parent must exist).
fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match target {
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = value,
        Value::Object(o) => {
            o.insert(key.to_string(), value);
        }
        _ => panic!("{parent} is not a container"),
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("object")
        .remove(key);
}

struct Case {
    name: &'static str,
    manifest: Value,
    /// Strings the API server's message must contain: the field, and what is wrong.
    expect: &'static [&'static str],
}

fn case(
    name: &'static str,
    base: fn() -> Value,
    edit: impl FnOnce(&mut Value),
    expect: &'static [&'static str],
) -> Case {
    let mut manifest = base();
    edit(&mut manifest);
    Case { name, manifest, expect }
}

fn cases() -> Vec<Case> {
    vec![
        // Server
        case(
            "bmc address is not a URL",
            server,
            |v| set(v, "/spec/bmc/address", json!("ftp://bmc")),
            &["spec.bmc.address", "should match"],
        ),
        case(
            "bmc is required",
            server,
            |v| remove(v, "/spec/bmc"),
            &["spec.bmc", "Required value"],
        ),
        case(
            "MAC address malformed",
            server,
            |v| set(v, "/spec/network/interfaces/0/macAddress", json!("52:54:00:00:01")),
            &["spec.network.interfaces[0].macAddress", "should match"],
        ),
        case(
            "MAC address twice",
            server,
            |v| {
                set(
                    v,
                    "/spec/network/interfaces",
                    json!([{"name": "a", "macAddress": "52:54:00:00:00:01"}, {"name": "b", "macAddress": "52:54:00:00:00:01"}]),
                )
            },
            &["spec.network.interfaces", "each macAddress must be unique"],
        ),
        case(
            "interface name twice",
            server,
            |v| {
                set(
                    v,
                    "/spec/network/interfaces",
                    json!([{"name": "a", "macAddress": "52:54:00:00:00:01"}, {"name": "a", "macAddress": "52:54:00:00:00:02"}]),
                )
            },
            &["spec.network.interfaces[1]", "Duplicate value"],
        ),
        case(
            "VLAN out of range",
            server,
            |v| set(v, "/spec/network/interfaces/0/vlan", json!(5000)),
            &["spec.network.interfaces[0].vlan", "less than or equal to 4094"],
        ),
        case(
            "CA bundle and insecure together",
            server,
            |v| {
                set(v, "/spec/bmc/insecureSkipVerify", json!(true));
                set(v, "/spec/bmc/caBundleSecretRef", json!({"name": "ca", "key": "ca.crt"}));
            },
            &["spec.bmc", "set caBundleSecretRef or insecureSkipVerify, not both"],
        ),
        case(
            "poll interval not a duration",
            server,
            |v| set(v, "/spec/pollInterval", json!("5 minutes")),
            &["spec.pollInterval", "should match"],
        ),
        case(
            "provisioning image not a URL",
            server,
            |v| set(v, "/spec/provisioning/image", json!("os.iso")),
            &["spec.provisioning.image", "should match"],
        ),
        // VirtualMachine
        case(
            "no CPU",
            vm,
            |v| set(v, "/spec/cpu", json!(0)),
            &["spec.cpu", "greater than or equal to 1"],
        ),
        case(
            "no disk",
            vm,
            |v| set(v, "/spec/disks", json!([])),
            &["spec.disks", "at least 1 items"],
        ),
        case(
            "disk with two sources",
            vm,
            |v| set(v, "/spec/disks/0/persistentVolumeClaim", json!({"name": "pvc"})),
            &[
                "spec.disks[0]",
                "set exactly one of containerDisk, persistentVolumeClaim, dataVolume",
            ],
        ),
        case(
            "unknown run state",
            vm,
            |v| set(v, "/spec/runState", json!("Paused")),
            &["spec.runState", "Unsupported value"],
        ),
        case(
            "software name with shell",
            vm,
            |v| set(v, "/spec/software", json!([{"name": "nginx; rm -rf /"}])),
            &["spec.software[0].name", "should match"],
        ),
        // Database
        case(
            "hostile role name",
            database,
            |v| set(v, "/spec/roles/0/name", json!("robert\"; DROP TABLE orders;--")),
            &["spec.roles[0].name", "should match"],
        ),
        case(
            "login role without password",
            database,
            |v| remove(v, "/spec/roles/0/passwordSecretRef"),
            &["spec.roles[0]", "a login role needs passwordSecretRef"],
        ),
        case(
            "port out of range",
            database,
            |v| set(v, "/spec/instance/external/port", json!(70000)),
            &["spec.instance.external.port", "less than or equal to 65535"],
        ),
        case(
            "instance without a kind",
            database,
            |v| set(v, "/spec/instance", json!({})),
            &["spec.instance", "set external"],
        ),
        case(
            "unknown sslMode",
            database,
            |v| set(v, "/spec/instance/external/sslMode", json!("Sometimes")),
            &["spec.instance.external.sslMode", "Unsupported value"],
        ),
        case(
            "backup store in two places",
            database,
            |v| {
                set(
                    v,
                    "/spec/backup/store/s3",
                    json!({"bucket": "bkp", "credentialsSecretRef": {"name": "s3"}}),
                )
            },
            &["spec.backup.store", "set exactly one of local, s3"],
        ),
        case(
            "Connect on tables",
            database,
            |v| set(v, "/spec/roles/0/grants/0/tables", json!(["orders"])),
            &[
                "spec.roles[0].grants[0]",
                "only Select, Insert, Update, Delete or All apply to tables",
            ],
        ),
        case(
            "relative backup path",
            database,
            |v| set(v, "/spec/backup/store/local/path", json!("backups")),
            &["spec.backup.store.local.path", "should match"],
        ),
        // Application
        case(
            "image without {version}",
            application,
            |v| set(v, "/spec/image", json!("registry.example/app:latest")),
            &["spec.image", "must contain {version}"],
        ),
        case(
            "negative replicas",
            application,
            |v| set(v, "/spec/replicas", json!(-1)),
            &["spec.replicas", "greater than or equal to 0"],
        ),
        case(
            "artifact checksum malformed",
            application,
            |v| {
                set(
                    v,
                    "/spec/artifacts",
                    json!([{"name": "apk", "url": "https://b.example/a.apk", "sha256": "abc"}]),
                )
            },
            &["spec.artifacts[0].sha256", "should match"],
        ),
        case(
            "unknown application type",
            application,
            |v| set(v, "/spec/type", json!("Desktop")),
            &["spec.type", "Unsupported value"],
        ),
        case(
            "dependency on a Server",
            application,
            |v| set(v, "/spec/dependsOn", json!([{"kind": "Server", "name": "hv-01"}])),
            &["spec.dependsOn[0].kind", "Unsupported value"],
        ),
        case(
            "version with spaces",
            application,
            |v| set(v, "/spec/version", json!("1.0 beta")),
            &["spec.version", "should match"],
        ),
        // RecoveryPlan
        case(
            "window minimum not below maximum",
            plan,
            |v| set(v, "/spec/levels/0/maxWindow", json!("10m")),
            &["spec.levels[0]", "minWindow must be shorter than maxWindow"],
        ),
        case(
            "kind in two levels",
            plan,
            |v| {
                set(
                    v,
                    "/spec/levels",
                    json!([{"level": 1, "appliesTo": ["Application"], "minWindow": "15m"}, {"level": 2, "appliesTo": ["Application"], "minWindow": "30m"}]),
                )
            },
            &["spec.levels", "each kind may appear in the appliesTo of one level only"],
        ),
        case(
            "sites without a site level",
            plan,
            |v| {
                set(v, "/spec/sites", json!(["paris", "lyon"]));
                set(
                    v,
                    "/spec/levels",
                    json!([{"level": 1, "appliesTo": ["Application"], "minWindow": "15m"}]),
                )
            },
            &["spec.levels: a plan that names sites needs a level for Site"],
        ),
        case(
            "level responder unknown",
            plan,
            |v| set(v, "/spec/levels/0/responders", json!([{"name": "nobody"}])),
            &[
                "spec",
                "spec.levels[].responders[].name must name one of spec.responders",
            ],
        ),
        case(
            "step responder unknown",
            plan,
            |v| {
                set(
                    v,
                    "/spec/procedures/0/steps/0",
                    json!({"name": "call", "action": "Notify", "responder": "nobody"}),
                )
            },
            &[
                "spec",
                "spec.procedures[].steps[].responder must name one of spec.responders",
            ],
        ),
        case(
            "contract on an internal team",
            plan,
            |v| set(v, "/spec/responders/0/contract", json!({"until": "2027-01-01"})),
            &["spec.responders[0]", "contract applies to a Vendor responder only"],
        ),
        case(
            "action the kind does not support",
            plan,
            |v| set(v, "/spec/procedures/0/steps/0/action", json!("PowerCycle")),
            &["spec.procedures[0]", "must be one this procedure's kind supports"],
        ),
        case(
            "step name twice",
            plan,
            |v| {
                set(
                    v,
                    "/spec/procedures/0/steps",
                    json!([{"name": "s", "action": "Restart"}, {"name": "s", "action": "Recreate"}]),
                )
            },
            &["spec.procedures[0].steps[1]", "Duplicate value"],
        ),
        case(
            "level number out of range",
            plan,
            |v| set(v, "/spec/levels/0/level", json!(7)),
            &["spec.levels[0].level", "less than or equal to 5"],
        ),
        case(
            "contract end not a date",
            plan,
            |v| set(v, "/spec/responders/1/contract/until", json!("next year")),
            &["spec.responders[1].contract.until", "should match"],
        ),
        case(
            "unknown action",
            plan,
            |v| set(v, "/spec/procedures/0/steps/0/action", json!("Reboot")),
            &["spec.procedures[0].steps[0].action", "Unsupported value"],
        ),
        // MaintenanceWindow
        case(
            "window ends before it starts",
            window,
            |v| set(v, "/spec/end", json!("2026-12-12T19:00:00Z")),
            &["spec", "spec.end must be after spec.start"],
        ),
        case(
            "unknown mode",
            window,
            |v| set(v, "/spec/mode", json!("Silent")),
            &["spec.mode", "Unsupported value"],
        ),
        case(
            "no reason",
            window,
            |v| remove(v, "/spec/reason"),
            &["spec.reason", "Required value"],
        ),
        case(
            "start not a time",
            window,
            |v| set(v, "/spec/start", json!("tonight")),
            &["spec.start", "date-time"],
        ),
        // Incident
        case(
            "level zero",
            incident,
            |v| set(v, "/spec/level", json!(0)),
            &["spec.level", "greater than or equal to 1"],
        ),
        case(
            "component of an unknown kind",
            incident,
            |v| set(v, "/spec/component/kind", json!("Printer")),
            &["spec.component.kind", "Unsupported value"],
        ),
        // Hostile values that once went through and then did nothing, or too much.
        case(
            "poll in a tight loop",
            server,
            |v| set(v, "/spec/pollInterval", json!("1ms")),
            &["spec.pollInterval", "at least 1s"],
        ),
        case(
            "poll every zero seconds",
            server,
            |v| set(v, "/spec/pollInterval", json!("0s")),
            &["spec.pollInterval", "at least 1s"],
        ),
        case(
            "a duration past any use",
            server,
            |v| set(v, "/spec/shutdownTimeout", json!("999999h")),
            &["spec.shutdownTimeout", "at most 87600h"],
        ),
        case(
            "a duration too long to parse",
            server,
            |v| set(v, "/spec/pollInterval", json!("99999999999h")),
            &["spec.pollInterval", "should match"],
        ),
        case(
            "credentials in the BMC address",
            server,
            |v| set(v, "/spec/bmc/address", json!("http://admin:hunter2@10.0.0.1")),
            &["spec.bmc.address", "should match"],
        ),
        case(
            "a Secret reference that is no Secret name",
            server,
            |v| set(v, "/spec/bmc/credentialsSecretRef/name", json!("../bmc")),
            &["spec.bmc.credentialsSecretRef.name", "should match"],
        ),
        case(
            "systemId escaping its collection",
            server,
            |v| set(v, "/spec/bmc/systemId", json!("../Managers?$expand=*")),
            &["spec.bmc.systemId", "should match"],
        ),
        case(
            "artifacts checked in a loop",
            application,
            |v| set(v, "/spec/artifactCheckInterval", json!("0s")),
            &["spec.artifactCheckInterval", "at least 1s"],
        ),
        case(
            "an Application name no Service can take",
            application,
            |v| set(v, "/metadata/name", json!("a".repeat(64))),
            &["metadata.name", "Deployment and a Service"],
        ),
        case(
            "an Application name with a dot",
            application,
            |v| set(v, "/metadata/name", json!("shop.v2")),
            &["metadata.name", "Deployment and a Service"],
        ),
        case(
            "the same dependency twice",
            application,
            |v| {
                set(
                    v,
                    "/spec/dependsOn",
                    json!([{"kind": "Database", "name": "db"}, {"kind": "Database", "name": "db"}]),
                )
            },
            &["spec.dependsOn", "twice"],
        ),
        case(
            "a VM name KubeVirt cannot take",
            vm,
            |v| set(v, "/metadata/name", json!("vm.web")),
            &["metadata.name", "KubeVirt"],
        ),
        case(
            "a data volume read from a file",
            vm,
            |v| {
                set(
                    v,
                    "/spec/disks/0",
                    json!({"name": "root", "dataVolume": {"size": "10Gi", "imageUrl": "file:///etc/shadow"}}),
                )
            },
            &["spec.disks[0].dataVolume.imageUrl", "should match"],
        ),
        case(
            "the admin role",
            database,
            |v| set(v, "/spec/roles/0/name", json!("postgres")),
            &["spec.roles[0].name", "the server's own roles"],
        ),
        case(
            "a reserved role",
            database,
            |v| set(v, "/spec/roles/0/name", json!("pg_monitor")),
            &["spec.roles[0].name", "the server's own roles"],
        ),
        case(
            "the maintenance database",
            database,
            |v| set(v, "/spec/databases/0/name", json!("postgres")),
            &["spec.databases[0].name", "the server's own databases"],
        ),
        case(
            "a template database",
            database,
            |v| set(v, "/spec/databases/0/name", json!("template1")),
            &["spec.databases[0].name", "the server's own databases"],
        ),
        case(
            "a backup path climbing out",
            database,
            |v| set(v, "/spec/backup/store/local/path", json!("/backups/../../etc")),
            &["spec.backup.store.local.path", ". or .."],
        ),
        case(
            "an S3 endpoint on the filesystem",
            database,
            |v| {
                set(
                    v,
                    "/spec/backup/store",
                    json!({"s3": {"bucket": "bkp", "endpoint": "file:///etc", "credentialsSecretRef": {"name": "s3"}}}),
                )
            },
            &["spec.backup.store.s3.endpoint", "http or https"],
        ),
        case(
            "store and stores both",
            database,
            |v| {
                set(
                    v,
                    "/spec/backup/stores",
                    json!([{"name": "a", "local": {"path": "/b"}}]),
                )
            },
            &["spec.backup", "set stores (or the older single store), one of the two"],
        ),
        case(
            "two stores of one name",
            database,
            |v| {
                v["spec"]["backup"].as_object_mut().unwrap().remove("store");
                set(
                    v,
                    "/spec/backup/stores",
                    json!([{"name": "a", "local": {"path": "/b"}}, {"name": "a", "local": {"path": "/c"}}]),
                )
            },
            &["spec.backup.stores[1]", "Duplicate value"],
        ),
        case(
            "a locked local store",
            database,
            |v| {
                v["spec"]["backup"].as_object_mut().unwrap().remove("store");
                set(
                    v,
                    "/spec/backup/stores",
                    json!([{"name": "a", "local": {"path": "/b"}, "objectLock": {"mode": "Compliance", "days": 7}}]),
                )
            },
            &["spec.backup.stores[0]", "only an s3 store can lock its objects"],
        ),
        case(
            "a lock of no days",
            database,
            |v| {
                v["spec"]["backup"].as_object_mut().unwrap().remove("store");
                set(
                    v,
                    "/spec/backup/stores",
                    json!([{"name": "a", "s3": {"bucket": "bkp", "credentialsSecretRef": {"name": "s3"}}, "objectLock": {"mode": "Compliance", "days": 0}}]),
                )
            },
            &[
                "spec.backup.stores[0].objectLock.days",
                "should be greater than or equal to 1",
            ],
        ),
        case(
            "a store named with a space",
            database,
            |v| {
                v["spec"]["backup"].as_object_mut().unwrap().remove("store");
                set(
                    v,
                    "/spec/backup/stores",
                    json!([{"name": "off site", "local": {"path": "/b"}}]),
                )
            },
            &["spec.backup.stores[0].name", "should match"],
        ),
        case(
            "connect timeout of zero",
            database,
            |v| set(v, "/spec/instance/external/connectTimeout", json!("0s")),
            &["spec.instance.external.connectTimeout", "at least 1s"],
        ),
        case(
            "retention of a millisecond",
            database,
            |v| set(v, "/spec/backup/retention", json!({"count": 2, "maxAge": "1ms"})),
            &["spec.backup.retention.maxAge", "at least 1m"],
        ),
        case(
            "incidents kept for no time",
            plan,
            |v| set(v, "/spec/incidentRetention", json!("0s")),
            &["spec.incidentRetention", "at least 1s"],
        ),
        case(
            "negative memory",
            vm,
            |v| set(v, "/spec/memory", json!("-1Gi")),
            &["spec.memory", "positive quantity"],
        ),
        case(
            "memory that is no quantity",
            vm,
            |v| set(v, "/spec/memory", json!("lots")),
            &["spec.memory", "positive quantity"],
        ),
        case(
            "a window until 9999",
            window,
            |v| set(v, "/spec/end", json!("9999-12-31T00:00:00Z")),
            &["spec", "at most 366 days"],
        ),
    ]
}

fn api_for(client: kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "reprise.dev".into(),
        version: "v1alpha1".into(),
        api_version: "reprise.dev/v1alpha1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    Api::namespaced_with(client, ns, &ar)
}

#[tokio::test]
async fn the_api_server_rejects_each_invalid_manifest_naming_the_field() {
    let ns = TestNamespace::new("apival");
    let client = plane().client().await;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Each base manifest is valid: the cases below fail for their one change only.
    for base in [server(), vm(), database(), application(), plan(), window(), incident()] {
        let kind = base["kind"].as_str().expect("kind").to_string();
        let obj: DynamicObject = serde_json::from_value(base).expect("object");
        api_for(client.clone(), &ns.name, &kind)
            .create(&dry, &obj)
            .await
            .unwrap_or_else(|e| panic!("the valid {kind} is rejected: {e}"));
    }
    let cases = cases();
    assert!(cases.len() >= 30, "at least 30 rules are exercised");
    let mut failures = vec![];
    for c in &cases {
        let kind = c.manifest["kind"].as_str().expect("kind").to_string();
        let obj: DynamicObject = serde_json::from_value(c.manifest.clone()).expect("object");
        match api_for(client.clone(), &ns.name, &kind).create(&dry, &obj).await {
            Ok(_) => failures.push(format!("{kind} / {}: accepted", c.name)),
            Err(kube::Error::Api(e)) => {
                let missing: Vec<_> = c.expect.iter().filter(|s| !e.message.contains(*s)).collect();
                if e.code != 422 || !missing.is_empty() {
                    failures.push(format!(
                        "{kind} / {}: code {}, message lacks {missing:?}: {}",
                        c.name, e.code, e.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{kind} / {}: {e}", c.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    println!("{} invalid manifests rejected, each naming its field", cases.len());
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let ns = TestNamespace::new("immutable");
    let client = plane().client().await;
    let api = api_for(client, &ns.name, "Incident");
    let obj: DynamicObject = serde_json::from_value(incident()).expect("object");
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("create the incident");
    let mut changed = created.clone();
    changed.data["spec"]["level"] = json!(2);
    let err = api
        .replace(&created.name_any(), &PostParams::default(), &changed)
        .await
        .expect_err("the spec changed");
    let kube::Error::Api(e) = err else {
        panic!("not an API error: {err}")
    };
    assert!(
        e.message.contains("spec") && e.message.contains("spec is immutable"),
        "{}",
        e.message
    );
}
