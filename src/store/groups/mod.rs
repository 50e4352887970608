//! Groups: membership changes, each stored together with its notification
//! message in the group conversation, in one transaction.

mod change;

use super::chat::{Appended, Heads, NewMessage, append_in};
use super::db::{Tx, on_pool, on_tx};
use super::{Result, Store, now_ms};
use crate::store::Refused;
use crate::wire::ws::{ConvType, Conversation};

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

pub use crate::wire::ws::{GroupInfo, GroupMember, GroupSummary};

/// What a change did: the group afterwards and its notification message.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    pub group: GroupInfo,
    pub notification: Appended,
}

async fn info_in(conn: &mut Tx<'_>, id: &str) -> Result<Option<GroupInfo>> {
    let Some((name, owner, created_at, dissolved_at)) = on_tx!(conn, c =>
        sqlx::query_as::<_, (String, String, i64, Option<i64>)>(
            "SELECT name, owner, created_at, dissolved_at FROM groups WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await)?
    else {
        return Ok(None);
    };
    let members: Vec<(String, String)> = on_tx!(conn, c => sqlx::query_as(
        "SELECT user_id, role FROM group_members WHERE group_id = $1
         ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, joined_at, user_id",
    )
    .bind(id)
    .fetch_all(&mut *c)
    .await)?;
    let members = members
        .into_iter()
        .map(|(user_id, role)| GroupMember { user_id, role })
        .collect();
    Ok(Some(GroupInfo {
        id: id.to_owned(),
        name,
        owner,
        created_at,
        dissolved_at,
        members,
    }))
}

/// Makes `heir` (a member) the owner of `group`.
pub(super) async fn make_owner(conn: &mut Tx<'_>, group: &str, heir: &str) -> Result<()> {
    on_tx!(conn, c => {
        sqlx::query("UPDATE group_members SET role = 'owner' WHERE group_id = $1 AND user_id = $2")
            .bind(group)
            .bind(heir)
            .execute(&mut *c)
            .await?;
        sqlx::query("UPDATE groups SET owner = $1 WHERE id = $2")
            .bind(heir)
            .bind(group)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

impl Store {
    /// Applies `change` by `actor` and appends its notification, atomically.
    /// `Ok(Err(..))` is a refusal: nothing changed.
    pub async fn change_group(
        &self,
        actor: &str,
        change: &GroupChange,
        heads: &mut Heads,
    ) -> Result<Result<GroupOutcome, Refused>> {
        let now = now_ms();
        let mut dedicated = self.writer_conn().await;
        let mut tx = self.begin_write(&mut dedicated).await?;
        let planned = match change::apply(&mut tx, actor, change, now).await? {
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
        // A read transaction: the group and its members as of one moment.
        let mut tx = self.begin_read().await?;
        let info = info_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// The groups `user` is a member of, by name.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<GroupSummary>> {
        let rows: Vec<(String, String, String, String, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT g.id, g.name, g.owner, m.role,
                    (SELECT COUNT(*) FROM group_members c WHERE c.group_id = g.id) AS member_count
             FROM group_members m JOIN groups g ON g.id = m.group_id
             WHERE m.user_id = $1 ORDER BY g.name, g.id",
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(id, name, owner, role, member_count)| GroupSummary {
                id,
                name,
                owner,
                role,
                member_count,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Why;
    use crate::store::testing::store;

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

        let refused = |r: Result<Result<GroupOutcome, Refused>>| r.unwrap().unwrap_err().why;
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
            Why::NotAllowed
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
            Why::NotAllowed
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
            Why::Missing
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
            Why::Invalid
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
            Why::Missing
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
            Why::Missing
        );
    }
}
