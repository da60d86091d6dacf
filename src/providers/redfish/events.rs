//! A BMC's events as they happen: the EventService's Server-Sent Events
//! stream (`ServerSentEventUri`, Redfish DSP0266 §13.5), read over the
//! conversation's credentials.
//!
//! What the stream sends is untrusted input like any answer of the BMC: its
//! address must stay on the BMC's origin and under `/redfish/` (`origin`);
//! a line and an event are read up to [`MAX_EVENT_BYTES`] (past it the feed
//! ends with `ResponseTooLarge`); of an event only the links it names as
//! `OriginOfCondition` are kept (at most [`MAX_ORIGINS`], each at most
//! 2,048 bytes), and they are only compared, never followed.

use std::time::Duration;

use reqwest::{Method, header};
use serde::Deserialize;
use serde_json::Value;

use super::{Bmc, NOT_SUPPORTED, RedfishError, TOO_LARGE, model::Link, origin};

/// The longest line or event read from the stream.
pub const MAX_EVENT_BYTES: usize = 64 << 10;
/// The most origins kept from one event.
pub const MAX_ORIGINS: usize = 32;
/// A stream is opened again after this long (a session, a proxy, a BMC may
/// end it silently sooner; the feed's reader opens it again when it ends).
const STREAM_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EventService {
    service_enabled: Option<bool>,
    server_sent_event_uri: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Event {
    events: Vec<Value>,
}

/// The events one SSE message carried, as the links of what they concern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origins {
    /// The `OriginOfCondition` links named (at most [`MAX_ORIGINS`]).
    pub links: Vec<String>,
    /// Whether a record named no origin (it may concern anything).
    pub unknown: bool,
}

/// Reads SSE messages out of chunks, within bounds (pure: no I/O).
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
}

impl SseParser {
    /// Feeds a chunk; returns the data of each message it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<String>, String> {
        let mut done = vec![];
        for &b in chunk {
            if b != b'\n' {
                if self.line.len() >= MAX_EVENT_BYTES {
                    return Err(format!(
                        "a line of the event stream is longer than {MAX_EVENT_BYTES} bytes"
                    ));
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(&line)).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    done.push(std::mem::take(&mut self.data));
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("data:") {
                if self.data.len() + v.len() + 1 > MAX_EVENT_BYTES {
                    return Err(format!("an event of the stream is larger than {MAX_EVENT_BYTES} bytes"));
                }
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
            // Comments (keep-alives), `id:`, `event:`, `retry:`: nothing to keep.
        }
        Ok(done)
    }
}

/// What one message's data says it concerns. Data that is not an Event
/// concerns anything (the reader looks: a look costs a poll, never more).
pub fn origins(data: &str) -> Origins {
    let Ok(event) = serde_json::from_str::<Event>(data) else {
        return Origins {
            links: vec![],
            unknown: true,
        };
    };
    // Records past the bound are not read: they may concern anything.
    let mut out = Origins {
        unknown: event.events.is_empty() || event.events.len() > MAX_ORIGINS,
        ..Default::default()
    };
    for record in event.events.iter().take(MAX_ORIGINS) {
        let link = match record.get("OriginOfCondition") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(o) => o.get("@odata.id").and_then(Value::as_str),
            None => None,
        };
        match link.filter(|l| !l.is_empty() && l.len() <= 2048) {
            Some(l) => out.links.push(l.to_string()),
            None => out.unknown = true,
        }
    }
    out
}

/// An open event stream.
pub struct Feed {
    resp: reqwest::Response,
    parser: SseParser,
    ready: std::collections::VecDeque<String>,
    bmc: String,
    resource: String,
}

impl Feed {
    /// The next message's origins; an error when the stream ends or breaks a bound.
    pub async fn next(&mut self) -> Result<Origins, RedfishError> {
        loop {
            if let Some(data) = self.ready.pop_front() {
                return Ok(origins(&data));
            }
            let chunk = self
                .resp
                .chunk()
                .await
                .map_err(|e| self.error("Unreachable", crate::providers::artifacts::error_chain(&e)))?;
            let Some(chunk) = chunk else {
                return Err(self.error("Unreachable", "the BMC ended the event stream".into()));
            };
            let messages = self.parser.push(&chunk).map_err(|why| self.error(TOO_LARGE, why))?;
            self.ready.extend(messages);
        }
    }

    fn error(&self, reason: &'static str, message: String) -> RedfishError {
        RedfishError {
            reason,
            bmc: self.bmc.clone(),
            resource: self.resource.clone(),
            status: None,
            message,
        }
    }
}

impl crate::providers::bmc::Feed for Feed {
    async fn next(&mut self) -> Result<Origins, RedfishError> {
        Feed::next(self).await
    }
}

impl Bmc {
    /// Whether the service root links an EventService.
    pub fn offers_events(&self) -> bool {
        self.root.event_service.as_ref().is_some_and(|l| !l.id.is_empty())
    }

    /// The EventService's SSE stream, opened; None when the service offers
    /// none (or has it turned off): the Server is polled, as always.
    pub async fn feed(&self) -> Result<Option<Feed>, RedfishError> {
        let Some(Link { id: service }) = self.root.event_service.clone() else {
            return Ok(None);
        };
        let (es, _) = self.get::<EventService>(&service).await?;
        let uri = match (es.service_enabled, es.server_sent_event_uri) {
            (Some(false), _) | (_, None) => return Ok(None),
            (_, Some(uri)) if uri.is_empty() => return Ok(None),
            (_, Some(uri)) => uri,
        };
        let url = origin::resolve(&self.base, &uri)
            .map_err(|why| self.error(&uri, super::LINK_REFUSED, None, why.to_string()))?;
        let req = self
            .authenticated(self.http.request(Method::GET, url))
            .header(header::ACCEPT, "text/event-stream")
            .timeout(STREAM_LIFETIME);
        let resp = req.send().await.map_err(|e| self.transport(&uri, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let reason = match status.as_u16() {
                401 | 403 => super::AUTHENTICATION_FAILED,
                404 | 405 | 501 => NOT_SUPPORTED,
                _ => super::HTTP_ERROR,
            };
            return Err(self.error(&uri, reason, Some(status.as_u16()), format!("HTTP {}", status.as_u16())));
        }
        Ok(Some(Feed {
            resp,
            parser: SseParser::default(),
            ready: Default::default(),
            bmc: self.base.as_str().trim_end_matches('/').to_string(),
            resource: uri.chars().take(200).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_blank_lines_across_chunks() {
        let mut p = SseParser::default();
        assert_eq!(p.push(b": keep-alive\n\nid: 1\nda").unwrap(), Vec::<String>::new());
        assert_eq!(p.push(b"ta: {\"a\":\r\ndata: 1}\r\n\r\n").unwrap(), vec!["{\"a\":\n1}"]);
        assert_eq!(p.push(b"data:x\n\ndata: y\n\n").unwrap(), vec!["x", "y"]);
    }

    #[test]
    fn an_endless_line_or_event_ends_the_stream_at_the_bound() {
        let mut p = SseParser::default();
        let long = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(p.push(&long).unwrap_err().contains("line"));
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "b".repeat(1000));
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = p.push(line.as_bytes()) {
                err = Some(e);
                break;
            }
        }
        assert!(err.expect("bounded").contains("event"));
    }

    #[test]
    fn an_event_names_what_it_concerns() {
        let e = r#"{"Events":[{"MessageId":"ResourceEvent.1.0.ResourceChanged","OriginOfCondition":{"@odata.id":"/redfish/v1/Systems/1"}},{"OriginOfCondition":"/redfish/v1/Chassis/1"}]}"#;
        assert_eq!(
            origins(e),
            Origins {
                links: vec!["/redfish/v1/Systems/1".into(), "/redfish/v1/Chassis/1".into()],
                unknown: false
            }
        );
        assert!(origins(r#"{"Events":[{"MessageId":"x"}]}"#).unknown);
        assert!(origins("not json").unknown);
        assert!(origins(r#"{"Events":[]}"#).unknown);
        let many: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"OriginOfCondition":{{"@odata.id":"/redfish/v1/Systems/{i}"}}}}"#))
            .collect();
        let o = origins(&format!(r#"{{"Events":[{}]}}"#, many.join(",")));
        assert_eq!(o.links.len(), MAX_ORIGINS);
        assert!(o.unknown, "what was not kept may concern anything");
    }
}
