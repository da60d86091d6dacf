//! The chart's alert rules and Grafana dashboard, checked with the tools
//! their users run: `promtool` (Debian's prometheus package) tests every rule
//! firing and not firing on synthetic series; `hack/dashcheck` validates the
//! dashboard against Grafana's schema. Each rule's runbook is a section of
//! the README. (That every query names a metric the operator exports is
//! checked against a running operator's /metrics in the integration tests.)

use std::{path::Path, process::Command};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (hack/test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const RULES: &str = "charts/reprise/alerts/reprise.rules.yaml";

#[test]
fn every_rule_fires_and_stays_quiet_as_its_tests_say() {
    run(Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join(RULES)));
    run(Command::new("promtool")
        .args(["test", "rules", "reprise.rules.test.yaml"])
        .current_dir(root().join("tests/alerts")));
}

/// The alert names of the rules file.
fn alerts() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(RULES)).unwrap();
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_rule_is_tested_firing_and_not_firing() {
    let tests = std::fs::read_to_string(root().join("tests/alerts/reprise.rules.test.yaml")).unwrap();
    for alert in alerts() {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .skip(1)
            .filter(|c| c.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no case where it stays quiet"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert}: no case where it fires"
        );
    }
}

#[test]
fn every_runbook_is_a_section_of_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rules = std::fs::read_to_string(root().join(RULES)).unwrap();
    for alert in alerts() {
        let anchor = alert.to_lowercase();
        assert!(
            rules.contains(&format!("runbook_url: \"README.md#{anchor}\"")),
            "{alert}: its runbook annotation"
        );
        // GitHub's anchor of a heading `#### RepriseX` is `reprisex`.
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == alert),
            "{alert}: no README heading for its runbook"
        );
    }
}

#[test]
fn the_dashboard_is_valid_for_grafana() {
    let exprs =
        run(Command::new(root().join("hack/dashcheck")).arg(root().join("charts/reprise/dashboards/reprise.json")));
    assert!(exprs.lines().count() >= 10, "{exprs}");
}
