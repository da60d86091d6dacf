//! The views drawn as text for a terminal: colours only when asked (a TTY,
//! and NO_COLOR unset), time bars against the level's window.

use std::fmt::Write;

use k8s_openapi::jiff::SignedDuration;

use super::view::{IncidentView, Status, StepView};
use crate::{api::recovery_plan::DrillResult, report::human};

/// How text is painted.
#[derive(Clone, Copy)]
pub struct Paint {
    pub colour: bool,
}

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn good(self, s: &str) -> String {
        self.wrap("32", s)
    }
    fn bad(self, s: &str) -> String {
        self.wrap("31", s)
    }
    fn warn(self, s: &str) -> String {
        self.wrap("33", s)
    }
    fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    /// A word coloured by what it says.
    fn word(self, s: &str) -> String {
        match s {
            "Succeeded" | "Verified" | "Resolved" | "ready" | "met" | "within RPO" => self.good(s),
            "Failed" | "TimedOut" | "Escalated" | "not ready" | "breached" | "missed" | "past RPO" | "no backup" => {
                self.bad(s)
            }
            "Running" | "Detected" | "Recovering" | "AwaitingApproval" => self.warn(s),
            _ => s.to_string(),
        }
    }
}

fn secs(s: f64) -> String {
    human(SignedDuration::from_secs_f64(s.max(0.0)))
}

/// Characters of a time bar.
const BAR: usize = 40;

/// A bar over `[0, scale]` seconds: `#` from `from` to `to`, `|` at `mark`.
pub fn bar(scale: f64, from: f64, to: f64, mark: Option<f64>) -> String {
    let cell = |s: f64| {
        ((s / scale.max(0.001)) * BAR as f64)
            .floor()
            .clamp(0.0, BAR as f64 - 1.0) as usize
    };
    let (a, b) = (cell(from), cell(to.max(from)));
    let mut cells: Vec<char> = (0..BAR).map(|i| if i >= a && i <= b { '#' } else { '.' }).collect();
    if let Some(m) = mark {
        cells[cell(m)] = '|';
    }
    format!("[{}]", cells.into_iter().collect::<String>())
}

pub fn status(s: &Status, p: Paint) -> String {
    if s.plans.is_empty() {
        return "No RecoveryPlan found.\n".into();
    }
    let mut out = String::new();
    for plan in &s.plans {
        let ready = if plan.ready { "ready" } else { "not ready" };
        let _ = writeln!(
            out,
            "{} {}/{}  {}",
            p.bold("Plan"),
            plan.namespace,
            plan.name,
            p.word(ready)
        );
        if !plan.ready && !plan.message.is_empty() {
            let _ = writeln!(out, "  {}", p.dim(&plan.message));
        }
        for l in &plan.levels {
            let word = if l.ready { "ready" } else { "not ready" };
            let kinds: Vec<String> = l.applies_to.iter().map(|k| k.to_string()).collect();
            let _ = writeln!(
                out,
                "  level {} {:<18} {:<24} {:<28} {}",
                l.level,
                l.name,
                l.window,
                kinds.join(","),
                p.word(word)
            );
            for r in &l.reasons {
                let _ = writeln!(out, "      {}", p.dim(r));
            }
        }
        let _ = writeln!(out, "  open incidents: {}", plan.open_incidents.len());
        for i in &plan.open_incidents {
            let left = match i.remaining_seconds {
                Some(r) if r < 0.0 => p.bad(&format!("{} past the deadline", secs(-r))),
                Some(r) => format!("{} left", secs(r)),
                None => "open-ended".into(),
            };
            let _ = writeln!(
                out,
                "    {} {} level {} {} for {}, {left}",
                i.name,
                i.component,
                i.level,
                p.word(&format!("{:?}", i.phase)),
                secs(i.elapsed_seconds)
            );
        }
        match &plan.last_drill {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "  last drill: {} {} started {}",
                    d.id,
                    p.word(&d.outcome),
                    d.started
                );
            }
            None => {
                let _ = writeln!(out, "  last drill: {}", p.dim("none yet"));
            }
        }
        for b in &plan.backups {
            let word = match (b.age_seconds, b.within_rpo) {
                (None, _) => "no backup",
                (Some(_), true) => "within RPO",
                (Some(_), false) => "past RPO",
            };
            let age = b.age_seconds.map(|a| format!("{} old", secs(a))).unwrap_or_default();
            let rpo = b.rpo.as_deref().map(|r| format!("(RPO {r})")).unwrap_or_default();
            let _ = writeln!(out, "  backup of Database {}: {age} {rpo} {}", b.database, p.word(word));
        }
    }
    out
}

pub fn incident(v: &IncidentView, p: Paint) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}/{}: {} level {} {}  {}",
        p.bold("Incident"),
        v.namespace,
        v.name,
        v.component,
        v.level,
        v.level_name,
        p.word(&format!("{:?}", v.phase))
    );
    let _ = writeln!(out, "  cause: {}", v.cause);
    let line = |k: &str, t: &Option<k8s_openapi::jiff::Timestamp>| t.map(|t| format!("  {k:<17}{t:.3}\n"));
    out.push_str(&line("failure observed", &v.failure_observed_at).unwrap_or_default());
    out.push_str(&line("opened", &v.detected_at).unwrap_or_default());
    out.push_str(&line("deadline", &v.deadline).unwrap_or_default());
    out.push_str(&line("closed", &v.closed_at).unwrap_or_default());
    let scale = v.window_seconds.unwrap_or(0.0).max(v.elapsed_seconds).max(1.0) * 1.05;
    let against = match (v.window_seconds, &v.window) {
        (Some(w), Some(text)) if v.elapsed_seconds > w => p.bad(&format!("past the window ({text})")),
        (Some(w), Some(text)) => format!("of window {text}, {} left", secs(w - v.elapsed_seconds)),
        _ => "open-ended level".into(),
    };
    let _ = writeln!(
        out,
        "  {:<24} {}  {} {against}",
        "time",
        bar(scale, 0.0, v.elapsed_seconds, v.window_seconds),
        secs(v.elapsed_seconds)
    );
    for s in &v.steps {
        out.push_str(&step(s, scale, v.window_seconds, p));
    }
    if let Some(r) = &v.resolution {
        let _ = writeln!(out, "  resolution: {r}");
    }
    if let Some(m) = &v.measures {
        let f = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  measures: detect {} · recover {} · data restored {} · data-loss window {} · deadline met {}",
            f(&m.time_to_detect),
            f(&m.time_to_recover),
            m.data_restored_bytes
                .map(|b| format!("{b} bytes"))
                .unwrap_or_else(|| "-".into()),
            f(&m.data_loss_window),
            m.deadline_met.map(|b| if b { "yes" } else { "no" }).unwrap_or("-")
        );
    }
    if v.notified.is_empty() {
        let _ = writeln!(out, "  notified: nobody");
    }
    for n in &v.notified {
        let _ = writeln!(
            out,
            "  notified: {} {} {}",
            n.step,
            p.word(&format!("{:?}", n.outcome)),
            n.message
        );
    }
    if let Some(a) = &v.approved_by {
        let _ = writeln!(out, "  approved by: {a}");
    }
    let _ = writeln!(
        out,
        "  acknowledged by: {}",
        v.acknowledged_by.as_deref().unwrap_or("nobody yet")
    );
    out
}

fn step(s: &StepView, scale: f64, window: Option<f64>, p: Paint) -> String {
    let name = if s.attempt > 1 {
        format!("{} (attempt {})", s.step, s.attempt)
    } else {
        s.step.clone()
    };
    let message = if s.message.is_empty() {
        String::new()
    } else {
        format!("  {}", p.dim(&s.message))
    };
    format!(
        "  {:<24} {}  {} {}{message}\n",
        name,
        bar(scale, s.offset_seconds, s.offset_seconds + s.duration_seconds, window),
        secs(s.duration_seconds),
        p.word(&format!("{:?}", s.outcome))
    )
}

pub fn drill(d: &DrillResult, p: Paint) -> String {
    let mut out = format!("{} {} {}\n", p.bold("Drill"), d.id, p.word(d.outcome()));
    for l in &d.levels {
        let word = match (d.drilled(l.level), l.met) {
            (false, _) => "not drilled",
            (true, true) => "met",
            (true, false) => "missed",
        };
        let _ = writeln!(
            out,
            "  level {}: measured {} against window {}  {}{}",
            l.level,
            l.measured.as_deref().unwrap_or("-"),
            l.window.as_deref().unwrap_or("open-ended"),
            p.word(word),
            l.message
                .as_deref()
                .map(|m| format!("  {}", p.dim(m)))
                .unwrap_or_default()
        );
    }
    for c in &d.components {
        let _ = writeln!(
            out,
            "  {} {} (level {}): {} {}  {}",
            c.component.kind,
            c.component.name,
            c.level,
            p.word(&format!("{:?}", c.outcome)),
            c.seconds.map(secs).unwrap_or_default(),
            p.dim(&c.message)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_marks_the_span_and_the_deadline() {
        // 40 cells over 100 s: 10 s to 20 s is cells 4 to 8, the deadline at 50 s cell 20.
        let b = bar(100.0, 10.0, 20.0, Some(50.0));
        assert_eq!(b.len(), 42);
        assert_eq!(&b[1..5], "....");
        assert_eq!(&b[5..10], "#####");
        assert_eq!(&b[21..22], "|");
    }

    #[test]
    fn no_colour_unless_asked() {
        let plain = Paint { colour: false };
        assert_eq!(plain.word("Failed"), "Failed");
        let tty = Paint { colour: true };
        assert_eq!(tty.word("Failed"), "\x1b[31mFailed\x1b[0m");
    }
}
