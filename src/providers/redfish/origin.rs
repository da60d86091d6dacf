//! Where a BMC's answers may send reprise: nowhere but the BMC itself.
//!
//! A BMC's links (`@odata.id`, action `target`s, `Members@odata.nextLink`,
//! the session's `Location`, redirects) are untrusted input, and every request
//! reprise sends to a BMC carries credentials. A link is followed only when,
//! resolved against the service's base URL, it has the BMC's own scheme, host
//! and port, no user information, and a path that stays under `/redfish/`
//! once percent-decoded (no `.` or `..` segment, no encoded `/` or `\`).
//! Anything else is refused with the reason, never dialled.

use reqwest::Url;

/// Why a link was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest link reprise follows.
const MAX_LINK: usize = 2048;

/// Whether `url` has the scheme, host and port of `base`.
pub fn same_origin(base: &Url, url: &Url) -> bool {
    base.scheme() == url.scheme()
        && base.host_str().map(str::to_ascii_lowercase) == url.host_str().map(str::to_ascii_lowercase)
        && base.port_or_known_default() == url.port_or_known_default()
}

/// Resolves `link` (as the BMC wrote it) against the service's `base` URL,
/// or says why it may not be followed.
pub fn resolve(base: &Url, link: &str) -> Result<Url, Refused> {
    let shown: String = link.chars().take(200).collect();
    if link.len() > MAX_LINK {
        return Err(Refused(format!("link {shown:?}… is longer than {MAX_LINK} bytes")));
    }
    if link.chars().any(|c| c.is_control() || c == '\\') {
        return Err(Refused(format!(
            "link {shown:?} holds a control character or a backslash"
        )));
    }
    let url = base
        .join(link)
        .map_err(|e| Refused(format!("link {shown:?} is not a URL: {e}")))?;
    check(base, &url).map_err(|why| Refused(format!("link {shown:?} refused: {why}")))?;
    Ok(url)
}

/// Checks an already resolved URL (a redirect's target, a session's Location).
pub fn check(base: &Url, url: &Url) -> Result<(), String> {
    if !same_origin(base, url) {
        return Err(format!(
            "it leads to {}://{}, not to the BMC ({}://{})",
            url.scheme(),
            authority(url),
            base.scheme(),
            authority(base)
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it carries user information".into());
    }
    let raw = url.path();
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || decoded.contains('\\') || decoded.contains('\0') {
        return Err("its path holds an encoded separator".into());
    }
    if decoded.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("its path climbs out with . or ..".into());
    }
    if !decoded.starts_with("/redfish/") && decoded != "/redfish" {
        return Err(format!("its path {decoded:?} is outside /redfish/"));
    }
    Ok(())
}

fn authority(u: &Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or_default()),
        None => u.host_str().unwrap_or_default().to_string(),
    }
}

/// A BMC address as it may be shown (in conditions, Events, logs): without
/// any user information it carries.
pub fn redact(address: &str) -> String {
    match Url::parse(address) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            format!("{} (credentials removed)", u.as_str().trim_end_matches('/'))
        }
        Ok(u) => u.as_str().trim_end_matches('/').to_string(),
        Err(_) => address.split('@').next_back().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://10.0.10.11:8443").unwrap()
    }

    #[test]
    fn links_of_the_bmc_itself_are_followed() {
        let ok = |l: &str| resolve(&base(), l).map(|u| u.to_string());
        assert_eq!(
            ok("/redfish/v1/Systems/1").unwrap(),
            "https://10.0.10.11:8443/redfish/v1/Systems/1"
        );
        assert_eq!(
            ok("https://10.0.10.11:8443/redfish/v1/Chassis").unwrap(),
            "https://10.0.10.11:8443/redfish/v1/Chassis"
        );
        assert_eq!(
            ok("/redfish/v1/Systems?$skip=50").unwrap(),
            "https://10.0.10.11:8443/redfish/v1/Systems?$skip=50"
        );
        assert!(ok("/redfish/v1/Systems/a%20b").is_ok());
    }

    #[test]
    fn other_hosts_are_refused() {
        for l in [
            "http://10.0.10.11:8443/redfish/v1/",
            "https://other/redfish/v1/",
            "//other/redfish/v1/Systems",
            "https://10.0.10.11:9999/redfish/v1/",
            "https://admin:pw@10.0.10.11:8443/redfish/v1/",
            "https://10.0.10.11.evil:8443/redfish/v1/",
        ] {
            let e = resolve(&base(), l).unwrap_err();
            assert!(e.0.contains("refused"), "{l}: {e}");
        }
    }

    #[test]
    fn paths_that_escape_the_service_are_refused() {
        for l in [
            "/redfish/v1/../../etc/passwd",
            "/redfish/v1/%2e%2e/%2E%2E/etc/passwd",
            "/redfish/v1/..%2f..%2fetc",
            "/redfish/v1/%2e%2e%2f%2e%2e%2fetc",
            "/etc/passwd",
            "/redfishx/v1",
            "../../admin",
            "/redfish/v1/a\\..\\..\\b",
            "/redfish/v1/%5c..%5c..",
        ] {
            assert!(resolve(&base(), l).is_err(), "{l} was followed");
        }
    }

    #[test]
    fn addresses_are_shown_without_credentials() {
        assert_eq!(
            redact("http://admin:hunter2@127.0.0.1:8000"),
            "http://127.0.0.1:8000 (credentials removed)"
        );
        assert_eq!(redact("https://10.0.10.11/"), "https://10.0.10.11");
        assert!(!redact("not a url admin:hunter2@x").contains("hunter2"));
    }
}
