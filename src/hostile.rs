//! Hostile values through every pure stage an object's content reaches:
//! none may panic; each answers with a value or an error. (The integration
//! suite applies hostile manifests to the API server and the operator.)

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use k8s_openapi::jiff::Timestamp;

    use crate::{
        api::{
            Database,
            common::{ComponentKind, ComponentRef, Duration},
            contract::{ActionVerb, Request, drill_tag},
        },
        components::database::{connection_secret_name, validate_spec},
        providers::{backup_store, redfish::origin},
        recovery::opening,
        runtime::{secrets, validation},
    };

    /// Strings a user or a peer might send.
    fn hostile() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            " ",
            "0",
            "-1",
            "0s",
            "1ms",
            "999999h",
            "99999999999999999999h",
            "1.0000000001s",
            "..",
            "../../etc/passwd",
            "/",
            "//",
            "\0",
            "\u{202e}",
            "é",
            "🦀",
            "%2e%2e/",
            "?$expand=*",
            "a/b/c",
            "file:///etc",
            "http://u:p@h/",
            "http://[::1",
            "*/0 * * * *",
            "0 0 31 2 *",
            "* * * * * * *",
            "61 25 32 13 8",
            "restart/",
            "/x",
            "restart/x/y",
            "Kind/",
            "/name",
            "Server/*,",
            "2026-02-30",
            "9999-12-31",
            "-0",
            "1e309",
            "NaN",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push("a".repeat(100_000));
        v.push("9".repeat(400));
        v.push("/".repeat(5000));
        v.push("1h".repeat(20));
        v
    }

    #[test]
    fn no_pure_stage_panics_on_hostile_text() {
        let root = std::path::Path::new("/var/lib/reprise/backups");
        let base = reqwest::Url::parse("https://bmc.example/redfish/v1/").unwrap();
        let since = Timestamp::from_second(1_800_000_000).unwrap();
        for s in hostile() {
            let _ = Duration::from_str(&s);
            let _ = validation::check_cron("f", &s);
            let _ = validation::check_date("f", &s);
            let _ = backup_store::confine(root, &s);
            let _ = backup_store::check_endpoint(&s);
            let _ = origin::resolve(&base, &s);
            let _ = Request::parse(&s);
            let _ = ActionVerb::parse(&s);
            let _ = drill_tag(&s, 8);
            let _ = connection_secret_name(&s, &s);
            let who = secrets::Requester {
                kind: "Server",
                name: &s,
            };
            let _ = secrets::offered(Some(&s), who);
            let _ = opening::label_value(&s);
            for kind in ComponentKind::ALL {
                let c = ComponentRef { kind, name: s.clone() };
                let n = opening::name(&c, since);
                assert!(n.len() <= 253, "an incident name fits: {}", n.len());
            }
        }
    }

    #[test]
    fn a_database_with_hostile_fields_is_judged_not_panicked_on() {
        for s in hostile() {
            let db: Database = serde_json::from_value(serde_json::json!({
                "apiVersion": "reprise.dev/v1alpha1", "kind": "Database", "metadata": {"name": "x"},
                "spec": {
                    "instance": {"external": {"host": s, "adminSecretRef": {"name": "a"}}},
                    "databases": [{"name": "shop"}],
                    "backup": {"schedule": s, "store": {"s3": {"bucket": "b", "endpoint": s, "credentialsSecretRef": {"name": "c"}}}},
                    "verify": {"tables": [{"database": s, "name": s}]},
                }
            }))
            .unwrap();
            assert!(validate_spec(&db).is_err(), "{s:?} passed");
        }
    }
}
