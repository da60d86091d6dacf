//! The layers of docs/architecture.md, checked on the source: a component
//! never imports the recovery engine, the engine never imports a component
//! (it sees them through `api::contract::Component`), providers import
//! neither, and no function of the engine is longer than 120 lines.

use std::path::{Path, PathBuf};

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out = vec![];
    let mut todo = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under src/{dir}");
    out
}

/// The lines of `dir`'s sources that name one of `forbidden` (comments aside).
fn offending(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = vec![];
    for (path, text) in sources(dir) {
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if forbidden.iter().any(|f| code.contains(f)) {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn components_never_import_the_engine() {
    let bad = offending("components", &["crate::recovery", "recovery::"]);
    assert!(bad.is_empty(), "components importing the engine:\n{}", bad.join("\n"));
}

#[test]
fn the_engine_sees_components_only_through_the_contract() {
    let bad = offending("recovery", &["crate::components", "components::"]);
    assert!(bad.is_empty(), "the engine importing components:\n{}", bad.join("\n"));
}

#[test]
fn providers_know_neither_components_nor_the_engine() {
    let bad = offending("providers", &["crate::components", "crate::recovery", "crate::runtime"]);
    assert!(bad.is_empty(), "providers importing upper layers:\n{}", bad.join("\n"));
}

#[test]
fn the_plugin_and_the_reports_read_only_the_api() {
    // What people see is drawn from what the API server gives them, never
    // from the operator's insides: the plugin runs with the user's rights.
    let forbidden = [
        "crate::components",
        "crate::recovery",
        "crate::runtime",
        "crate::providers",
    ];
    let mut bad = offending("plugin", &forbidden);
    bad.extend(offending("report", &forbidden));
    assert!(
        bad.is_empty(),
        "views importing the operator's layers:\n{}",
        bad.join("\n")
    );
}

/// Functions of `text` longer than `max` lines, as rustfmt lays them out
/// (the body ends at the first `}` at the signature's indentation).
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = vec![];
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let sig = [
            "fn ",
            "pub fn ",
            "async fn ",
            "pub async fn ",
            "pub(crate) fn ",
            "pub(crate) async fn ",
        ];
        let Some(rest) = sig.iter().find_map(|s| t.strip_prefix(s)) else {
            continue;
        };
        if l.trim_end().ends_with(';') {
            continue;
        }
        let indent = &l[..l.len() - t.len()];
        let end = format!("{indent}}}");
        if let Some(n) = lines[i + 1..].iter().position(|x| *x == end)
            && n + 2 > max
        {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            long.push((name, n + 2));
        }
    }
    long
}

#[test]
fn the_length_check_sees_a_long_function() {
    let body = "    x();\n".repeat(130);
    let text = format!("fn short() {{\n}}\n\npub async fn long() {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 120), vec![("long".to_string(), 132)]);
}

#[test]
fn no_engine_function_is_over_120_lines() {
    let mut bad = vec![];
    for (path, text) in sources("recovery") {
        for (name, n) in long_functions(&text, 120) {
            bad.push(format!("{}: {name} has {n} lines", path.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
