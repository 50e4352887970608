//! The import rules between the crate's modules, read off the source: a
//! lower layer never names a higher one. (Issue 16 completes the layering
//! `wire` ← `store` ← `http` ← {`broker`, `app_server`} ← `server` ← `cmd`;
//! these are the rules that hold so far.)

use std::collections::BTreeSet;
use std::path::Path;

/// The `crate::MODULE` names a module's source mentions.
fn mentions(module: &str) -> BTreeSet<String> {
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
    assert!(!files.is_empty(), "no source for module {module}");
    let mut found = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn lower_layers_never_name_higher_ones() {
    let above_store = [
        "app_server",
        "broker",
        "server",
        "cmd",
        "client",
        "bench",
        "config",
    ];
    for (module, forbidden) in [
        ("wire", &["store", "files", "token"][..]),
        ("store", &above_store[..]),
        (
            "client",
            &[
                "store",
                "app_server",
                "broker",
                "server",
                "cmd",
                "bench",
                "config",
            ][..],
        ),
        (
            "config",
            &["app_server", "broker", "server", "cmd", "store", "client"][..],
        ),
    ] {
        let named = mentions(module);
        let wrong: Vec<_> = forbidden.iter().filter(|f| named.contains(**f)).collect();
        assert!(
            wrong.is_empty(),
            "{module} names {wrong:?}: move what it needs down (wire::ids, files) instead"
        );
    }
    // `wire` names only itself.
    assert!(
        mentions("wire").iter().all(|m| m == "wire"),
        "{:?}",
        mentions("wire")
    );
}
