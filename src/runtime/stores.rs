//! The components (Applications, Databases, VirtualMachines, Servers) of a
//! namespace, read from the shared stores as the contract's [`Component`],
//! label selection over them, and the one way to ask a component for an
//! action. This file is the registry of component kinds: the only place
//! that matches on a kind to reach its store or its API.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::{DeserializeGuard, Selector, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};
use serde_json::json;

use super::{Context, Error, Stores, kind::Kind};
use crate::api::{
    Application, Database, Server, Site, VirtualMachine,
    common::{ComponentKind, ComponentRef},
    contract::{ACTION_ANNOTATION, ActionVerb, Component, Request},
};

/// The object `ns/name` from a shared store, if it exists and could be read.
pub fn get<K: Kind>(store: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> Option<K> {
    store
        .get(&ObjectRef::new(name).within(ns))
        .and_then(|o| o.0.as_ref().ok().cloned())
}

fn boxed<K: Kind + Component>(store: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> Option<Box<dyn Component>> {
    get(store, ns, name).map(|o| Box::new(o) as Box<dyn Component>)
}

/// The component `r` of namespace `ns`, as the engine sees it.
pub fn component(stores: &Stores, ns: &str, r: &ComponentRef) -> Option<Box<dyn Component>> {
    match r.kind {
        ComponentKind::Application => boxed(&stores.applications, ns, &r.name),
        ComponentKind::Database => boxed(&stores.databases, ns, &r.name),
        ComponentKind::VirtualMachine => boxed(&stores.virtual_machines, ns, &r.name),
        ComponentKind::Server => boxed(&stores.servers, ns, &r.name),
        ComponentKind::Site => boxed(&stores.sites, ns, &r.name),
    }
}

fn collect<K: Kind + Component>(store: &Store<DeserializeGuard<K>>, ns: &str, out: &mut Vec<Box<dyn Component>>) {
    for o in store.state() {
        if let Ok(obj) = &o.0
            && obj.namespace().as_deref() == Some(ns)
        {
            out.push(Box::new(obj.clone()));
        }
    }
}

/// Every component in `ns` a label selector may select (Sites are named,
/// not selected), sorted by kind and name.
pub fn in_namespace(stores: &Stores, ns: &str) -> Vec<Box<dyn Component>> {
    let mut out = vec![];
    collect(&stores.applications, ns, &mut out);
    collect(&stores.databases, ns, &mut out);
    collect(&stores.virtual_machines, ns, &mut out);
    collect(&stores.servers, ns, &mut out);
    out.sort_by_key(|c| c.reference());
    out
}

/// Whether the component `r` exists in `ns`.
pub fn exists(stores: &Stores, ns: &str, r: &ComponentRef) -> bool {
    fn has<K: Kind>(s: &Store<DeserializeGuard<K>>, ns: &str, name: &str) -> bool {
        s.get(&ObjectRef::new(name).within(ns)).is_some()
    }
    match r.kind {
        ComponentKind::Application => has(&stores.applications, ns, &r.name),
        ComponentKind::Database => has(&stores.databases, ns, &r.name),
        ComponentKind::VirtualMachine => has(&stores.virtual_machines, ns, &r.name),
        ComponentKind::Server => has(&stores.servers, ns, &r.name),
        ComponentKind::Site => has(&stores.sites, ns, &r.name),
    }
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
        .filter(|c| selector.matches(c.labels()))
        .map(|c| c.reference())
        .collect()
}

/// The API of a component kind.
fn api_resource(kind: ComponentKind) -> ApiResource {
    match kind {
        ComponentKind::Application => ApiResource::erase::<Application>(&()),
        ComponentKind::Database => ApiResource::erase::<Database>(&()),
        ComponentKind::VirtualMachine => ApiResource::erase::<VirtualMachine>(&()),
        ComponentKind::Server => ApiResource::erase::<Server>(&()),
        ComponentKind::Site => ApiResource::erase::<Site>(&()),
    }
}

/// Asks the component's controller for `verb` with request `id` (through its
/// action annotation; the same id asks for the same run, never a second one).
pub async fn request_action(
    ctx: &Context,
    ns: &str,
    c: &ComponentRef,
    verb: ActionVerb,
    id: &str,
) -> Result<(), Error> {
    let ar = api_resource(c.kind);
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    let patch = json!({"metadata": {"annotations": {ACTION_ANNOTATION: Request::format(verb, id)}}});
    api.patch(&c.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.wrote(&ar.kind, "action");
    Ok(())
}

/// The kind of a reprise component type, for the runner's registry.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> Option<ComponentKind> {
    ComponentKind::ALL.into_iter().find(|k| k.as_str() == K::kind(&()))
}
