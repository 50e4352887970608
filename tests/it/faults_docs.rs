//! The chaos docs stay true: every rule the README's recipes and
//! docs/CHAOS.md show parses, and every kind is documented.

use imctl::wire::fault::{Kind, Rule};
use serde_json::Value;

use crate::common::{Served, imctl, stderr};

/// The rules a text shows: after `imctl chaos add ` and in `rule = "…"`.
fn rules_in(text: &str) -> Vec<String> {
    let mut rules = Vec::new();
    for line in text.lines() {
        for part in line.split("imctl chaos add ").skip(1) {
            let rule = part.split(['`', '#']).next().unwrap_or_default().trim();
            if rule != "RULE" && rule != "…" {
                rules.push(rule.to_owned());
            }
        }
        for part in line.split("rule = \"").skip(1) {
            let rule = part.split('"').next().unwrap_or_default();
            if rule != "…" && rule != "KIND key=value …" {
                rules.push(rule.to_owned());
            }
        }
    }
    rules
}

fn all_parse(doc: &str, text: &str) -> usize {
    let rules = rules_in(text);
    for rule in &rules {
        if let Err(e) = rule.parse::<Rule>() {
            panic!("{doc}: the rule {rule:?} does not parse: {e}");
        }
    }
    rules.len()
}

/// README's "Test your error paths" section.
fn readme_section() -> &'static str {
    include_str!("../../README.md")
        .split("## Test your error paths")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap()
}

/// The recipes table's rows: (one-liner, file rule).
fn recipes() -> Vec<(String, String)> {
    readme_section()
        .lines()
        .filter(|l| l.starts_with("| **"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let cmd = cells[1].trim_matches('`').to_owned();
            let rule = cells[2]
                .split("rule = \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (cmd, rule.to_owned())
        })
        .collect()
}

#[test]
fn the_readme_recipes_parse() {
    let section = readme_section();
    // Five recipes, each as a one-liner and as a file rule, plus the intro.
    assert!(all_parse("README.md", section) >= 11);
}

#[test]
fn chaos_md_documents_every_kind_and_its_rules_parse() {
    let doc = include_str!("../../docs/CHAOS.md");
    for kind in Kind::ALL {
        assert!(
            doc.contains(&format!("| `{}`", kind.name())),
            "docs/CHAOS.md has no row for {}",
            kind.name()
        );
    }
    all_parse("docs/CHAOS.md", doc);
    let config = include_str!("../../docs/CONFIGURATION.md");
    assert!(all_parse("docs/CONFIGURATION.md", config) >= 1);
}

/// `imctl chaos list --json` against `app`.
fn listed(state: &std::path::Path, app: &str) -> Value {
    let out = imctl(state, &["chaos", "--app-server", app, "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The five recipes as written: each one-liner run by the real CLI against
/// a running stack, and the five file rules in an imctl.toml a stack reads.
#[test]
fn the_readme_recipes_work_as_written() {
    let recipes = recipes();
    assert_eq!(recipes.len(), 5, "{recipes:?}");
    let stack = Served::start(&["--ephemeral", "--app-port", "0", "--broker-port", "0"]);
    let state = tempfile::tempdir().unwrap();
    for (cmd, _) in &recipes {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        assert_eq!(words[..3], ["imctl", "chaos", "add"], "{cmd}");
        let mut args = vec!["chaos", "--app-server", stack.app.as_str()];
        args.extend_from_slice(&words[2..]);
        let out = imctl(state.path(), &args);
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
    }
    let list = listed(state.path(), &stack.app);
    assert_eq!(list["rules"].as_array().unwrap().len(), 5, "{list}");
    drop(stack);

    let file = state.path().join("imctl.toml");
    let tables: String = recipes
        .iter()
        .map(|(_, rule)| format!("[[fault]]\nrule = \"{rule}\"\n"))
        .collect();
    std::fs::write(&file, tables).unwrap();
    let config = file.to_str().unwrap();
    let stack = Served::start(&[
        "--ephemeral",
        "--app-port",
        "0",
        "--broker-port",
        "0",
        "--config",
        config,
    ]);
    let list = listed(state.path(), &stack.app);
    let rules: Vec<&str> = list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    let written: Vec<String> = recipes
        .iter()
        .map(|(_, rule)| rule.parse::<Rule>().unwrap().to_string())
        .collect();
    assert_eq!(rules, written);
    // A stack that misbehaves on purpose says so.
    let status = imctl(
        state.path(),
        &["status", "--app-server", stack.app.as_str()],
    );
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("⚡ 5 fault rules set on purpose"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}
