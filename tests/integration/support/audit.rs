//! Counting writes from the API server's audit log (every write is logged at
//! Metadata level by hack/control-plane's audit policy).

use std::{io::BufRead, path::Path};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    stage: String,
    verb: String,
    user: User,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    request_received_timestamp: String,
    #[serde(default)]
    stage_timestamp: Option<String>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Debug, Deserialize)]
struct User {
    username: String,
}

#[derive(Debug, Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: i32,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub api_group: Option<String>,
}

/// One write seen in the audit log.
#[derive(Debug, Clone)]
pub struct Write {
    pub verb: String,
    /// When the API server received the request.
    pub at: Timestamp,
    /// When it answered (the change is committed by then).
    pub done: Timestamp,
    pub object: ObjectRef,
    pub code: i32,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}/{}{} -> {}",
            self.at,
            self.verb,
            self.object.resource,
            self.object.name.as_deref().unwrap_or(""),
            self.object
                .subresource
                .as_deref()
                .map(|s| format!("/{s}"))
                .unwrap_or_default(),
            self.code
        )
    }
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Writes by `user` in namespace `ns` (None: any) received in `[from, to]`.
pub fn writes(log: &Path, user: &str, ns: Option<&str>, from: Timestamp, to: Timestamp) -> Vec<Write> {
    let file = std::fs::File::open(log).unwrap_or_else(|e| panic!("cannot open the audit log {}: {e}", log.display()));
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Line>(&l).ok())
        .filter(|l| l.stage == "ResponseComplete" && l.user.username == user && WRITE_VERBS.contains(&l.verb.as_str()))
        .filter_map(|l| {
            let at: Timestamp = l.request_received_timestamp.parse().ok()?;
            let object = l.object_ref?;
            if at < from || at > to {
                return None;
            }
            if let Some(ns) = ns
                && object.namespace.as_deref() != Some(ns)
            {
                return None;
            }
            let done = l.stage_timestamp.as_deref().and_then(|t| t.parse().ok()).unwrap_or(at);
            Some(Write {
                verb: l.verb,
                at,
                done,
                object,
                code: l.response_status.map(|s| s.code).unwrap_or(0),
            })
        })
        .collect()
}
