//! The chaos docs stay true: every rule the README's recipes and
//! docs/CHAOS.md show parses, and every kind is documented.

use imctl::wire::fault::{Kind, Rule};

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

#[test]
fn the_readme_recipes_parse() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("## Test your error paths")
        .nth(1)
        .expect("README has the section")
        .split("\n## ")
        .next()
        .unwrap();
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
