//! Messages, inboxes and groups: the broker's storage.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};

use super::{Result, Store, now_ms};
use crate::wire::ws::{
    ChatMessage, ConvType, Conversation, InboxEntry, Page, RawChatMessage, code,
};

/// A message to append, already validated by the connection.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub sender: String,
    pub conv: Conversation,
    pub content: Value,
    pub client_msg_id: Option<String>,
    /// Server-made messages (group notifications) name their recipients;
    /// `None` means the conversation's participants, checked.
    pub recipients: Option<Vec<String>>,
}

/// What appending one message did.
#[derive(Debug, Clone)]
pub enum Appended {
    /// Stored, with the seq it got in each recipient's inbox (sender included).
    Stored {
        message: ChatMessage,
        seqs: Vec<(String, i64)>,
    },
    /// Already stored under the same (sender, clientMsgId): nothing new.
    Duplicate {
        message: ChatMessage,
        sender_seq: i64,
    },
    /// Refused; nothing stored.
    Rejected { code: i32, reason: String },
}

/// A device's delivery acknowledgement (`recv`).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub user_id: String,
    pub client_id: String,
    pub platform: i32,
    pub up_to: i64,
}

/// What the single writer knows of the store: `MAX(seq)` per user, and the
/// next message id (the writer is the only one adding messages, so it can
/// choose ids instead of asking SQLite for them row by row).
#[derive(Debug, Default)]
pub struct Heads {
    seqs: HashMap<String, i64>,
    next_id: Option<i64>,
}

/// How a transaction moves the heads, once committed.
#[derive(Debug, Default)]
pub struct Advanced {
    seqs: Vec<(String, i64)>,
    next_id: Option<i64>,
}

impl Heads {
    /// Forgets everything (after a failed transaction the cache may be ahead).
    pub fn clear(&mut self) {
        self.seqs.clear();
        self.next_id = None;
    }

    /// Advances heads after a commit.
    pub fn advance(&mut self, advanced: Advanced) {
        self.seqs.extend(advanced.seqs);
        if advanced.next_id.is_some() {
            self.next_id = advanced.next_id;
        }
    }
}

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
pub(super) async fn write_page(
    rows: &mut (impl futures_util::Stream<Item = Result<sqlx::sqlite::SqliteRow>> + Unpin),
    limit: u32,
    budget: usize,
    mut push: impl FnMut(&mut PageWriter, &sqlx::sqlite::SqliteRow) -> Result<bool>,
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

pub(super) fn message_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ChatMessage> {
    let content: &str = row.try_get("content")?;
    // Whatever depth the store holds (an import takes any), this parse
    // cannot fail a commit or a reply over it.
    let content = crate::wire::json::parse_capped(content, STORED_DEPTH)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?
        .0;
    message_from_row_with(row, content)
}

/// A stored message with `content` in place of the stored one.
fn message_from_row_with(row: &sqlx::sqlite::SqliteRow, content: Value) -> Result<ChatMessage> {
    let kind = match row.try_get::<&str, _>("conv_type")? {
        "group" => ConvType::Group,
        _ => ConvType::Single,
    };
    Ok(ChatMessage {
        msg_id: msg_id(row.try_get("id")?),
        client_msg_id: row.try_get("client_msg_id")?,
        conv: Conversation {
            kind,
            target: row.try_get("target")?,
        },
        from: row.try_get("sender")?,
        content,
        server_time: row.try_get("server_time")?,
    })
}

/// Content bytes the dashboard's feed shows parsed; bigger is only named.
const FEED_CONTENT: usize = 4096;

/// Nesting kept when stored content is parsed (new content has at most
/// `MAX_CONTENT_DEPTH`; imported content may have more).
const STORED_DEPTH: usize = 100;

/// A stored message with its content as stored (no parsing, no copy).
pub(super) fn raw_message_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RawChatMessage<'_>> {
    let kind = match row.try_get::<&str, _>("conv_type")? {
        "group" => ConvType::Group,
        _ => ConvType::Single,
    };
    let content: &str = row.try_get("content")?;
    Ok(RawChatMessage {
        msg_id: msg_id(row.try_get("id")?),
        client_msg_id: row.try_get("client_msg_id")?,
        conv: Conversation {
            kind,
            target: row.try_get("target")?,
        },
        from: row.try_get("sender")?,
        content: serde_json::from_str(content).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        server_time: row.try_get("server_time")?,
    })
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

/// Rows per multi-row INSERT: a small fixed set of sizes, so the statements
/// stay few and stay in sqlx's prepared-statement cache.
const CHUNKS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `n` rows into chunks of the sizes in `CHUNKS`, biggest first.
fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in CHUNKS {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

/// `prefix` + `rows` copies of `row` joined by commas + `suffix`. Built from
/// constants only; every value is a bound parameter.
fn values_sql(prefix: &str, row: &str, rows: usize, suffix: &str) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * (row.len() + 1) + suffix.len());
    sql.push_str(prefix);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql.push_str(suffix);
    sql
}

/// The work of [`Store::append`] inside a transaction the caller commits.
/// Returns each message's outcome and the heads to advance after the commit.
pub(super) async fn append_in(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
    heads: &mut Heads,
    now: i64,
) -> Result<(Vec<Appended>, Advanced)> {
    let mut out: Vec<Option<Appended>> = vec![None; batch.len()];
    let mut advanced = Advanced::default();
    // 1. Retries of messages stored earlier.
    let keyed: Vec<Value> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.client_msg_id.as_ref().map(|c| json!([i, m.sender, c])))
        .collect();
    if !keyed.is_empty() {
        // Messages stored before `sender_seq` existed find it in the inbox
        // (a scan of the sender's inbox; only for those old rows).
        let sql = concat!(
            "SELECT j.value->>0 AS idx, COALESCE(m.sender_seq, (SELECT i.seq FROM inbox i WHERE i.user_id = m.sender AND i.message_id = m.id)) AS seq, ",
            message_columns!(),
            " FROM json_each(?) j
             JOIN messages m ON m.sender = j.value->>1 AND m.client_msg_id = j.value->>2"
        );
        for row in sqlx::query(sql)
            .bind(Value::Array(keyed).to_string())
            .fetch_all(&mut *conn)
            .await?
        {
            let idx: i64 = row.try_get("idx")?;
            let sender_seq: Option<i64> = row.try_get("seq")?;
            out[idx as usize] = Some(Appended::Duplicate {
                message: message_from_row(&row)?,
                sender_seq: sender_seq.unwrap_or(0),
            });
        }
    }
    // Retries within this batch point at their first copy.
    let mut first_of = HashMap::<(&str, &str), usize>::new();
    let mut copy_of = HashMap::<usize, usize>::new();
    for (i, m) in batch.iter().enumerate() {
        if let (None, Some(c)) = (&out[i], m.client_msg_id.as_deref()) {
            match first_of.get(&(m.sender.as_str(), c)) {
                Some(&first) => {
                    copy_of.insert(i, first);
                }
                None => {
                    first_of.insert((m.sender.as_str(), c), i);
                }
            }
        }
    }

    // 2. Recipients, refusing unknown users and groups the sender is not in.
    let fresh: Vec<usize> = (0..batch.len())
        .filter(|i| out[*i].is_none() && !copy_of.contains_key(i))
        .collect();
    let targets: Vec<&str> = fresh
        .iter()
        .filter(|&&i| batch[i].conv.kind == ConvType::Single && batch[i].recipients.is_none())
        .map(|&i| batch[i].conv.target.as_str())
        .collect();
    let known_users: HashSet<String> = if targets.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar("SELECT id FROM users WHERE id IN (SELECT value FROM json_each(?))")
            .bind(json!(targets).to_string())
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let mut members = HashMap::<&str, Vec<String>>::new();
    // Per group: muted users; "" stands for the whole group.
    let mut mutes = HashMap::<&str, Vec<String>>::new();
    for &i in &fresh {
        let conv = &batch[i].conv;
        if conv.kind == ConvType::Group
            && batch[i].recipients.is_none()
            && !members.contains_key(conv.target.as_str())
        {
            let list: Vec<String> =
                sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = ?")
                    .bind(&conv.target)
                    .fetch_all(&mut *conn)
                    .await?;
            members.insert(conv.target.as_str(), list);
            let muted: Vec<String> =
                sqlx::query_scalar("SELECT user_id FROM group_mutes WHERE group_id = ?")
                    .bind(&conv.target)
                    .fetch_all(&mut *conn)
                    .await?;
            mutes.insert(conv.target.as_str(), muted);
        }
    }
    let mut accepted: Vec<(usize, Vec<&str>)> = Vec::with_capacity(fresh.len());
    for &i in &fresh {
        let m = &batch[i];
        let target = m.conv.target.as_str();
        let rejection = match (&m.recipients, m.conv.kind) {
            (Some(users), _) => {
                accepted.push((i, users.iter().map(String::as_str).collect()));
                None
            }
            (None, ConvType::Single) if !known_users.contains(target) => {
                Some((code::NOT_FOUND, format!("no user {target:?}")))
            }
            (None, ConvType::Single) => {
                let mut users = vec![m.sender.as_str()];
                if target != m.sender {
                    users.push(target);
                }
                accepted.push((i, users));
                None
            }
            (None, ConvType::Group) => {
                let list = &members[target];
                if list.is_empty() {
                    Some((code::NOT_FOUND, format!("no group {target:?}")))
                } else if !list.contains(&m.sender) {
                    Some((
                        code::FORBIDDEN,
                        format!("you are not a member of group {target:?}"),
                    ))
                } else if mutes[target].iter().any(|u| u.is_empty()) {
                    Some((
                        code::FORBIDDEN,
                        format!("group {target:?} is muted by an administrator"),
                    ))
                } else if mutes[target].contains(&m.sender) {
                    Some((
                        code::FORBIDDEN,
                        format!("you are muted in group {target:?} by an administrator"),
                    ))
                } else {
                    accepted.push((i, list.iter().map(String::as_str).collect()));
                    None
                }
            }
        };
        if let Some((code, reason)) = rejection {
            out[i] = Some(Appended::Rejected { code, reason });
        }
    }

    if !accepted.is_empty() {
        // 3. Inbox heads not cached yet, in one query.
        let missing: HashSet<&str> = accepted
            .iter()
            .flat_map(|(_, users)| users.iter().copied())
            .filter(|u| !heads.seqs.contains_key(*u))
            .collect();
        if !missing.is_empty() {
            let found: Vec<(String, i64)> = sqlx::query_as(
                "SELECT user_id, MAX(seq) FROM inbox WHERE user_id IN (SELECT value FROM json_each(?)) GROUP BY user_id",
            )
            .bind(json!(missing.iter().collect::<Vec<_>>()).to_string())
            .fetch_all(&mut *conn)
            .await?;
            for u in &missing {
                heads.seqs.insert((*u).to_owned(), 0);
            }
            heads.seqs.extend(found);
        }

        // 4. Seqs: each recipient's continue from its head, in batch order.
        let mut next = HashMap::<&str, i64>::new();
        let seqs: Vec<Vec<(&str, i64)>> = accepted
            .iter()
            .map(|(_, users)| {
                users
                    .iter()
                    .map(|&u| {
                        let seq = next.get(u).copied().unwrap_or_else(|| heads.seqs[u]) + 1;
                        next.insert(u, seq);
                        (u, seq)
                    })
                    .collect()
            })
            .collect();

        // 5. The messages, with ids ascending in batch order; each keeps its
        // sender's seq, which a retry answers with. Explicit ids (instead of
        // `RETURNING id`) spare SQLite's thread handing back a row per message.
        let first_id = match heads.next_id {
            Some(id) => Some(id),
            None => sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)",
            )
            .fetch_one(&mut *conn)
            .await?
            .checked_add(1),
        };
        // Checked: an id must never wrap around to a negative or reused one.
        let (first_id, end) = first_id
            .and_then(|first| Some((first, first.checked_add(i64::try_from(accepted.len()).ok()?)?)))
            .ok_or_else(|| sqlx::Error::Protocol("msgIds are exhausted: no room for new messages (import into a fresh store with smaller msgIds)".into()))?;
        let ids: Vec<i64> = (first_id..end).collect();
        let mut rest = &accepted[..];
        let mut rest_seqs = &seqs[..];
        let mut rest_ids = &ids[..];
        for n in chunk_sizes(accepted.len()) {
            let (chunk, tail) = rest.split_at(n);
            let (chunk_seqs, tail_seqs) = rest_seqs.split_at(n);
            let (chunk_ids, tail_ids) = rest_ids.split_at(n);
            rest = tail;
            rest_seqs = tail_seqs;
            rest_ids = tail_ids;
            let sql = values_sql(
                "INSERT INTO messages (id, sender, client_msg_id, conv_type, conv_key, target, content, server_time, sender_seq) VALUES ",
                "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                n,
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (((i, _), seqs), id) in chunk.iter().zip(chunk_seqs).zip(chunk_ids) {
                let m = &batch[*i];
                let sender_seq = seqs.iter().find(|(u, _)| *u == m.sender).map(|(_, s)| *s);
                q = q
                    .bind(id)
                    .bind(m.sender.as_str())
                    .bind(m.client_msg_id.as_deref())
                    .bind(m.conv.kind.as_str())
                    .bind(conv_key(&m.sender, &m.conv))
                    .bind(m.conv.target.as_str())
                    .bind(m.content.to_string())
                    .bind(now)
                    .bind(sender_seq);
            }
            q.execute(&mut *conn).await?;
        }
        advanced.next_id = Some(end);

        // 6. One inbox entry per recipient.
        let mut inbox: Vec<(&str, i64, i64)> = Vec::new();
        for (((i, _), seqs), &id) in accepted.iter().zip(&seqs).zip(&ids) {
            let m = &batch[*i];
            inbox.extend(seqs.iter().map(|&(u, seq)| (u, seq, id)));
            let message = ChatMessage {
                msg_id: msg_id(id),
                client_msg_id: m.client_msg_id.clone(),
                conv: m.conv.clone(),
                from: m.sender.clone(),
                content: m.content.clone(),
                server_time: now,
            };
            let seqs = seqs.iter().map(|&(u, s)| (u.to_owned(), s)).collect();
            out[*i] = Some(Appended::Stored { message, seqs });
        }
        // In key order, each insert lands next to the previous one instead
        // of seeking across the table (one user's rows are spread over the
        // batch's messages).
        inbox.sort_unstable();
        // One statement however many rows (a 1,000-member group gives 1,000
        // per message): multi-row VALUES would take many statements here.
        sqlx::query(
            "INSERT INTO inbox (user_id, seq, message_id) SELECT value->>0, value->>1, value->>2 FROM json_each(?)",
        )
        .bind(serde_json::to_string(&inbox).expect("tuples serialize"))
        .execute(&mut *conn)
        .await?;
        advanced.seqs = next.into_iter().map(|(u, s)| (u.to_owned(), s)).collect();
    }

    for (copy, first) in copy_of {
        out[copy] = Some(match &out[first] {
            Some(Appended::Stored { message, seqs }) => Appended::Duplicate {
                message: message.clone(),
                sender_seq: seqs
                    .iter()
                    .find(|(u, _)| *u == message.from)
                    .map_or(0, |(_, s)| *s),
            },
            Some(other) => other.clone(),
            None => unreachable!("first copies are decided"),
        });
    }
    let out = out
        .into_iter()
        .map(|o| o.expect("every message is decided"))
        .collect();
    Ok((out, advanced))
}

impl Store {
    /// Appends a batch of messages and delivery acknowledgements in one
    /// transaction (the broker's group commit). Per-user seqs are assigned
    /// here, so they are gapless: they only advance in `heads` once the
    /// transaction commits.
    ///
    /// Statements per batch, not per message: lookups and inbox rows pass as
    /// one JSON parameter (`json_each`), message rows as multi-row `VALUES`
    /// of a few fixed sizes with bound parameters. A statement costs a round trip to
    /// SQLite's thread, so their number must not grow with the batch.
    pub async fn append(
        &self,
        batch: &[NewMessage],
        delivered: &[Delivered],
        heads: &mut Heads,
    ) -> Result<Vec<Appended>> {
        let now = now_ms();
        let mut dedicated = self.writer_conn().await;
        let done = async {
            let mut tx = self.begin_write(&mut dedicated).await?;
            let (out, advanced) = append_in(&mut tx, batch, heads, now).await?;
            Self::upsert_devices(&mut tx, delivered, now).await?;
            tx.commit().await?;
            Ok((out, advanced))
        }
        .await;
        match done {
            Ok((out, advanced)) => {
                // Only a committed transaction moves the heads.
                heads.advance(advanced);
                Ok(out)
            }
            Err(e) => {
                // The connection may be broken: the next commit takes a fresh one.
                *dedicated = None;
                Err(e)
            }
        }
    }

    async fn upsert_devices(
        conn: &mut SqliteConnection,
        delivered: &[Delivered],
        now: i64,
    ) -> Result<()> {
        // The highest acknowledgement per device is all that matters.
        let mut latest = HashMap::<(&str, &str), &Delivered>::new();
        for d in delivered {
            let e = latest
                .entry((d.user_id.as_str(), d.client_id.as_str()))
                .or_insert(d);
            if d.up_to > e.up_to {
                *e = d;
            }
        }
        for d in latest.values() {
            sqlx::query(
                "INSERT INTO devices (user_id, client_id, platform, delivered, last_seen) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT(user_id, client_id) DO UPDATE SET
                   delivered = MAX(delivered, excluded.delivered), platform = excluded.platform, last_seen = excluded.last_seen",
            )
            .bind(&d.user_id)
            .bind(&d.client_id)
            .bind(d.platform)
            .bind(d.up_to)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// The user's inbox head: the highest seq, 0 when empty.
    pub async fn inbox_head(&self, user: &str) -> Result<i64> {
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE user_id = ?")
            .bind(user)
            .fetch_one(&self.pool)
            .await
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
             WHERE i.user_id = ? AND i.seq > ? ORDER BY i.seq LIMIT ?"
        );
        let mut rows = sqlx::query(sql)
            .bind(user)
            .bind(since)
            .bind(limit as i64 + 1)
            .fetch(&self.pool);
        write_page(&mut rows, limit, budget, |page, row| {
            page.push(&Entry {
                seq: row.try_get("seq")?,
                message: raw_message_from_row(row)?,
            })
        })
        .await
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
                " FROM messages m WHERE m.conv_type = ? AND m.conv_key = ? AND m.id < ? AND m.server_time < ?
                 ORDER BY m.id DESC LIMIT ?"
            ),
            // The conversation's index drives, newest first; each message is
            // looked up in the member's inbox (a join would let SQLite carry
            // `m.id < ?` over to the inbox and scan a range per message).
            ConvType::Group => concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m
                 WHERE m.conv_type = ?1 AND m.conv_key = ?2 AND m.id < ?3 AND m.server_time < ?4
                   AND EXISTS (SELECT 1 FROM inbox i WHERE i.user_id = ?6 AND i.message_id = m.id)
                 ORDER BY m.id DESC LIMIT ?5"
            ),
        };
        let mut q = sqlx::query(sql)
            .bind(conv.kind.as_str())
            .bind(conv_key(user, conv))
            .bind(by_id)
            .bind(by_time)
            .bind(limit as i64 + 1);
        if conv.kind == ConvType::Group {
            q = q.bind(user);
        }
        let mut rows = q.fetch(&self.pool);
        write_page(&mut rows, limit, budget, |page, row| {
            page.push(&raw_message_from_row(row)?)
        })
        .await
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
            " FROM messages m ORDER BY m.id DESC LIMIT ?"
        );
        let rows = sqlx::query(sql)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let content: &str = row.try_get("content")?;
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
            .collect()
    }

    pub async fn is_group_member(&self, group: &str, user: &str) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM group_members WHERE group_id = ? AND user_id = ?")
                .bind(group)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// The delivered position a device acknowledged, 0 if none.
    pub async fn delivered(&self, user: &str, client_id: &str) -> Result<i64> {
        let d: Option<i64> =
            sqlx::query_scalar("SELECT delivered FROM devices WHERE user_id = ? AND client_id = ?")
                .bind(user)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(d.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_with_few_sizes() {
        for n in [0, 1, 3, 127, 128, 129, 714, 1024] {
            let sizes = chunk_sizes(n);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| CHUNKS.contains(s)));
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(chunk_sizes(714), [128, 128, 128, 128, 128, 64, 8, 2]);
        assert_eq!(values_sql("I ", "(?)", 3, " R"), "I (?),(?),(?) R");
    }
    use crate::store::{Fixtures, Location};
    use serde_json::json;

    async fn store() -> Store {
        let s = Store::open(&Location::Memory).await.unwrap();
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        s
    }

    fn text(from: &str, to: &str, cmid: Option<&str>) -> NewMessage {
        NewMessage {
            sender: from.into(),
            conv: Conversation {
                kind: ConvType::Single,
                target: to.into(),
            },
            content: json!({"type":"text","text":"hi"}),
            client_msg_id: cmid.map(Into::into),
            recipients: None,
        }
    }

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
        let mut tx = s.pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
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
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert!(
            frames < 20,
            "the WAL did not start over: {frames} frames after one small commit (it had {before})"
        );
    }

    #[tokio::test]
    async fn seqs_are_per_user_and_gapless_and_dedupe_works() {
        let s = store().await;
        let mut heads = Heads::default();
        let out = s
            .append(
                &[
                    text("alice", "bob", Some("c1")),
                    text("bob", "alice", None),
                    text("alice", "bob", Some("c1")),
                    text("alice", "zed", None),
                ],
                &[],
                &mut heads,
            )
            .await
            .unwrap();
        let Appended::Stored { seqs, message } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(seqs, &[("alice".to_string(), 1), ("bob".to_string(), 1)]);
        let Appended::Stored { seqs: seqs2, .. } = &out[1] else {
            panic!()
        };
        assert_eq!(seqs2, &[("bob".to_string(), 2), ("alice".to_string(), 2)]);
        let Appended::Duplicate {
            message: dup,
            sender_seq,
        } = &out[2]
        else {
            panic!("{:?}", out[2])
        };
        assert_eq!(
            (dup.msg_id.as_str(), *sender_seq),
            (message.msg_id.as_str(), 1)
        );
        assert!(matches!(&out[3], Appended::Rejected { code: 404, .. }));

        // A later batch dedupes against the database and continues the seqs.
        let mut fresh = Heads::default();
        let out = s
            .append(
                &[text("alice", "bob", Some("c1")), text("carol", "bob", None)],
                &[],
                &mut fresh,
            )
            .await
            .unwrap();
        assert!(matches!(&out[0], Appended::Duplicate { sender_seq: 1, .. }));
        let Appended::Stored { seqs, .. } = &out[1] else {
            panic!()
        };
        assert_eq!(seqs[1], ("bob".to_string(), 3));

        // Rows stored before `sender_seq` existed: found through the inbox.
        sqlx::query("UPDATE messages SET sender_seq = NULL")
            .execute(&s.pool)
            .await
            .unwrap();
        let out = s
            .append(&[text("alice", "bob", Some("c1"))], &[], &mut fresh)
            .await
            .unwrap();
        assert!(matches!(&out[0], Appended::Duplicate { sender_seq: 1, .. }));

        let (entries, more) = s.inbox_since("bob", 1, 10).await.unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(!more);
        assert_eq!(s.inbox_head("bob").await.unwrap(), 3);
        let (page, more) = s.inbox_since("bob", 0, 2).await.unwrap();
        assert_eq!((page.len(), more), (2, true));
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
        assert!(matches!(&out[1], Appended::Rejected { code: 403, .. }));
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
    async fn message_ids_never_wrap() {
        let s = store().await;
        let mut heads = Heads::default();
        sqlx::query("INSERT INTO messages (id, sender, conv_type, conv_key, target, content, server_time) VALUES (?, 'alice', 'single', 'alice|bob', 'bob', '{}', 0)")
            .bind(i64::MAX - 2)
            .execute(&s.pool)
            .await
            .unwrap();
        let exhausted = |r: Result<Vec<Appended>>| {
            let err = r.unwrap_err();
            assert!(err.to_string().contains("msgIds are exhausted"), "{err}");
        };
        // Two ids would pass the end; nothing is stored, the heads forget.
        exhausted(
            s.append(&vec![text("alice", "bob", None); 2], &[], &mut heads)
                .await,
        );
        heads.clear();
        let out = s
            .append(&[text("alice", "bob", None)], &[], &mut heads)
            .await
            .unwrap();
        let Appended::Stored { message, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(message.msg_id, msg_id(i64::MAX - 1));
        exhausted(
            s.append(&[text("alice", "bob", None)], &[], &mut heads)
                .await,
        );
        heads.clear();
        exhausted(
            s.append(&[text("alice", "bob", None)], &[], &mut heads)
                .await,
        );
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
