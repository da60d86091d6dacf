//! The declared network against what the BMC reports.

use crate::api::server::{CablingDrift, ExpectedInterface, ObservedNic};

/// Each difference: a declared interface the BMC does not report (by name or
/// by MAC), one whose MAC differs, one whose link is down when it must be up.
pub fn compare(expected: &[ExpectedInterface], observed: &[ObservedNic]) -> Vec<CablingDrift> {
    let mut drift = vec![];
    for e in expected {
        let mac = e.mac_address.to_ascii_lowercase();
        let by_name = observed.iter().find(|n| n.name == e.name);
        let Some(nic) = by_name else {
            let elsewhere = observed.iter().find(|n| n.mac_address.as_deref() == Some(mac.as_str()));
            drift.push(CablingDrift {
                interface: e.name.clone(),
                kind: "Missing".into(),
                expected: format!("{} with MAC {mac}", e.name),
                observed: match elsewhere {
                    Some(n) => format!("MAC {mac} is on interface {}", n.name),
                    None => "no such interface".into(),
                },
            });
            continue;
        };
        let seen = nic.mac_address.clone().unwrap_or_default();
        if seen != mac {
            drift.push(CablingDrift {
                interface: e.name.clone(),
                kind: "UnexpectedMac".into(),
                expected: mac.clone(),
                observed: if seen.is_empty() {
                    "no MAC reported".into()
                } else {
                    seen
                },
            });
        }
        if e.link_required
            && let Some(link) = &nic.link_status
            && link != "LinkUp"
        {
            let place = match (&e.switch, &e.port) {
                (Some(s), Some(p)) => format!(" (cabled to {s} {p})"),
                _ => String::new(),
            };
            drift.push(CablingDrift {
                interface: e.name.clone(),
                kind: "LinkDown".into(),
                expected: format!("LinkUp{place}"),
                observed: link.clone(),
            });
        }
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(name: &str, mac: &str) -> ExpectedInterface {
        ExpectedInterface {
            name: name.into(),
            mac_address: mac.into(),
            switch: Some("sw-core-1".into()),
            port: Some("Gi1/0/1".into()),
            vlan: Some(10),
            link_required: true,
        }
    }

    fn nic(name: &str, mac: &str, link: Option<&str>) -> ObservedNic {
        ObservedNic {
            name: name.into(),
            mac_address: Some(mac.into()),
            link_status: link.map(str::to_string),
            speed_mbps: None,
        }
    }

    #[test]
    fn each_mismatch_is_named() {
        let want = [
            expected("NIC.1", "52:54:00:AA:00:01"),
            expected("NIC.2", "52:54:00:aa:00:02"),
            expected("NIC.3", "52:54:00:aa:00:03"),
            expected("NIC.4", "52:54:00:aa:00:04"),
        ];
        let seen = [
            nic("NIC.1", "52:54:00:aa:00:01", Some("LinkUp")),
            nic("NIC.2", "52:54:00:aa:00:99", Some("LinkUp")),
            nic("NIC.3", "52:54:00:aa:00:03", Some("LinkDown")),
            nic("NIC.9", "52:54:00:aa:00:04", None),
        ];
        let d = compare(&want, &seen);
        let kinds: Vec<(&str, &str)> = d.iter().map(|d| (d.interface.as_str(), d.kind.as_str())).collect();
        assert_eq!(
            kinds,
            [("NIC.2", "UnexpectedMac"), ("NIC.3", "LinkDown"), ("NIC.4", "Missing")]
        );
        assert_eq!(d[0].observed, "52:54:00:aa:00:99");
        assert!(d[1].expected.contains("sw-core-1 Gi1/0/1"));
        assert!(d[2].observed.contains("NIC.9"));
    }
}
