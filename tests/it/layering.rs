//! The import rules between the crate's modules, read off the source: a
//! module names only modules of lower layers (ARCHITECTURE.md, "Layering"):
//! `wire` ← `store` ← `http` ← {`broker`, `app_server`} ← `server` ← `cmd`,
//! and `client` names `wire` and the leaf utilities only.

use std::collections::BTreeSet;
use std::path::Path;

/// Every module of the crate with its layer. A module may name modules of
/// strictly lower layers only; the two servers share a layer so neither
/// names the other.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: no `crate::` at all.
    ("activity", 0),
    ("files", 0),
    ("metrics", 0),
    ("nats_local", 0),
    ("pg_local", 0),
    ("port_owner", 0),
    ("qr_image", 0),
    ("rlimit", 0),
    ("token", 0),
    ("wire", 0),
    ("telemetry", 1),
    ("store", 1),
    ("cluster", 1),
    ("client", 1),
    ("fault", 1),
    ("http", 2),
    ("config", 3),
    ("broker", 3),
    ("app_server", 3),
    ("openapi", 4),
    ("bench", 4),
    ("server", 5),
    ("cmd", 6),
];

/// What `client` (imctl's own client, a stand-in for any app's) may name:
/// the wire types and leaf utilities, never the server side.
const CLIENT_MAY_NAME: &[&str] = &["wire", "token", "files"];

/// The source files of `module` (`src/module.rs` and `src/module/**`).
fn sources(module: &str) -> Vec<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    files
}

/// The top-level modules `text` names through `crate::`, including the
/// grouped form `crate::{a, b::c}`.
fn named_in(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: after `{` and after each `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|n| !n.is_empty());
    found
}

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(m, _)| *m == module)
        .unwrap_or_else(|| panic!("module {module} has no layer: add it to LAYERS"))
        .1
}

#[test]
fn every_module_names_only_lower_layers() {
    let mut wrong = Vec::new();
    for (module, level) in LAYERS {
        let files = sources(module);
        assert!(!files.is_empty(), "no source for module {module}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for named in named_in(&text) {
                if named == *module {
                    continue;
                }
                let allowed = if *module == "client" {
                    CLIENT_MAY_NAME.contains(&named.as_str())
                } else {
                    layer(&named) < *level
                };
                if !allowed {
                    let f = f
                        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                        .unwrap()
                        .display();
                    wrong.push(format!("{f} names crate::{named}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward or sideways imports (move what is shared down a layer):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_of_the_crate_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(src).unwrap().map(Result::unwrap) {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if name != "main" && name != "lib" {
            layer(&name);
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_nested_imports() {
    let named = named_in(
        "use crate::{http::{ApiError, Reply}, store::Store};\nlet x = crate::wire::ids::ROBOT;",
    );
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["http", "store", "wire"]
    );
}

#[test]
fn only_the_store_names_the_database_driver() {
    let mut wrong = Vec::new();
    for (module, _) in LAYERS {
        if *module == "store" {
            continue;
        }
        for f in sources(module) {
            if std::fs::read_to_string(&f).unwrap().contains("sqlx::") {
                wrong.push(f.display().to_string());
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "name store::Error and store::Refused instead of sqlx: {wrong:?}"
    );
}
