//! Read positions, delivery receipts and the conversation list.

use super::chat::{PageWriter, RawRow, conv_key, message_columns, msg_id, write_page};
use super::db::{Pool, on_pool};
use super::{Result, Store};
use crate::wire::ws::{ConvType, Conversation, Page, RawChatMessage};
use serde::Serialize;
use serde_json::json;

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
        #[derive(sqlx::FromRow)]
        struct Summary {
            conv_type: String,
            conv_key: String,
            last_id: i64,
            unread: i64,
            muted: i64,
            read_up_to: i64,
        }
        let rows: Vec<Summary> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT m.conv_type, m.conv_key, MAX(m.id) AS last_id,
                    SUM(CASE WHEN m.id > COALESCE(cs.read_up_to, 0) AND m.sender != $1 THEN 1 ELSE 0 END) AS unread,
                    COALESCE(cs.muted, 0) AS muted, COALESCE(cs.read_up_to, 0) AS read_up_to
             FROM inbox i JOIN messages m ON m.id = i.message_id
             LEFT JOIN conv_state cs ON cs.user_id = $1 AND cs.conv_type = m.conv_type AND cs.conv_key = m.conv_key
             WHERE i.user_id = $1
             GROUP BY m.conv_type, m.conv_key, cs.muted, cs.read_up_to HAVING MAX(m.id) < $3 ORDER BY last_id DESC LIMIT $2",
        )
        .bind(user)
        .bind(limit as i64 + 1)
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(p)
        .await)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.last_id).collect();
        // The last messages stream in the list's order, one at a time.
        let mut summaries = rows.iter();
        let mut push = |page: &mut PageWriter, message: &dyn RawRow| {
            let r = summaries.next().ok_or(sqlx::Error::RowNotFound)?;
            page.push(&Entry {
                conv: seen_by(user, &r.conv_type, &r.conv_key),
                last_message: message.raw()?,
                unread: r.unread,
                muted: r.muted != 0,
                read_up_to: (r.read_up_to > 0).then(|| msg_id(r.read_up_to)),
            })
        };
        match &self.pool {
            Pool::Sqlite(p) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.id IN (SELECT value FROM json_each($1)) ORDER BY m.id DESC"
                );
                let mut last = sqlx::query(sql).bind(json!(ids).to_string()).fetch(p);
                write_page(&mut last, limit, budget, |page, m| push(page, m)).await
            }
            Pool::Postgres(p) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m WHERE m.id = ANY($1) ORDER BY m.id DESC"
                );
                let mut last = sqlx::query(sql).bind(&ids).fetch(p);
                write_page(&mut last, limit, budget, |page, m| push(page, m)).await
            }
        }
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
        Ok(on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE id = $1 AND conv_type = $2 AND conv_key = $3)",
        )
        .bind(id)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .fetch_one(p)
        .await)?)
    }

    /// Moves `user`'s read position in `conv` forward to message `id`;
    /// returns the position now (it never moves back).
    pub async fn mark_read(&self, user: &str, conv: &Conversation, id: i64) -> Result<i64> {
        let sql = match &self.pool {
            Pool::Sqlite(_) => {
                "INSERT INTO conv_state (user_id, conv_type, conv_key, read_up_to) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(user_id, conv_type, conv_key) DO UPDATE SET read_up_to = MAX(read_up_to, excluded.read_up_to)
                 RETURNING read_up_to"
            }
            Pool::Postgres(_) => {
                "INSERT INTO conv_state (user_id, conv_type, conv_key, read_up_to) VALUES ($1, $2, $3, $4)
                 ON CONFLICT(user_id, conv_type, conv_key) DO UPDATE SET read_up_to = GREATEST(conv_state.read_up_to, excluded.read_up_to)
                 RETURNING read_up_to"
            }
        };
        on_pool!(&self.pool, p => sqlx::query_scalar(sql)
        .bind(user)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .bind(id)
        .fetch_one(p)
        .await)
        .map_err(Into::into)
    }

    pub async fn set_muted(&self, user: &str, conv: &Conversation, muted: bool) -> Result<()> {
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO conv_state (user_id, conv_type, conv_key, muted) VALUES ($1, $2, $3, $4)
             ON CONFLICT(user_id, conv_type, conv_key) DO UPDATE SET muted = excluded.muted",
        )
        .bind(user)
        .bind(conv.kind.as_str())
        .bind(conv_key(user, conv))
        .bind(muted as i64)
        .execute(p)
        .await.map(|r| r.rows_affected()))
        .map(drop)
        .map_err(Into::into)
    }

    /// The highest inbox seq any device of `user` has acknowledged.
    pub async fn user_delivered(&self, user: &str) -> Result<i64> {
        on_pool!(&self.pool, p => sqlx::query_scalar("SELECT COALESCE(MAX(delivered), 0) FROM devices WHERE user_id = $1")
            .bind(user)
            .fetch_one(p)
            .await)
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
        let rows: Vec<(String, String, String, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT m.sender, m.conv_type, m.conv_key, MAX(m.id) AS up_to
             FROM inbox i JOIN messages m ON m.id = i.message_id
             WHERE i.user_id = $1 AND i.seq > $2 AND i.seq <= $3 AND m.sender != $4
             GROUP BY m.sender, m.conv_type, m.conv_key",
        )
        .bind(user)
        .bind(after)
        .bind(up_to)
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|(sender, kind, key, up_to)| DeliveredTo {
                conv: seen_by(&sender, &kind, &key),
                sender,
                up_to,
            })
            .collect())
    }

    /// The members of a group (empty for unknown or dissolved groups).
    pub async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        on_pool!(&self.pool, p => sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = $1")
            .bind(group)
            .fetch_all(p)
            .await)
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
