//! The timeline picture: one bar per step against the level's window.

use k8s_openapi::jiff::Timestamp;

use super::{escape, human};

/// One bar of the picture.
pub struct Bar {
    pub label: String,
    /// The outcome (also the bar's CSS class).
    pub outcome: String,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// A vertical line across the bars.
pub struct Marker {
    /// CSS class and `data-marker` value: `opens`, `deadline`, `closed`.
    pub kind: &'static str,
    pub label: String,
    pub at: Timestamp,
}

impl Marker {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            "opens" => "window opens",
            "deadline" => "deadline",
            "closed" => "closed",
            _ => "",
        }
    }
}

const WIDTH: f64 = 940.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 26.0;
const TOP: f64 = 34.0;

/// Where time `t` falls on the picture, from `t0` over `span`.
fn x(t0: Timestamp, span: f64, t: Timestamp) -> f64 {
    let s = t0.duration_until(t).as_secs_f64().clamp(0.0, span);
    LEFT + s / span * (WIDTH - LEFT - RIGHT)
}

/// The picture, from `t0` to the latest bar or marker (at least a second).
pub fn svg(t0: Timestamp, bars: &[Bar], markers: &[Marker]) -> String {
    let last = bars
        .iter()
        .map(|b| b.end)
        .chain(markers.iter().map(|m| m.at))
        .max()
        .unwrap_or(t0);
    let span = t0.duration_until(last).as_secs_f64().max(1.0);
    let height = TOP + ROW * bars.len().max(1) as f64 + 30.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" data-origin=\"{}\" data-span-seconds=\"{span:.3}\" \
         data-left=\"{LEFT}\" data-right=\"{}\">",
        super::when(t0),
        WIDTH - RIGHT
    );
    out.push_str(&axis(span, height));
    for (i, b) in bars.iter().enumerate() {
        out.push_str(&bar(t0, span, i, b));
    }
    for m in markers {
        let at = x(t0, span, m.at);
        // Its name above the bars, on the side that has room.
        let anchor = if at > WIDTH - 160.0 { "end" } else { "start" };
        out.push_str(&format!(
            "<text class=\"marker-label\" x=\"{at:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            TOP - 12.0,
            escape(m.kind_name())
        ));
        out.push_str(&format!(
            "<line class=\"{k}\" data-marker=\"{k}\" data-seconds=\"{s:.3}\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{y1}\" y2=\"{y2:.1}\">\
             <title>{}</title></line>",
            escape(&m.label),
            k = m.kind,
            s = t0.duration_until(m.at).as_secs_f64(),
            y1 = TOP - 8.0,
            y2 = height - 24.0
        ));
    }
    out.push_str("</svg>");
    out
}

/// The time axis along the bottom, five ticks from the origin.
fn axis(span: f64, height: f64) -> String {
    let y = height - 24.0;
    let mut out = format!(
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>",
        WIDTH - RIGHT
    );
    for i in 0..=4 {
        let s = span * f64::from(i) / 4.0;
        let at = LEFT + (WIDTH - LEFT - RIGHT) * f64::from(i) / 4.0;
        let anchor = if i == 4 { "end" } else { "start" };
        out.push_str(&format!(
            "<line class=\"axis\" x1=\"{at:.1}\" x2=\"{at:.1}\" y1=\"{y}\" y2=\"{}\"/>\
             <text x=\"{at:.1}\" y=\"{}\" text-anchor=\"{anchor}\">+{}</text>",
            y + 5.0,
            y + 18.0,
            tick(s)
        ));
    }
    out
}

/// An axis label: to the tenth of a second under a minute, whole seconds above.
fn tick(s: f64) -> String {
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let secs = s.round() as u64;
    match secs {
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

fn bar(t0: Timestamp, span: f64, i: usize, b: &Bar) -> String {
    let y = TOP + ROW * i as f64;
    let (x0, x1) = (x(t0, span, b.start), x(t0, span, b.end));
    let took = human(super::between(b.start, b.end));
    format!(
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <rect class=\"step {o}\" data-step=\"{l}\" data-outcome=\"{o}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" rx=\"2\">\
         <title>{l}: {o}, {took}</title></rect>\
         <text x=\"{:.1}\" y=\"{:.1}\">{took}</text>",
        LEFT - 8.0,
        y + 13.0,
        escape(&b.label),
        (x1 - x0).max(2.0),
        ROW - 8.0,
        (x1 + 6.0).min(WIDTH - RIGHT - 60.0),
        y + 13.0,
        o = escape(&b.outcome),
        l = escape(&b.label),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn one_bar_per_step_and_the_deadline_where_the_window_ends() {
        let bars = [
            Bar {
                label: "restart".into(),
                outcome: "Failed".into(),
                start: t(0),
                end: t(30),
            },
            Bar {
                label: "restore".into(),
                outcome: "Succeeded".into(),
                start: t(30),
                end: t(90),
            },
        ];
        let markers = [Marker {
            kind: "deadline",
            label: "deadline".into(),
            at: t(180),
        }];
        let svg = svg(t(0), &bars, &markers);
        assert_eq!(svg.matches("<rect class=\"step").count(), 2);
        // The deadline is the latest point: it ends the chart's width.
        assert!(svg.contains(&format!("x1=\"{:.1}\"", WIDTH - RIGHT)), "{svg}");
        // The second bar starts a sixth of the way along.
        assert!(
            svg.contains(&format!("x=\"{:.1}\"", LEFT + (WIDTH - LEFT - RIGHT) / 6.0)),
            "{svg}"
        );
    }

    #[test]
    fn labels_are_escaped() {
        let bars = [Bar {
            label: "<b>x</b>".into(),
            outcome: "Running".into(),
            start: t(0),
            end: t(1),
        }];
        let svg = svg(t(0), &bars, &[]);
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;"));
    }
}
