//! How a site differs from the one that published the bundle: its
//! overrides. A spec patch is merged into the object this site rebuilds; a
//! replacement (`replacedBy`, e.g. Server hv-01 → hv-11) means the object
//! is not rebuilt here at all: this site's own stands for it, and every
//! reference to it in the objects rebuilt here names that one. Pure.

use kube::ResourceExt;
use serde_json::Value;

use super::bundle;
use crate::api::site::Site;

/// This site's own object that stands for the bundle's `kind`/`name`, if any.
pub fn replacement<'a>(site: &'a Site, kind: &str, name: &str) -> Option<&'a str> {
    site.spec
        .overrides
        .iter()
        .find(|x| x.kind == kind && x.name == name)
        .and_then(|x| x.replaced_by.as_deref())
}

/// A bundle object as this site would create it: references to replaced
/// objects renamed, then its spec patches merged in (a patch has the last
/// word).
pub fn with_overrides(site: &Site, o: &Value) -> Value {
    let (kind, name) = (
        o["kind"].as_str().unwrap_or_default(),
        o["metadata"]["name"].as_str().unwrap_or_default(),
    );
    let mut body = o.clone();
    rename_references(site, &mut body["spec"]);
    for over in site.spec.overrides.iter().filter(|x| x.kind == kind && x.name == name) {
        if !over.spec_patch.is_null() {
            bundle::merge(&mut body["spec"], &over.spec_patch);
        }
    }
    body
}

/// The references a spec can hold to another component: a VM's `hostRef`
/// (a Server) and an Application's `dependsOn` entries.
fn rename_references(site: &Site, spec: &mut Value) {
    if let Some(host) = spec["hostRef"]["name"].as_str()
        && let Some(r) = replacement(site, "Server", host)
    {
        spec["hostRef"]["name"] = r.into();
    }
    if let Some(deps) = spec.get_mut("dependsOn").and_then(Value::as_array_mut) {
        for d in deps {
            let (kind, name) = (
                d["kind"].as_str().unwrap_or_default(),
                d["name"].as_str().unwrap_or_default(),
            );
            if let Some(r) = replacement(site, kind, name) {
                d["name"] = r.into();
            }
        }
    }
}

/// What is wrong with the site's overrides, naming the field: a
/// replacement this namespace does not hold (`exists(kind, name)`), or two
/// overrides replacing one object. None: nothing.
pub fn check(site: &Site, exists: impl Fn(&str, &str) -> bool) -> Option<String> {
    let ns = site.namespace().unwrap_or_default();
    let overrides = &site.spec.overrides;
    for (i, o) in overrides.iter().enumerate() {
        if overrides[..i]
            .iter()
            .any(|x| x.kind == o.kind && x.name == o.name && x.replaced_by.is_some() && o.replaced_by.is_some())
        {
            return Some(format!("spec.overrides[{i}]: {} {} is replaced twice", o.kind, o.name));
        }
        if let Some(r) = &o.replaced_by
            && !exists(&o.kind, r)
        {
            return Some(format!(
                "spec.overrides[{i}].replacedBy: {} {r} does not exist in namespace {ns}, so {} {} could not be rebuilt here: this site does not take the lease until it is fixed",
                o.kind, o.kind, o.name
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn site(overrides: Value) -> Site {
        serde_json::from_value(json!({
            "apiVersion": "reprise.dev/v1alpha1", "kind": "Site",
            "metadata": {"name": "lyon", "namespace": "shop"},
            "spec": {"overrides": overrides},
        }))
        .unwrap()
    }

    #[test]
    fn a_replaced_server_is_renamed_in_every_reference_and_a_patch_has_the_last_word() {
        let s = site(json!([
            {"kind": "Server", "name": "hv-01", "replacedBy": "hv-11"},
            {"kind": "VirtualMachine", "name": "vm-db", "replacedBy": "vm-db-lyon"},
            {"kind": "VirtualMachine", "name": "vm-api", "specPatch": {"hostRef": {"name": "hv-12"}}},
        ]));
        let vm = json!({"kind": "VirtualMachine", "metadata": {"name": "vm-web"}, "spec": {"hostRef": {"name": "hv-01"}, "cpu": 2}});
        assert_eq!(
            with_overrides(&s, &vm)["spec"],
            json!({"hostRef": {"name": "hv-11"}, "cpu": 2})
        );
        let api =
            json!({"kind": "VirtualMachine", "metadata": {"name": "vm-api"}, "spec": {"hostRef": {"name": "hv-01"}}});
        assert_eq!(with_overrides(&s, &api)["spec"]["hostRef"]["name"], "hv-12");
        let app = json!({"kind": "Application", "metadata": {"name": "shop"}, "spec": {"dependsOn": [
            {"kind": "VirtualMachine", "name": "vm-db"}, {"kind": "Database", "name": "shop-db"}]}});
        assert_eq!(
            with_overrides(&s, &app)["spec"]["dependsOn"],
            json!([{"kind": "VirtualMachine", "name": "vm-db-lyon"}, {"kind": "Database", "name": "shop-db"}])
        );
        // Another kind's object of the same name is not the one replaced.
        let vm2 = json!({"kind": "VirtualMachine", "metadata": {"name": "x"}, "spec": {"hostRef": {"name": "vm-db"}}});
        assert_eq!(with_overrides(&s, &vm2)["spec"]["hostRef"]["name"], "vm-db");
        assert_eq!(replacement(&s, "Server", "hv-01"), Some("hv-11"));
        assert_eq!(replacement(&s, "VirtualMachine", "vm-api"), None);
    }

    #[test]
    fn a_replacement_this_namespace_lacks_is_named_by_its_field() {
        let s = site(json!([
            {"kind": "Server", "name": "hv-01", "replacedBy": "hv-11"},
            {"kind": "Server", "name": "hv-02", "replacedBy": "hv-99"},
        ]));
        let exists = |kind: &str, name: &str| kind == "Server" && name == "hv-11";
        let said = check(&s, exists).unwrap();
        assert!(
            said.starts_with("spec.overrides[1].replacedBy: Server hv-99 does not exist in namespace shop"),
            "{said}"
        );
        assert_eq!(check(&s, |_: &str, _: &str| true), None);
        let twice = site(json!([
            {"kind": "Server", "name": "hv-01", "replacedBy": "hv-11"},
            {"kind": "Server", "name": "hv-01", "replacedBy": "hv-12"},
        ]));
        assert_eq!(
            check(&twice, |_: &str, _: &str| true).unwrap(),
            "spec.overrides[1]: Server hv-01 is replaced twice"
        );
    }
}
