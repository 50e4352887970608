//! Read positions, delivery receipts and the conversation list.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use super::chat::{conv_key, message_columns, msg_id, raw_message_from_row, write_page};
use super::{Result, Store};
use crate::wire::ws::{ConvType, Conversation, Page, RawChatMessage};

pub use crate::wire::ws::ConversationEntry;

/// Someone whose messages a `recv` just covered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveredTo {
    pub sender: String,
    /// The conversation as the sender sees it.
    pub conv: Conversation,
    /// The newest of the sender's messages covered.
    pub up_to: i64,
}

/// The conversation `key` of type `kind` as `user` sees it.
fn seen_by(user: &str, kind: &str, key: &str) -> Conversation {
    match kind {
        "group" => Conversation {
            kind: ConvType::Group,
            target: key.to_owned(),
        },
        _ => {
            let (a, b) = key.split_once('|').unwrap_or((key, key));
            Conversation {
                kind: ConvType::Single,
                target: if a == user { b } else { a }.to_owned(),
            }
        }
    }
}

impl Store {
    /// My conversations, most recent first, with unread counts: at most
    /// `limit` and `budget` bytes (but at least one), those whose last
    /// message is older than `before` (a message id) when given.
    pub async fn conversations_page(
        &self,
        user: &str,
        limit: u32,
        before: Option<i64>,
        budget: usize,
    ) -> Result<Page> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry<'a> {
            conv: Conversation,
            last_message: RawChatMessage<'a>,
            unread: i64,
            muted: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            read_up_to: Option<String>,
        }
        let rows = sqlx::query(
            "SELECT m.conv_type, m.conv_key, MAX(m.id) AS last_id,
                    SUM(CASE WHEN m.id > COALESCE(cs.read_up_to, 0) AND m.sender != ?1 THEN 1 ELSE 0 END) AS unread,
                    COALESCE(cs.muted, 0) AS muted, COALESCE(cs.read_up_to, 0) AS read_up_to
             FROM inbox i JOIN messages m ON m.id = i.message_id
             LEFT JOIN conv_state cs ON cs.user_id = ?1 AND cs.conv_type = m.conv_type AND cs.conv_key = m.conv_key
             WHERE i.user_id = ?1
             GROUP BY m.conv_type, m.conv_key HAVING MAX(m.id) < ?3 ORDER BY last_id DESC LIMIT ?2",
        )
        .bind(user)
        .bind(limit as i64 + 1)
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get("last_id"))
            .collect::<sqlx::Result<_>>()?;
        // The last messages stream in the list's order, one at a time.
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m WHERE m.id IN (SELECT value FROM json_each(?)) ORDER BY m.id DESC"
        );
        let mut last = sqlx::query(sql)
            .bind(json!(ids).to_string())
            .fetch(&self.pool);
        let mut summaries = rows.iter();
        write_page(&mut last, limit, budget, |page, message| {
            let r = summaries.next().ok_or(sqlx::Error::RowNotFound)?;
            let read: i64 = r.try_get("read_up_to")?;
            page.push(&Entry {
                conv: seen_by(user, r.try_get("conv_type")?, r.try_get("conv_key")?),
                last_message: raw_message_from_row(message)?,
                unread: r.try_get("unread")?,
                muted: r.try_get::<i64, _>("muted")? != 0,
                read_up_to: (read > 0).then(|| msg_id(read)),
            })
        })
        .await
    }

    /// [`Store::conversations_page`]'s first page, parsed (tests).
    pub async fn conversations(&self, user: &str, limit: u32) -> Result<Vec<ConversationEntry>> {
        let page = self
            .conversations_page(user, limit, None, usize::MAX)
            .await?;
        serde_json::from_str(&page.json)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))
            .map_err(Into::into)
    }

    /// Whether message `id` belongs to `conv` (as `user` addresses it).
    pub async fn message_in_conv(&self, user: &str, conv: &Conversation, id: i64) -> Result<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM messages WHERE id = ? AND conv_type = ? AND conv_key = ?",
        )
        .bind(id)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Moves `user`'s read position in `conv` forward to message `id`;
    /// returns the position now (it never moves back).
    pub async fn mark_read(&self, user: &str, conv: &Conversation, id: i64) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO conv_state (user_id, conv_type, conv_key, read_up_to) VALUES (?, ?, ?, ?)
             ON CONFLICT(user_id, conv_type, conv_key) DO UPDATE SET read_up_to = MAX(read_up_to, excluded.read_up_to)
             RETURNING read_up_to",
        )
        .bind(user)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .bind(id)
        .fetch_one(&self.pool)
        .await.map_err(Into::into)
    }

    pub async fn set_muted(&self, user: &str, conv: &Conversation, muted: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO conv_state (user_id, conv_type, conv_key, muted) VALUES (?, ?, ?, ?)
             ON CONFLICT(user_id, conv_type, conv_key) DO UPDATE SET muted = excluded.muted",
        )
        .bind(user)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .bind(muted as i64)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(Into::into)
    }

    /// The highest inbox seq any device of `user` has acknowledged.
    pub async fn user_delivered(&self, user: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(delivered), 0) FROM devices WHERE user_id = ?")
            .bind(user)
            .fetch_one(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Whose messages sit in `user`'s inbox between seqs `after` (exclusive)
    /// and `up_to`: one entry per sender and conversation.
    pub async fn delivered_between(
        &self,
        user: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<DeliveredTo>> {
        let rows = sqlx::query(
            "SELECT m.sender, m.conv_type, m.conv_key, MAX(m.id) AS up_to
             FROM inbox i JOIN messages m ON m.id = i.message_id
             WHERE i.user_id = ? AND i.seq > ? AND i.seq <= ? AND m.sender != ?
             GROUP BY m.sender, m.conv_type, m.conv_key",
        )
        .bind(user)
        .bind(after)
        .bind(up_to)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let sender: String = r.try_get("sender")?;
                Ok(DeliveredTo {
                    conv: seen_by(&sender, r.try_get("conv_type")?, r.try_get("conv_key")?),
                    sender,
                    up_to: r.try_get("up_to")?,
                })
            })
            .collect()
    }

    /// The members of a group (empty for unknown or dissolved groups).
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = ?")
            .bind(group)
            .fetch_all(&self.pool)
            .await
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_are_seen_from_each_side() {
        assert_eq!(seen_by("alice", "single", "alice|bob").target, "bob");
        assert_eq!(seen_by("bob", "single", "alice|bob").target, "alice");
        assert_eq!(seen_by("alice", "single", "alice|alice").target, "alice");
        assert_eq!(
            seen_by("alice", "group", "g1"),
            Conversation {
                kind: ConvType::Group,
                target: "g1".into()
            }
        );
    }
}
