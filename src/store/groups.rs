//! Groups: membership changes, each stored together with its notification
//! message in the group conversation, in one transaction.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::SqliteConnection;

use super::chat::{Appended, Heads, NewMessage, append_in};
use super::{Result, Store, now_ms};
use crate::wire::ws::{ConvType, Conversation, code};

/// A membership change asked for by `actor`.
#[derive(Debug, Clone)]
pub enum GroupChange {
    Create {
        name: String,
        members: Vec<String>,
    },
    Add {
        group: String,
        members: Vec<String>,
    },
    Remove {
        group: String,
        members: Vec<String>,
    },
    Leave {
        group: String,
    },
    Dissolve {
        group: String,
    },
    Rename {
        group: String,
        name: String,
    },
    /// Makes a member an admin, or an admin a plain member (owner only).
    SetAdmin {
        group: String,
        user: String,
        admin: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    pub user_id: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dissolved_at: Option<i64>,
    pub members: Vec<GroupMember>,
}

/// One of my groups, as `group.list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub role: String,
    pub member_count: i64,
}

/// A refused change: an error code of the protocol and a reason.
pub type Refusal = (i32, String);

/// What a change did: the group afterwards and its notification message.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub group: GroupInfo,
    pub notification: Appended,
}

fn check_name(name: &str) -> Result<String, Refusal> {
    let name = name.trim();
    crate::wire::limits::check_text("a group name", name, crate::wire::limits::MAX_GROUP_NAME)
        .map_err(|e| (code::BAD_REQUEST, e))?;
    Ok(name.to_owned())
}

async fn info_in(conn: &mut SqliteConnection, id: &str) -> Result<Option<GroupInfo>> {
    let Some((name, owner, created_at, dissolved_at)) =
        sqlx::query_as::<_, (String, String, i64, Option<i64>)>(
            "SELECT name, owner, created_at, dissolved_at FROM groups WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let members = sqlx::query_as(
        "SELECT user_id, role FROM group_members WHERE group_id = ?
         ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, joined_at, user_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(GroupInfo {
        id: id.to_owned(),
        name,
        owner,
        created_at,
        dissolved_at,
        members,
    }))
}

async fn unknown_users(conn: &mut SqliteConnection, users: &[String]) -> Result<Vec<String>> {
    let known: HashSet<String> =
        sqlx::query_scalar("SELECT id FROM users WHERE id IN (SELECT value FROM json_each(?))")
            .bind(json!(users).to_string())
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    Ok(users
        .iter()
        .filter(|u| !known.contains(*u))
        .cloned()
        .collect())
}

async fn insert_members(
    conn: &mut SqliteConnection,
    group: &str,
    users: &[String],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, role, joined_at)
         SELECT ?, value, 'member', ? FROM json_each(?)",
    )
    .bind(group)
    .bind(now)
    .bind(json!(users).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn delete_members(conn: &mut SqliteConnection, group: &str, users: &[String]) -> Result<()> {
    sqlx::query("DELETE FROM group_members WHERE group_id = ? AND user_id IN (SELECT value FROM json_each(?))")
        .bind(group)
        .bind(json!(users).to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes `heir` (a member) the owner of `group`.
pub(super) async fn make_owner(conn: &mut SqliteConnection, group: &str, heir: &str) -> Result<()> {
    sqlx::query("UPDATE group_members SET role = 'owner' WHERE group_id = ? AND user_id = ?")
        .bind(group)
        .bind(heir)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE groups SET owner = ? WHERE id = ?")
        .bind(heir)
        .bind(group)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn dedup(users: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    users
        .iter()
        .filter(|u| !u.is_empty() && seen.insert(u.as_str()))
        .cloned()
        .collect()
}

impl Store {
    /// Applies `change` by `actor` and appends its notification, atomically.
    /// `Ok(Err(..))` is a refusal: nothing changed.
    pub async fn change_group(
        &self,
        actor: &str,
        change: &GroupChange,
        heads: &mut Heads,
    ) -> Result<Result<GroupOutcome, Refusal>> {
        let now = now_ms();
        let mut dedicated = self.writer_conn().await;
        let mut tx = self.begin_write(&mut dedicated).await?;
        let planned = match plan(&mut tx, actor, change, now).await? {
            Ok(p) => p,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let note = NewMessage {
            sender: actor.to_owned(),
            conv: Conversation {
                kind: ConvType::Group,
                target: planned.group.clone(),
            },
            content: planned.content,
            client_msg_id: None,
            recipients: Some(planned.recipients),
        };
        let (mut out, advanced) = append_in(&mut tx, &[note], heads, now).await?;
        let group = info_in(&mut tx, &planned.group)
            .await?
            .expect("the group exists");
        tx.commit().await?;
        heads.advance(advanced);
        Ok(Ok(GroupOutcome {
            group,
            notification: out.remove(0),
        }))
    }

    pub async fn group_info(&self, id: &str) -> Result<Option<GroupInfo>> {
        let mut conn = self.pool.acquire().await?;
        info_in(&mut conn, id).await
    }

    /// The groups `user` is a member of, by name.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<GroupSummary>> {
        sqlx::query_as(
            "SELECT g.id, g.name, g.owner, m.role,
                    (SELECT COUNT(*) FROM group_members c WHERE c.group_id = g.id) AS member_count
             FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.user_id = ? ORDER BY g.name, g.id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
    }
}

/// A validated change, applied inside the transaction, and what to announce.
struct Planned {
    group: String,
    content: serde_json::Value,
    recipients: Vec<String>,
}

async fn plan(
    conn: &mut SqliteConnection,
    actor: &str,
    change: &GroupChange,
    now: i64,
) -> Result<Result<Planned, Refusal>> {
    macro_rules! refuse {
        ($code:expr, $($fmt:tt)*) => { return Ok(Err(($code, format!($($fmt)*)))) };
    }
    let group_id = match change {
        GroupChange::Create { .. } => format!("g{}", crate::token::random_token(5)),
        GroupChange::Add { group, .. }
        | GroupChange::Remove { group, .. }
        | GroupChange::Leave { group }
        | GroupChange::Dissolve { group }
        | GroupChange::Rename { group, .. }
        | GroupChange::SetAdmin { group, .. } => group.clone(),
    };
    let before = match change {
        GroupChange::Create { .. } => None,
        _ => match info_in(conn, &group_id).await? {
            Some(g) if g.dissolved_at.is_some() => {
                refuse!(code::NOT_FOUND, "group {group_id:?} was dissolved")
            }
            Some(g) => Some(g),
            None => refuse!(code::NOT_FOUND, "no group {group_id:?}"),
        },
    };
    let role = before
        .as_ref()
        .and_then(|g| g.members.iter().find(|m| m.user_id == actor))
        .map(|m| m.role.clone());
    let by_admin = actor == crate::wire::ids::ADMIN_ACTOR;
    let role = if by_admin {
        Some("owner".to_owned())
    } else {
        role
    };
    if before.is_some() && role.is_none() {
        refuse!(
            code::FORBIDDEN,
            "you are not a member of group {group_id:?}"
        );
    }
    let is_manager = matches!(role.as_deref(), Some("owner" | "admin"));
    let members: Vec<String> = before
        .iter()
        .flat_map(|g| g.members.iter().map(|m| m.user_id.clone()))
        .collect();

    let (content, recipients) = match change {
        GroupChange::Create {
            name,
            members: invited,
        } => {
            let name = match check_name(name) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            let invited: Vec<String> = dedup(invited).into_iter().filter(|u| u != actor).collect();
            let unknown = unknown_users(conn, &invited).await?;
            if !unknown.is_empty() {
                refuse!(code::NOT_FOUND, "no such users: {}", unknown.join(", "));
            }
            sqlx::query("INSERT INTO groups (id, name, owner, created_at) VALUES (?, ?, ?, ?)")
                .bind(&group_id)
                .bind(&name)
                .bind(actor)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES (?, ?, 'owner', ?)")
                .bind(&group_id)
                .bind(actor)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            insert_members(conn, &group_id, &invited, now).await?;
            let all: Vec<String> = std::iter::once(actor.to_owned()).chain(invited).collect();
            (
                json!({"type": "notification", "kind": "created", "actor": actor, "name": name, "members": all}),
                all,
            )
        }
        GroupChange::Add {
            members: invited, ..
        } => {
            let new: Vec<String> = dedup(invited)
                .into_iter()
                .filter(|u| !members.contains(u))
                .collect();
            if new.is_empty() {
                refuse!(code::BAD_REQUEST, "everyone named is already a member");
            }
            let unknown = unknown_users(conn, &new).await?;
            if !unknown.is_empty() {
                refuse!(code::NOT_FOUND, "no such users: {}", unknown.join(", "));
            }
            insert_members(conn, &group_id, &new, now).await?;
            let all = members.iter().cloned().chain(new.iter().cloned()).collect();
            (
                json!({"type": "notification", "kind": "member_added", "actor": actor, "members": new}),
                all,
            )
        }
        GroupChange::Remove {
            members: removed, ..
        } => {
            if !is_manager {
                refuse!(
                    code::FORBIDDEN,
                    "only the owner or an admin can remove members"
                );
            }
            let removed = dedup(removed);
            let g = before.as_ref().expect("checked");
            for u in &removed {
                match g.members.iter().find(|m| &m.user_id == u) {
                    None => refuse!(
                        code::NOT_FOUND,
                        "{u:?} is not a member of group {group_id:?}"
                    ),
                    Some(m) if m.role == "owner" => refuse!(
                        code::FORBIDDEN,
                        "the owner cannot be removed; the owner can dissolve the group"
                    ),
                    Some(m) if m.role == "admin" && role.as_deref() != Some("owner") => {
                        refuse!(code::FORBIDDEN, "only the owner can remove an admin")
                    }
                    Some(_) => {}
                }
            }
            if removed.is_empty() {
                refuse!(code::BAD_REQUEST, "name at least one member to remove");
            }
            delete_members(conn, &group_id, &removed).await?;
            // The removed hear of it too, so their timeline shows why it stopped.
            (
                json!({"type": "notification", "kind": "member_removed", "actor": actor, "members": removed}),
                members.clone(),
            )
        }
        GroupChange::Leave { .. } => {
            delete_members(conn, &group_id, &[actor.to_owned()]).await?;
            let mut note =
                json!({"type": "notification", "kind": "left", "actor": actor, "members": [actor]});
            let rest: Vec<&GroupMember> = before
                .as_ref()
                .expect("checked")
                .members
                .iter()
                .filter(|m| m.user_id != actor)
                .collect();
            if rest.is_empty() {
                sqlx::query("UPDATE groups SET dissolved_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(&group_id)
                    .execute(&mut *conn)
                    .await?;
                note["dissolved"] = json!(true);
            } else if role.as_deref() == Some("owner") {
                // Ownership passes to the first admin, else the longest-standing member.
                let heir = rest[0].user_id.clone();
                make_owner(conn, &group_id, &heir).await?;
                note["owner"] = json!(heir);
            }
            (note, members.clone())
        }
        GroupChange::Dissolve { .. } => {
            if role.as_deref() != Some("owner") {
                refuse!(code::FORBIDDEN, "only the owner can dissolve the group");
            }
            sqlx::query("DELETE FROM group_members WHERE group_id = ?")
                .bind(&group_id)
                .execute(&mut *conn)
                .await?;
            sqlx::query("UPDATE groups SET dissolved_at = ? WHERE id = ?")
                .bind(now)
                .bind(&group_id)
                .execute(&mut *conn)
                .await?;
            (
                json!({"type": "notification", "kind": "dissolved", "actor": actor}),
                members.clone(),
            )
        }
        GroupChange::Rename { name, .. } => {
            if !is_manager {
                refuse!(
                    code::FORBIDDEN,
                    "only the owner or an admin can rename the group"
                );
            }
            let name = match check_name(name) {
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE groups SET name = ? WHERE id = ?")
                .bind(&name)
                .bind(&group_id)
                .execute(&mut *conn)
                .await?;
            (
                json!({"type": "notification", "kind": "renamed", "actor": actor, "name": name}),
                members.clone(),
            )
        }
        GroupChange::SetAdmin { user, admin, .. } => {
            if role.as_deref() != Some("owner") {
                refuse!(
                    code::FORBIDDEN,
                    "only the owner can appoint or dismiss admins"
                );
            }
            let target = before
                .as_ref()
                .expect("checked")
                .members
                .iter()
                .find(|m| &m.user_id == user);
            match target {
                None => refuse!(
                    code::NOT_FOUND,
                    "{user:?} is not a member of group {group_id:?}"
                ),
                Some(m) if m.role == "owner" => {
                    refuse!(code::BAD_REQUEST, "the owner's role cannot change")
                }
                Some(_) => {}
            }
            sqlx::query("UPDATE group_members SET role = ? WHERE group_id = ? AND user_id = ?")
                .bind(if *admin { "admin" } else { "member" })
                .bind(&group_id)
                .bind(user)
                .execute(&mut *conn)
                .await?;
            let kind = if *admin {
                "admin_added"
            } else {
                "admin_removed"
            };
            (
                json!({"type": "notification", "kind": kind, "actor": actor, "members": [user]}),
                members.clone(),
            )
        }
    };
    Ok(Ok(Planned {
        group: group_id,
        content,
        recipients,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fixtures, Location};

    async fn store() -> Store {
        let s = Store::open(&Location::Memory).await.unwrap();
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        s
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn lifecycle_with_notifications_and_refusals() {
        let s = store().await;
        let mut heads = Heads::default();
        let created = s
            .change_group(
                "alice",
                &GroupChange::Create {
                    name: " team ".into(),
                    members: names(&["bob", "alice", "bob"]),
                },
                &mut heads,
            )
            .await
            .unwrap()
            .unwrap();
        let g = created.group.id.clone();
        assert_eq!(created.group.name, "team");
        assert_eq!(
            created
                .group
                .members
                .iter()
                .map(|m| (m.user_id.as_str(), m.role.as_str()))
                .collect::<Vec<_>>(),
            [("alice", "owner"), ("bob", "member")]
        );
        let Appended::Stored { message, seqs } = &created.notification else {
            panic!()
        };
        assert_eq!(message.content["kind"], "created");
        assert_eq!(seqs.len(), 2);

        let refused = |r: Result<Result<GroupOutcome, Refusal>>| r.unwrap().unwrap_err().0;
        assert_eq!(
            refused(
                s.change_group(
                    "carol",
                    &GroupChange::Add {
                        group: g.clone(),
                        members: names(&["carol"])
                    },
                    &mut heads
                )
                .await
            ),
            code::FORBIDDEN
        );
        assert_eq!(
            refused(
                s.change_group(
                    "bob",
                    &GroupChange::Remove {
                        group: g.clone(),
                        members: names(&["alice"])
                    },
                    &mut heads
                )
                .await
            ),
            code::FORBIDDEN
        );
        assert_eq!(
            refused(
                s.change_group(
                    "alice",
                    &GroupChange::Add {
                        group: g.clone(),
                        members: names(&["zed"])
                    },
                    &mut heads
                )
                .await
            ),
            code::NOT_FOUND
        );
        assert_eq!(
            refused(
                s.change_group(
                    "alice",
                    &GroupChange::Rename {
                        group: g.clone(),
                        name: "  ".into()
                    },
                    &mut heads
                )
                .await
            ),
            code::BAD_REQUEST
        );
        assert_eq!(
            refused(
                s.change_group(
                    "alice",
                    &GroupChange::Leave {
                        group: "nope".into()
                    },
                    &mut heads
                )
                .await
            ),
            code::NOT_FOUND
        );

        s.change_group(
            "bob",
            &GroupChange::Add {
                group: g.clone(),
                members: names(&["carol"]),
            },
            &mut heads,
        )
        .await
        .unwrap()
        .unwrap();
        let removed = s
            .change_group(
                "alice",
                &GroupChange::Remove {
                    group: g.clone(),
                    members: names(&["carol"]),
                },
                &mut heads,
            )
            .await
            .unwrap()
            .unwrap();
        let Appended::Stored { seqs, .. } = &removed.notification else {
            panic!()
        };
        assert!(
            seqs.iter().any(|(u, _)| u == "carol"),
            "the removed member is told"
        );
        assert!(!s.is_group_member(&g, "carol").await.unwrap());

        // The owner leaves: bob inherits.
        let left = s
            .change_group(
                "alice",
                &GroupChange::Leave { group: g.clone() },
                &mut heads,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(left.group.owner, "bob");
        let Appended::Stored { message, .. } = &left.notification else {
            panic!()
        };
        assert_eq!(message.content["owner"], "bob");
        assert_eq!(s.groups_of("bob").await.unwrap()[0].role, "owner");
        s.change_group(
            "bob",
            &GroupChange::Dissolve { group: g.clone() },
            &mut heads,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(s.groups_of("bob").await.unwrap().is_empty());
        assert_eq!(
            refused(
                s.change_group(
                    "bob",
                    &GroupChange::Rename {
                        group: g.clone(),
                        name: "x".into()
                    },
                    &mut heads
                )
                .await
            ),
            code::NOT_FOUND
        );
    }
}
