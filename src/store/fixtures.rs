//! Seed data for a fresh database: `fixtures/default.json` is built in, and
//! `--fixtures FILE` loads another file of the same shape.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

const BUILTIN: &str = include_str!("../../fixtures/default.json");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    #[serde(default)]
    pub users: Vec<FixtureUser>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureUser {
    pub user_id: String,
    #[serde(default)]
    pub mobile: Option<String>,
    pub display_name: String,
    #[serde(default)]
    pub portrait: Option<String>,
}

impl Fixtures {
    /// The fixtures shipped in the binary (alice, bob, carol, robot).
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the built-in fixtures are valid")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the fixtures file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad fixtures file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let fixtures: Fixtures = serde_json::from_str(text)?;
        let mut ids = HashSet::new();
        let mut mobiles = HashSet::new();
        for u in &fixtures.users {
            if !super::is_valid_user_id(&u.user_id) {
                bail!(
                    "user id {:?} must be non-empty and use only letters, digits, '-' and '_'",
                    u.user_id
                );
            }
            if !ids.insert(&u.user_id) {
                bail!("user id {:?} appears twice", u.user_id);
            }
            if let Some(m) = &u.mobile {
                if !crate::wire::ids::is_valid_mobile(m) {
                    bail!(
                        "user {:?} has mobile {m:?}, which is not 1[3-9] followed by 9 digits",
                        u.user_id
                    );
                }
                if !mobiles.insert(m) {
                    bail!("mobile {m:?} appears twice");
                }
            }
        }
        Ok(fixtures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_the_documented_users() {
        let f = Fixtures::builtin();
        let ids: Vec<_> = f.users.iter().map(|u| u.user_id.as_str()).collect();
        assert_eq!(ids, ["alice", "bob", "carol", "robot"]);
        assert_eq!(f.users[0].mobile.as_deref(), Some("13800000001"));
    }

    #[test]
    fn bad_fixtures_are_refused_with_a_reason() {
        let dup =
            r#"{"users":[{"userId":"a","displayName":"A"},{"userId":"a","displayName":"B"}]}"#;
        assert!(
            Fixtures::parse(dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let bad_mobile = r#"{"users":[{"userId":"a","mobile":"123","displayName":"A"}]}"#;
        assert!(
            Fixtures::parse(bad_mobile)
                .unwrap_err()
                .to_string()
                .contains("mobile")
        );
        assert!(Fixtures::parse(r#"{"users":[{"userId":"a"}]}"#).is_err());
    }
}
