//! Reports people file: one self-contained HTML page per incident and per
//! drill (inline CSS and SVG, nothing fetched), drawn from status alone.
//! The kubectl plugin writes them; the operator serves them read-only.
//!
//! Everything a report shows came from a peer or a user (messages, names):
//! all of it is escaped, and nothing in it is ever a link or a script.

mod drill;
mod incident;
mod timeline;

pub use drill::drill_html;
pub use incident::incident_html;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};

use crate::api::{Incident, RecoveryPlan};

/// The report of `resource` (`incidents` or `recoveryplans`: the plan's
/// last drill) `name` in `namespace`, read now with `client`; None: no such object.
pub async fn render(
    client: &Client,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<Option<String>, kube::Error> {
    let plans = Api::<RecoveryPlan>::namespaced(client.clone(), namespace);
    let now = Timestamp::now();
    if resource == "recoveryplans" {
        return Ok(plans.get_opt(name).await?.map(|p| drill_html(&p, now)));
    }
    let Some(inc) = Api::<Incident>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
    else {
        return Ok(None);
    };
    let plan = plans.get_opt(&inc.spec.plan_ref.name).await?;
    Ok(Some(incident_html(&inc, plan.as_ref(), now)))
}

/// Text made safe for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The time from `from` to `to` in whole milliseconds, counted as the
/// incident's measures count it (each end cut to its millisecond), so a
/// report and `status.measures` never differ by one.
pub fn between(from: Timestamp, to: Timestamp) -> SignedDuration {
    SignedDuration::from_millis(to.as_millisecond() - from.as_millisecond())
}

/// A duration for people, to the millisecond: `850ms`, `12.345s`, `4m 05.120s`, `2h 03m`.
pub fn human(d: SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    match ms {
        ms if ms < 1_000 => format!("{ms}ms"),
        ms if ms < 60_000 => format!("{}.{:03}s", ms / 1000, ms % 1000),
        ms if ms < 3_600_000 => format!("{}m {:02}.{:03}s", ms / 60_000, ms / 1000 % 60, ms % 1000),
        ms => format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// A time as RFC 3339 to the millisecond, in UTC.
pub fn when(t: Timestamp) -> String {
    format!("{t:.3}")
}

/// The page around a report's body: its title, the style, nothing external.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"generator\" content=\"reprise {}\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title)
    )
}

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:980px;color:#1d2430}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #d5dae1}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e6e9ee;vertical-align:top}\
th{background:#f4f6f9;font-weight:600}.sub{color:#5b6573}.k{color:#5b6573;width:14em}\
.ok{color:#17803d}.bad{color:#b42318}.wait{color:#9a6700}.skip{color:#5b6573}\
svg text{font:12px system-ui,sans-serif;fill:#1d2430}svg .axis{stroke:#9aa4b2}\
svg .Succeeded,svg .Verified{fill:#2f9e5b}svg .Failed,svg .TimedOut{fill:#d64545}svg .Running{fill:#d9a521}svg .Skipped{fill:#a3acb9}\
svg .deadline{stroke:#b42318;stroke-width:2;stroke-dasharray:6 3}svg .opens{stroke:#5b6573;stroke-dasharray:2 3}svg .closed{stroke:#17803d;stroke-width:2}\
footer{margin-top:2em;color:#5b6573;font-size:.9em}";

/// A two-column table of facts (values already HTML).
fn facts(rows: &[(&str, String)]) -> String {
    let rows: String = rows
        .iter()
        .map(|(k, v)| format!("<tr><td class=\"k\">{}</td><td>{v}</td></tr>", escape(k)))
        .collect();
    format!("<table class=\"facts\">{rows}</table>")
}

/// The CSS class of an outcome's text.
fn tone(outcome: &str) -> &'static str {
    match outcome {
        "Succeeded" | "Verified" | "Resolved" | "met" => "ok",
        "Failed" | "TimedOut" | "Escalated" | "breached" => "bad",
        "Running" | "Detected" | "Recovering" | "AwaitingApproval" => "wait",
        _ => "skip",
    }
}

fn footer(generated: Timestamp) -> String {
    format!(
        "<footer>Generated by reprise {} at {} from the object's status; every time is UTC.</footer>",
        env!("CARGO_PKG_VERSION"),
        when(generated)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_peers_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn durations_read_to_the_millisecond() {
        assert_eq!(human(SignedDuration::from_millis(850)), "850ms");
        assert_eq!(human(SignedDuration::from_millis(12_345)), "12.345s");
        assert_eq!(human(SignedDuration::from_millis(245_120)), "4m 05.120s");
        assert_eq!(human(SignedDuration::from_secs(7_380)), "2h 03m");
        assert_eq!(human(SignedDuration::from_millis(-5)), "0ms");
    }
}
