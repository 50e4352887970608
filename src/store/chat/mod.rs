//! Messages and inboxes: the broker's storage. This module reads them
//! (inbox pages, history) and holds the row helpers the other store modules
//! share; `append` writes them.

mod append;

pub(super) use append::append_in;
pub use append::{Appended, Delivered, Heads, NewMessage};

use serde_json::{Value, json};

use super::db::{Cols, on_pool};
use super::{Result, Store};
use crate::wire::ws::{ChatMessage, ConvType, Conversation, InboxEntry, Page, RawChatMessage};

/// Where `history` starts: before a message id, or before a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Before {
    Latest,
    MessageId(i64),
    ServerTime(i64),
}

/// The highest msgId a snapshot may bring in: half the 64-bit range, so an
/// imported store still has about 4.6·10^18 ids to hand out.
pub const MAX_IMPORTED_MSG_ID: i64 = i64::MAX / 2;

/// Writes rows (at most `limit` of them; the query asks for one more to
/// know whether more follow) into a page of at most `budget` bytes.
/// `push` adds one row to the page (see [`PageWriter::push`]).
pub(super) async fn write_page<R: Cols>(
    rows: &mut (impl futures_util::Stream<Item = sqlx::Result<R>> + Unpin),
    limit: u32,
    budget: usize,
    mut push: impl FnMut(&mut PageWriter, &R) -> Result<bool>,
) -> Result<Page> {
    use futures_util::TryStreamExt;
    let mut page = PageWriter::new(budget);
    let mut taken = 0;
    while let Some(row) = rows.try_next().await? {
        if taken == limit || !push(&mut page, &row)? {
            return Ok(page.finish(true));
        }
        taken += 1;
    }
    Ok(page.finish(false))
}

pub use crate::wire::ids::{msg_id, parse_msg_id};

pub(super) fn conv_key(sender: &str, conv: &Conversation) -> String {
    match conv.kind {
        ConvType::Single if sender <= conv.target.as_str() => format!("{sender}|{}", conv.target),
        ConvType::Single => format!("{}|{sender}", conv.target),
        ConvType::Group => conv.target.clone(),
    }
}

/// The columns `message_from_row` reads; a macro so queries stay static strings.
macro_rules! message_columns {
    () => {
        "m.id, m.sender, m.client_msg_id, m.conv_type, m.target, m.content, m.server_time"
    };
}
pub(super) use message_columns;

pub(super) fn message_from_row(row: &impl Cols) -> Result<ChatMessage> {
    let content = row.text("content")?;
    // Whatever depth the store holds (an import takes any), this parse
    // cannot fail a commit or a reply over it.
    let content = crate::wire::json::parse_capped(content, STORED_DEPTH)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
        .0;
    message_from_row_with(row, content)
}

/// A stored message with `content` in place of the stored one.
fn message_from_row_with(row: &impl Cols, content: Value) -> Result<ChatMessage> {
    let kind = match row.text("conv_type")? {
        "group" => ConvType::Group,
        _ => ConvType::Single,
    };
    Ok(ChatMessage {
        msg_id: msg_id(row.int("id")?),
        client_msg_id: row.opt_text("client_msg_id")?.map(str::to_owned),
        conv: Conversation {
            kind,
            target: row.text("target")?.to_owned(),
        },
        from: row.text("sender")?.to_owned(),
        content,
        server_time: row.int("server_time")?,
    })
}

/// Content bytes the dashboard's feed shows parsed; bigger is only named.
const FEED_CONTENT: usize = 4096;

/// Nesting kept when stored content is parsed (new content has at most
/// `MAX_CONTENT_DEPTH`; imported content may have more).
const STORED_DEPTH: usize = 100;

/// A stored message with its content as stored (no parsing, no copy).
pub(super) fn raw_message_from_row<R: Cols>(row: &R) -> Result<RawChatMessage<'_>> {
    let kind = match row.text("conv_type")? {
        "group" => ConvType::Group,
        _ => ConvType::Single,
    };
    let content = row.text("content")?;
    Ok(RawChatMessage {
        msg_id: msg_id(row.int("id")?),
        client_msg_id: row.opt_text("client_msg_id")?,
        conv: Conversation {
            kind,
            target: row.text("target")?.to_owned(),
        },
        from: row.text("sender")?,
        content: serde_json::from_str(content).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        server_time: row.int("server_time")?,
    })
}

/// A message row of either backend, where a closure cannot be generic.
pub(super) trait RawRow {
    fn raw(&self) -> Result<RawChatMessage<'_>>;
}

impl<R: Cols> RawRow for R {
    fn raw(&self) -> Result<RawChatMessage<'_>> {
        raw_message_from_row(self)
    }
}

/// Writes a [`Page`] item by item, up to a byte budget.
pub(super) struct PageWriter {
    json: String,
    count: usize,
    budget: usize,
}

impl PageWriter {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            json: String::from("["),
            count: 0,
            budget,
        }
    }

    /// Adds `item` unless it would take the page past the budget; the
    /// first item always fits, so a page is never empty while items remain.
    pub(super) fn push(&mut self, item: &impl serde::Serialize) -> Result<bool> {
        let text = serde_json::to_string(item).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        if self.count > 0 && self.json.len() + text.len() > self.budget {
            return Ok(false);
        }
        if self.count > 0 {
            self.json.push(',');
        }
        self.json.push_str(&text);
        self.count += 1;
        Ok(true)
    }

    pub(super) fn finish(mut self, more: bool) -> Page {
        self.json.push(']');
        Page {
            json: self.json,
            count: self.count,
            more,
        }
    }
}

impl Store {
    /// The user's inbox head: the highest seq, 0 when empty.
    pub async fn inbox_head(&self, user: &str) -> Result<i64> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE user_id = $1")
            .bind(user)
            .fetch_one(p)
            .await)?,
        )
    }

    /// Inbox entries with seq > `since`, in order, at most `limit` and at
    /// most `budget` bytes (but at least one); and whether more follow.
    /// Rows are streamed and written as they come, content as stored.
    pub async fn inbox_page(
        &self,
        user: &str,
        since: i64,
        limit: u32,
        budget: usize,
    ) -> Result<Page> {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            seq: i64,
            message: RawChatMessage<'a>,
        }
        let sql = concat!(
            "SELECT i.seq, ",
            message_columns!(),
            " FROM inbox i JOIN messages m ON m.id = i.message_id
             WHERE i.user_id = $1 AND i.seq > $2 ORDER BY i.seq LIMIT $3"
        );
        on_pool!(&self.pool, p => {
            let mut rows = sqlx::query(sql)
                .bind(user)
                .bind(since)
                .bind(limit as i64 + 1)
                .fetch(p);
            write_page(&mut rows, limit, budget, |page, row| {
                page.push(&Entry {
                    seq: row.int("seq")?,
                    message: raw_message_from_row(row)?,
                })
            })
            .await
        })
    }

    /// Inbox entries with seq > `since`, parsed (tests and snapshots).
    pub async fn inbox_since(
        &self,
        user: &str,
        since: i64,
        limit: u32,
    ) -> Result<(Vec<InboxEntry>, bool)> {
        let page = self.inbox_page(user, since, limit, usize::MAX).await?;
        let entries =
            serde_json::from_str(&page.json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((entries, page.more))
    }

    /// A conversation's messages as `user` sees them, newest first, at most
    /// `limit` and `budget` bytes (but at least one). In a group, only the
    /// messages `user` got while a member: those in their inbox.
    pub async fn history_page(
        &self,
        user: &str,
        conv: &Conversation,
        before: Before,
        limit: u32,
        budget: usize,
    ) -> Result<Page> {
        // Without a bound, `i64::MAX` stands in; the same static queries serve all three cases.
        let (by_id, by_time) = match before {
            Before::Latest => (i64::MAX, i64::MAX),
            Before::MessageId(id) => (id, i64::MAX),
            Before::ServerTime(t) => (i64::MAX, t),
        };
        let sql = match conv.kind {
            ConvType::Single => concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m WHERE m.conv_type = $1 AND m.conv_key = $2 AND m.id < $3 AND m.server_time < $4
                 ORDER BY m.id DESC LIMIT $5"
            ),
            // The conversation's index drives, newest first; each message is
            // looked up in the member's inbox (a join would let SQLite carry
            // `m.id < ?` over to the inbox and scan a range per message).
            ConvType::Group => concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m
                 WHERE m.conv_type = $1 AND m.conv_key = $2 AND m.id < $3 AND m.server_time < $4
                   AND EXISTS (SELECT 1 FROM inbox i WHERE i.user_id = $6 AND i.message_id = m.id)
                 ORDER BY m.id DESC LIMIT $5"
            ),
        };
        let key = conv_key(user, conv);
        on_pool!(&self.pool, p => {
            let mut q = sqlx::query(sql)
                .bind(conv.kind.as_str())
                .bind(&key)
                .bind(by_id)
                .bind(by_time)
                .bind(limit as i64 + 1);
            if conv.kind == ConvType::Group {
                q = q.bind(user);
            }
            let mut rows = q.fetch(p);
            write_page(&mut rows, limit, budget, |page, row| {
                page.push(&raw_message_from_row(row)?)
            })
            .await
        })
    }

    /// [`Store::history_page`], parsed (tests and snapshots).
    pub async fn history(
        &self,
        user: &str,
        conv: &Conversation,
        before: Before,
        limit: u32,
    ) -> Result<(Vec<ChatMessage>, bool)> {
        let page = self
            .history_page(user, conv, before, limit, usize::MAX)
            .await?;
        let messages =
            serde_json::from_str(&page.json).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((messages, page.more))
    }

    /// The newest messages of the whole store, newest first (the dev dashboard).
    pub async fn recent_messages(&self, limit: u32) -> Result<Vec<ChatMessage>> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m ORDER BY m.id DESC LIMIT $1"
        );
        on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(limit as i64)
            .fetch_all(p)
            .await?
            .iter()
            .map(|row| {
                let content = row.text("content")?;
                if content.len() <= FEED_CONTENT {
                    return message_from_row(row);
                }
                // A dashboard refreshes this often: big content is named, not parsed.
                #[derive(serde::Deserialize)]
                struct Kind {
                    #[serde(rename = "type")]
                    kind: Option<String>,
                }
                let kind = serde_json::from_str::<Kind>(content)
                    .ok()
                    .and_then(|k| k.kind)
                    .unwrap_or_else(|| "custom".into());
                let shown = json!({
                    "type": "text",
                    "text": format!("[{kind}: {} bytes]", content.len()),
                });
                message_from_row_with(row, shown)
            })
            .collect())
    }

    pub async fn is_group_member(&self, group: &str, user: &str) -> Result<bool> {
        let found: bool = on_pool!(&self.pool, p =>
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = $1 AND user_id = $2)")
                .bind(group)
                .bind(user)
                .fetch_one(p)
                .await)?;
        Ok(found)
    }

    /// The delivered position a device acknowledged, 0 if none.
    pub async fn delivered(&self, user: &str, client_id: &str) -> Result<i64> {
        let d: Option<i64> = on_pool!(&self.pool, p =>
            sqlx::query_scalar("SELECT delivered FROM devices WHERE user_id = $1 AND client_id = $2")
                .bind(user)
                .bind(client_id)
                .fetch_optional(p)
                .await)?;
        Ok(d.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{store, text};

    use crate::store::{Fixtures, Location, Refused, Why, now_ms};
    use serde_json::json;

    /// A checkpoint beside a busy writer must still let the WAL start over,
    /// or the file grows by everything ever written.
    #[tokio::test]
    async fn a_checkpoint_lets_the_wal_start_over_despite_a_busy_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&Location::File(dir.path().join("t.db")))
            .await
            .unwrap();
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        let mut heads = Heads::default();
        let batch: Vec<_> = (0..300).map(|_| text("alice", "bob", None)).collect();
        s.append(&batch, &[], &mut heads).await.unwrap();
        // A transaction open while the checkpoint starts and committed before
        // it ends, as the writer's always are under load: SQLite rewinds the
        // WAL only for a transaction that began with every frame copied.
        let mut tx = crate::store::db::Tx::Sqlite(
            s.sqlite_pool().begin_with("BEGIN IMMEDIATE").await.unwrap(),
        );
        let (_, advanced) = append_in(&mut tx, &batch, &mut heads, now_ms())
            .await
            .unwrap();
        let before = s
            .checkpoint_then(0, async { tx.commit().await.unwrap() })
            .await
            .unwrap();
        heads.advance(advanced);
        assert!(
            before > 20,
            "the first batch filled the WAL: {before} frames"
        );
        s.append(&[text("bob", "alice", None)], &[], &mut heads)
            .await
            .unwrap();
        let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(s.sqlite_pool())
            .await
            .unwrap();
        assert!(
            frames < 20,
            "the WAL did not start over: {frames} frames after one small commit (it had {before})"
        );
    }

    #[tokio::test]
    async fn history_pages_newest_first_in_one_conversation() {
        let s = store().await;
        let mut heads = Heads::default();
        let batch: Vec<_> = (0..5)
            .map(|i| {
                text(
                    if i % 2 == 0 { "alice" } else { "bob" },
                    if i % 2 == 0 { "bob" } else { "alice" },
                    None,
                )
            })
            .collect();
        s.append(&batch, &[], &mut heads).await.unwrap();
        s.append(&[text("alice", "carol", None)], &[], &mut heads)
            .await
            .unwrap();
        let conv = Conversation {
            kind: ConvType::Single,
            target: "bob".into(),
        };
        let (page, more) = s.history("alice", &conv, Before::Latest, 3).await.unwrap();
        assert_eq!(
            page.iter().map(|m| m.msg_id.as_str()).collect::<Vec<_>>(),
            ["m5", "m4", "m3"]
        );
        assert!(more);
        let (page, more) = s
            .history(
                "bob",
                &Conversation {
                    kind: ConvType::Single,
                    target: "alice".into(),
                },
                Before::MessageId(3),
                3,
            )
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|m| m.msg_id.as_str()).collect::<Vec<_>>(),
            ["m2", "m1"]
        );
        assert!(!more);
    }

    #[tokio::test]
    async fn group_messages_fan_out_to_members_only() {
        let s = store().await;
        let mut heads = Heads::default();
        let create = |name: &str, members: &[&str]| crate::store::GroupChange::Create {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        };
        let g1 = s
            .change_group("alice", &create("team", &["bob", "carol"]), &mut heads)
            .await
            .unwrap()
            .unwrap()
            .group
            .id;
        let g2 = s
            .change_group("bob", &create("other", &[]), &mut heads)
            .await
            .unwrap()
            .unwrap()
            .group
            .id;
        let to_group = |from: &str| NewMessage {
            sender: from.into(),
            conv: Conversation {
                kind: ConvType::Group,
                target: g1.clone(),
            },
            content: json!({"type":"text","text":"hi all"}),
            client_msg_id: None,
            recipients: None,
        };
        let out = s
            .append(&[to_group("alice"), to_group("robot")], &[], &mut heads)
            .await
            .unwrap();
        let Appended::Stored { seqs, .. } = &out[0] else {
            panic!()
        };
        // Seqs continue after the "created" notification each member got.
        assert_eq!(
            seqs,
            &[
                ("alice".to_string(), 2),
                ("bob".to_string(), 3),
                ("carol".to_string(), 2)
            ]
        );
        assert!(matches!(
            &out[1],
            Appended::Rejected(Refused {
                why: Why::NotAllowed,
                ..
            })
        ));
        assert!(s.is_group_member(&g1, "carol").await.unwrap());
        assert!(!s.is_group_member(&g2, "carol").await.unwrap());
    }

    #[tokio::test]
    async fn pages_stop_at_the_byte_budget_and_the_cursor_finds_the_rest() {
        let s = store().await;
        let mut heads = Heads::default();
        let batch: Vec<_> = (0..20)
            .map(|i| NewMessage {
                content: json!({"type": "text", "text": format!("{i:04}{}", "x".repeat(1000))}),
                ..text("alice", "bob", None)
            })
            .collect();
        s.append(&batch, &[], &mut heads).await.unwrap();
        let (mut since, mut seen, mut pages) = (0, Vec::new(), 0);
        loop {
            let page = s.inbox_page("bob", since, 1000, 3000).await.unwrap();
            let entries: Vec<InboxEntry> = serde_json::from_str(&page.json).unwrap();
            assert_eq!(entries.len(), page.count);
            assert!(page.json.len() <= 3000, "{} bytes", page.json.len());
            seen.extend(entries.iter().map(|e| e.seq));
            since = entries.last().unwrap().seq;
            pages += 1;
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, (1..=20).collect::<Vec<_>>());
        assert!(pages >= 7, "{pages} pages");
        // One message over the budget still comes, alone.
        let page = s.inbox_page("bob", 0, 1000, 10).await.unwrap();
        assert_eq!((page.count, page.more), (1, true));
        let page = s
            .history_page("alice", &batch[0].conv, Before::Latest, 1000, 3000)
            .await
            .unwrap();
        assert!(page.more && page.count == 2, "{}", page.count);
    }

    #[tokio::test]
    async fn group_history_is_what_the_member_got_while_a_member() {
        let s = store().await;
        let mut heads = Heads::default();
        async fn change(s: &Store, heads: &mut Heads, c: crate::store::GroupChange) -> String {
            let out = s.change_group("alice", &c, heads).await.unwrap().unwrap();
            out.group.id
        }
        let g = change(
            &s,
            &mut heads,
            crate::store::GroupChange::Create {
                name: "team".into(),
                members: vec!["bob".into()],
            },
        )
        .await;
        let say = |t: &str| NewMessage {
            sender: "alice".into(),
            conv: Conversation {
                kind: ConvType::Group,
                target: g.clone(),
            },
            content: json!({"type": "text", "text": t}),
            client_msg_id: None,
            recipients: None,
        };
        let members = |m: &[&str]| m.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        s.append(&[say("before carol")], &[], &mut heads)
            .await
            .unwrap();
        change(
            &s,
            &mut heads,
            crate::store::GroupChange::Add {
                group: g.clone(),
                members: members(&["carol"]),
            },
        )
        .await;
        s.append(&[say("first period")], &[], &mut heads)
            .await
            .unwrap();
        change(
            &s,
            &mut heads,
            crate::store::GroupChange::Remove {
                group: g.clone(),
                members: members(&["carol"]),
            },
        )
        .await;
        s.append(&[say("while away")], &[], &mut heads)
            .await
            .unwrap();
        change(
            &s,
            &mut heads,
            crate::store::GroupChange::Add {
                group: g.clone(),
                members: members(&["carol"]),
            },
        )
        .await;
        s.append(&[say("second period")], &[], &mut heads)
            .await
            .unwrap();
        let texts = |user: &'static str| {
            let s = s.clone();
            let conv = say("").conv;
            async move {
                let (page, _) = s.history(user, &conv, Before::Latest, 100).await.unwrap();
                page.iter()
                    .filter_map(|m| m.content["text"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(texts("carol").await, ["second period", "first period"]);
        assert_eq!(
            texts("bob").await,
            [
                "second period",
                "while away",
                "first period",
                "before carol"
            ]
        );
    }

    #[test]
    fn msg_ids_round_trip() {
        assert_eq!(parse_msg_id(&msg_id(42)), Some(42));
        assert_eq!(parse_msg_id("42"), None);
        assert_eq!(parse_msg_id("m0"), None);
        assert_eq!(parse_msg_id("mx"), None);
    }
}
