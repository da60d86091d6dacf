//! The components (Applications, Databases, VirtualMachines, Servers) of a
//! namespace, read from the shared stores, and label selection over them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    ResourceExt,
    core::{DeserializeGuard, Selector, SelectorExt},
    runtime::reflector::Store,
};

use super::{Stores, kind::Kind};
use crate::api::common::{ComponentKind, ComponentRef};

/// A component with its labels.
pub struct Component {
    pub reference: ComponentRef,
    pub labels: BTreeMap<String, String>,
}

fn collect<K: Kind>(store: &Store<DeserializeGuard<K>>, kind: ComponentKind, ns: &str, out: &mut Vec<Component>) {
    for o in store.state() {
        if o.namespace().as_deref() == Some(ns) {
            out.push(Component {
                reference: ComponentRef {
                    kind,
                    name: o.name_any(),
                },
                labels: o.labels().clone(),
            });
        }
    }
}

/// Every component in `ns`, sorted by kind and name.
pub fn in_namespace(stores: &Stores, ns: &str) -> Vec<Component> {
    let mut out = vec![];
    collect(&stores.applications, ComponentKind::Application, ns, &mut out);
    collect(&stores.databases, ComponentKind::Database, ns, &mut out);
    collect(&stores.virtual_machines, ComponentKind::VirtualMachine, ns, &mut out);
    collect(&stores.servers, ComponentKind::Server, ns, &mut out);
    out.sort_by(|a, b| a.reference.cmp(&b.reference));
    out
}

/// The object `ns/name` from a shared store, if it exists and could be read.
pub fn get<K: Kind>(store: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> Option<K> {
    store
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
        .and_then(|o| o.0.as_ref().ok().cloned())
}

/// The labels of the object `name` of `kind` in `ns`; None when it does not exist.
pub fn labels(stores: &Stores, kind: ComponentKind, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
    fn of<K: Kind>(s: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> Option<BTreeMap<String, String>> {
        s.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
            .map(|o| o.labels().clone())
    }
    match kind {
        ComponentKind::Application => of(&stores.applications, ns, name),
        ComponentKind::Database => of(&stores.databases, ns, name),
        ComponentKind::VirtualMachine => of(&stores.virtual_machines, ns, name),
        ComponentKind::Server => of(&stores.servers, ns, name),
    }
}

/// Whether the object `name` of `kind` exists in `ns`.
pub fn exists(stores: &Stores, kind: ComponentKind, ns: &str, name: &str) -> bool {
    labels(stores, kind, ns, name).is_some()
}

/// A label selector, converted; `field` names it in the error.
pub fn selector(field: &str, s: &LabelSelector) -> Result<Selector, super::validation::Invalid> {
    Selector::try_from(s.clone())
        .map_err(|e| super::validation::Invalid::new(field, format!("not a valid label selector: {e}")))
}

/// The components of `ns` that `selector` selects.
pub fn selected(stores: &Stores, ns: &str, selector: &Selector) -> Vec<ComponentRef> {
    in_namespace(stores, ns)
        .into_iter()
        .filter(|c| selector.matches(&c.labels))
        .map(|c| c.reference)
        .collect()
}
