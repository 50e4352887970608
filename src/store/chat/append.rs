//! The batch append: the single writer's group commit of sends and delivery
//! acks, in one transaction.
//!
//! [`append_in`] runs its steps in order: answer retries stored earlier →
//! note retries within the batch → look up what the checks need → resolve
//! recipients (or refuse) → load missing heads → assign ids and seqs →
//! insert messages → insert inbox rows → record outcomes. [`Store::append`]
//! then applies the delivery acks, commits, and only then advances the heads.
//!
//! Every step runs a bounded number of statements whatever the batch's size:
//! a statement costs a round trip to SQLite's thread.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde_json::{Value, json};
use sqlx::{Row, SqliteConnection};

use super::{conv_key, message_columns, message_from_row, msg_id};
use crate::store::{Refused, Why};
use crate::store::{Result, Store, now_ms};
use crate::wire::ws::{ChatMessage, ConvType, Conversation};

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
    Rejected(Refused),
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
            upsert_devices(&mut tx, delivered, now).await?;
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
}

/// The work of [`Store::append`] inside a transaction the caller commits.
/// Returns each message's outcome and the heads to advance after the commit.
pub(in crate::store) async fn append_in(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
    heads: &mut Heads,
    now: i64,
) -> Result<(Vec<Appended>, Advanced)> {
    let mut out: Vec<Option<Appended>> = vec![None; batch.len()];
    answer_stored_retries(conn, batch, &mut out).await?;
    let copies = retries_within_batch(batch, &out);
    let fresh: Vec<usize> = (0..batch.len())
        .filter(|i| out[*i].is_none() && !copies.contains_key(i))
        .collect();
    let lookups = Lookups::load(conn, batch, &fresh).await?;
    let accepted = resolve_recipients(batch, &fresh, &lookups, &mut out);
    let advanced = if accepted.is_empty() {
        Advanced::default()
    } else {
        store_accepted(conn, batch, accepted, heads, now, &mut out).await?
    };
    answer_retries_within_batch(copies, &mut out);
    let out = out
        .into_iter()
        .map(|o| o.expect("every message is decided"))
        .collect();
    Ok((out, advanced))
}

/// A client that lost an ack sends again with the same clientMsgId: it
/// gets the stored copy back (and its sender's seq) instead of a second
/// message. One statement for every keyed message of the batch.
async fn answer_stored_retries(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
    out: &mut [Option<Appended>],
) -> Result<()> {
    let keyed: Vec<Value> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.client_msg_id.as_ref().map(|c| json!([i, m.sender, c])))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// Retries within one batch (a client resending before its first ack
/// came): each later copy points at the first, which alone is decided;
/// the copies take its outcome at the end.
fn retries_within_batch(batch: &[NewMessage], out: &[Option<Appended>]) -> HashMap<usize, usize> {
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
    copy_of
}

/// What checking the batch's new messages needs from the database, read
/// once per batch rather than once per message.
#[derive(Debug, Default)]
struct Lookups<'a> {
    /// The single-chat targets that are users.
    known_users: HashSet<String>,
    /// Per group addressed: its members (none for a group that does not exist).
    members: HashMap<&'a str, Vec<String>>,
    /// Per group addressed: muted users; "" stands for the whole group.
    mutes: HashMap<&'a str, Vec<String>>,
}

impl<'a> Lookups<'a> {
    /// One statement for all single-chat targets, two per group addressed.
    async fn load(
        conn: &mut SqliteConnection,
        batch: &'a [NewMessage],
        fresh: &[usize],
    ) -> Result<Self> {
        let mut lookups = Self::default();
        let targets: Vec<&str> = fresh
            .iter()
            .filter(|&&i| batch[i].conv.kind == ConvType::Single && batch[i].recipients.is_none())
            .map(|&i| batch[i].conv.target.as_str())
            .collect();
        if !targets.is_empty() {
            lookups.known_users = sqlx::query_scalar(
                "SELECT id FROM users WHERE id IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(targets).to_string())
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
        }
        for &i in fresh {
            let conv = &batch[i].conv;
            if conv.kind == ConvType::Group
                && batch[i].recipients.is_none()
                && !lookups.members.contains_key(conv.target.as_str())
            {
                let list: Vec<String> =
                    sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = ?")
                        .bind(&conv.target)
                        .fetch_all(&mut *conn)
                        .await?;
                lookups.members.insert(conv.target.as_str(), list);
                let muted: Vec<String> =
                    sqlx::query_scalar("SELECT user_id FROM group_mutes WHERE group_id = ?")
                        .bind(&conv.target)
                        .fetch_all(&mut *conn)
                        .await?;
                lookups.mutes.insert(conv.target.as_str(), muted);
            }
        }
        Ok(lookups)
    }
}

/// A message that passed the checks and who gets it (sender included).
#[derive(Debug)]
struct Accepted<'a> {
    index: usize,
    recipients: Vec<&'a str>,
}

/// Decides each new message: accepted with its recipients, or refused
/// (its outcome recorded in `out`). Batch order is kept, so seqs follow it.
fn resolve_recipients<'a>(
    batch: &'a [NewMessage],
    fresh: &[usize],
    lookups: &'a Lookups<'a>,
    out: &mut [Option<Appended>],
) -> Vec<Accepted<'a>> {
    let mut accepted = Vec::with_capacity(fresh.len());
    for &index in fresh {
        match recipients(&batch[index], lookups) {
            Ok(recipients) => accepted.push(Accepted { index, recipients }),
            Err(refused) => out[index] = Some(Appended::Rejected(refused)),
        }
    }
    accepted
}

/// Who gets `m`, or why it is refused: unknown users and groups, senders
/// who are not members, muted groups and muted members.
fn recipients<'a>(m: &'a NewMessage, lookups: &'a Lookups) -> Result<Vec<&'a str>, Refused> {
    let target = m.conv.target.as_str();
    match (&m.recipients, m.conv.kind) {
        (Some(users), _) => Ok(users.iter().map(String::as_str).collect()),
        (None, ConvType::Single) if !lookups.known_users.contains(target) => {
            Err(Refused::new(Why::Missing, format!("no user {target:?}")))
        }
        (None, ConvType::Single) => {
            let mut users = vec![m.sender.as_str()];
            if target != m.sender {
                users.push(target);
            }
            Ok(users)
        }
        (None, ConvType::Group) => {
            let list = &lookups.members[target];
            let mutes = &lookups.mutes[target];
            if list.is_empty() {
                Err(Refused::new(Why::Missing, format!("no group {target:?}")))
            } else if !list.contains(&m.sender) {
                Err(Refused::new(
                    Why::NotAllowed,
                    format!("you are not a member of group {target:?}"),
                ))
            } else if mutes.iter().any(|u| u.is_empty()) {
                Err(Refused::new(
                    Why::NotAllowed,
                    format!("group {target:?} is muted by an administrator"),
                ))
            } else if mutes.contains(&m.sender) {
                Err(Refused::new(
                    Why::NotAllowed,
                    format!("you are muted in group {target:?} by an administrator"),
                ))
            } else {
                Ok(list.iter().map(String::as_str).collect())
            }
        }
    }
}

/// Stores the accepted messages and their inbox entries; returns how the
/// heads move once the transaction commits.
async fn store_accepted(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
    accepted: Vec<Accepted<'_>>,
    heads: &mut Heads,
    now: i64,
    out: &mut [Option<Appended>],
) -> Result<Advanced> {
    load_missing_heads(conn, heads, &accepted).await?;
    let ids = assign_ids(conn, heads.next_id, accepted.len()).await?;
    let numbering = number(accepted, &heads.seqs, ids.start);
    insert_messages(conn, batch, &numbering.rows, now).await?;
    insert_inbox(conn, &numbering.rows).await?;
    record_stored(batch, &numbering.rows, now, out);
    Ok(Advanced {
        seqs: numbering.heads,
        next_id: Some(ids.end),
    })
}

/// Reads the inbox heads of recipients the cache does not know yet (after
/// a start or a failed commit), in one statement. They are facts about
/// the database, so they go straight into the cache.
async fn load_missing_heads(
    conn: &mut SqliteConnection,
    heads: &mut Heads,
    accepted: &[Accepted<'_>],
) -> Result<()> {
    let missing: HashSet<&str> = accepted
        .iter()
        .flat_map(|a| a.recipients.iter().copied())
        .filter(|u| !heads.seqs.contains_key(*u))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// The ids of `n` new messages, ascending: explicit ids (instead of
/// `RETURNING id`) spare SQLite's thread handing back a row per message.
/// The first comes from the cache, or once from `sqlite_sequence`.
async fn assign_ids(
    conn: &mut SqliteConnection,
    next_id: Option<i64>,
    n: usize,
) -> Result<Range<i64>> {
    let first = match next_id {
        Some(id) => Some(id),
        None => sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)",
        )
        .fetch_one(&mut *conn)
        .await?
        .checked_add(1),
    };
    id_range(first, n)
}

/// `n` ids from `first`, checked: an id must never wrap around to a
/// negative or reused one (`None`: the previous id was the last).
fn id_range(first: Option<i64>, n: usize) -> Result<Range<i64>> {
    first
        .and_then(|first| Some(first..first.checked_add(i64::try_from(n).ok()?)?))
        .ok_or_else(|| sqlx::Error::Protocol("msgIds are exhausted: no room for new messages (import into a fresh store with smaller msgIds)".into())).map_err(Into::into)
}

/// An accepted message with its id and each recipient's seq.
#[derive(Debug)]
struct Numbered<'a> {
    index: usize,
    id: i64,
    seqs: Vec<(&'a str, i64)>,
}

/// The batch numbered, and each recipient's last seq in it.
struct Numbering<'a> {
    rows: Vec<Numbered<'a>>,
    heads: Vec<(String, i64)>,
}

/// Gives the accepted messages consecutive ids from `first_id` and each
/// recipient the next seqs after its head, in batch order: seqs stay
/// gapless and follow the order messages were sent in.
fn number<'a>(
    accepted: Vec<Accepted<'a>>,
    heads: &HashMap<String, i64>,
    first_id: i64,
) -> Numbering<'a> {
    let mut next = HashMap::<&str, i64>::new();
    let rows = accepted
        .into_iter()
        .zip(first_id..)
        .map(|(a, id)| Numbered {
            index: a.index,
            id,
            seqs: a
                .recipients
                .into_iter()
                .map(|u| {
                    let seq = next.get(u).copied().unwrap_or_else(|| heads[u]) + 1;
                    next.insert(u, seq);
                    (u, seq)
                })
                .collect(),
        })
        .collect();
    let heads = next.into_iter().map(|(u, s)| (u.to_owned(), s)).collect();
    Numbering { rows, heads }
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

/// The message rows, as multi-row `VALUES` in chunks of [`CHUNKS`] sizes.
/// Each keeps its sender's seq, which a retry is answered with.
async fn insert_messages(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
    rows: &[Numbered<'_>],
    now: i64,
) -> Result<()> {
    let mut rest = rows.iter();
    for n in chunk_sizes(rows.len()) {
        let sql = values_sql(
            "INSERT INTO messages (id, sender, client_msg_id, conv_type, conv_key, target, content, server_time, sender_seq) VALUES ",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            n,
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in rest.by_ref().take(n) {
            let m = &batch[row.index];
            let sender_seq = row
                .seqs
                .iter()
                .find(|(u, _)| *u == m.sender)
                .map(|(_, s)| *s);
            q = q
                .bind(row.id)
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
    Ok(())
}

/// One inbox entry per recipient of each message, in one statement however
/// many rows (a 1,000-member group gives 1,000 per message): multi-row
/// VALUES would take many statements here.
async fn insert_inbox(conn: &mut SqliteConnection, rows: &[Numbered<'_>]) -> Result<()> {
    let mut inbox: Vec<(&str, i64, i64)> = rows
        .iter()
        .flat_map(|row| row.seqs.iter().map(|&(u, seq)| (u, seq, row.id)))
        .collect();
    // In key order, each insert lands next to the previous one instead
    // of seeking across the table (one user's rows are spread over the
    // batch's messages).
    inbox.sort_unstable();
    sqlx::query(
        "INSERT INTO inbox (user_id, seq, message_id) SELECT value->>0, value->>1, value->>2 FROM json_each(?)",
    )
    .bind(serde_json::to_string(&inbox).expect("tuples serialize"))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Each stored message as its sender's ack and the recipients' pushes
/// will show it.
fn record_stored(
    batch: &[NewMessage],
    rows: &[Numbered<'_>],
    now: i64,
    out: &mut [Option<Appended>],
) {
    for row in rows {
        let m = &batch[row.index];
        let message = ChatMessage {
            msg_id: msg_id(row.id),
            client_msg_id: m.client_msg_id.clone(),
            conv: m.conv.clone(),
            from: m.sender.clone(),
            content: m.content.clone(),
            server_time: now,
        };
        let seqs = row.seqs.iter().map(|&(u, s)| (u.to_owned(), s)).collect();
        out[row.index] = Some(Appended::Stored { message, seqs });
    }
}

/// A copy within the batch gets its first's outcome: a duplicate of what
/// was stored (with the sender's seq), or the same refusal.
fn answer_retries_within_batch(copies: HashMap<usize, usize>, out: &mut [Option<Appended>]) {
    for (copy, first) in copies {
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
}

/// Applies the batch's delivery acks: one upsert per device, keeping only
/// each device's highest acknowledgement.
async fn upsert_devices(
    conn: &mut SqliteConnection,
    delivered: &[Delivered],
    now: i64,
) -> Result<()> {
    for d in latest_per_device(delivered) {
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

/// The highest acknowledgement per device is all that matters.
fn latest_per_device(delivered: &[Delivered]) -> impl Iterator<Item = &Delivered> {
    let mut latest = HashMap::<(&str, &str), &Delivered>::new();
    for d in delivered {
        let e = latest
            .entry((d.user_id.as_str(), d.client_id.as_str()))
            .or_insert(d);
        if d.up_to > e.up_to {
            *e = d;
        }
    }
    latest.into_values()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{store, text};

    use serde_json::json;

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
        assert!(matches!(
            &out[3],
            Appended::Rejected(Refused {
                why: Why::Missing,
                ..
            })
        ));

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

    fn to_group(from: &str, group: &str) -> NewMessage {
        NewMessage {
            conv: Conversation {
                kind: ConvType::Group,
                target: group.into(),
            },
            ..text(from, "", None)
        }
    }

    /// Lookups as if "bob" were the only other user, and groups "g1" (alice
    /// and bob, bob muted), "g2" (muted as a whole) and "g3" (open).
    fn lookups() -> Lookups<'static> {
        let users = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        Lookups {
            known_users: ["alice", "bob"].map(String::from).into(),
            members: [
                ("g1", users(&["alice", "bob"])),
                ("g2", users(&["alice"])),
                ("g3", users(&["alice", "bob"])),
                ("gone", users(&[])),
            ]
            .into(),
            mutes: [
                ("g1", users(&["bob"])),
                ("g2", users(&[""])),
                ("g3", users(&[])),
                ("gone", users(&[])),
            ]
            .into(),
        }
    }

    #[test]
    fn recipients_are_the_participants_and_refusals_say_why() {
        let lookups = lookups();
        let refused = |m: &NewMessage| recipients(m, &lookups).unwrap_err();
        assert_eq!(
            refused(&text("alice", "zed", None)),
            Refused::new(Why::Missing, "no user \"zed\"")
        );
        assert_eq!(
            refused(&to_group("alice", "gone")),
            Refused::new(Why::Missing, "no group \"gone\"")
        );
        assert_eq!(
            refused(&to_group("carol", "g1")),
            Refused::new(Why::NotAllowed, "you are not a member of group \"g1\"")
        );
        assert_eq!(
            refused(&to_group("alice", "g2")),
            Refused::new(Why::NotAllowed, "group \"g2\" is muted by an administrator")
        );
        assert_eq!(
            refused(&to_group("bob", "g1")),
            Refused::new(
                Why::NotAllowed,
                "you are muted in group \"g1\" by an administrator"
            )
        );
        let to = |m: &NewMessage| recipients(m, &lookups).unwrap().join(",");
        assert_eq!(to(&to_group("alice", "g1")), "alice,bob");
        assert_eq!(to(&text("alice", "bob", None)), "alice,bob");
        assert_eq!(to(&text("alice", "alice", None)), "alice", "a note to self");
        let notification = NewMessage {
            recipients: Some(vec!["carol".into(), "zed".into()]),
            ..to_group("alice", "nowhere")
        };
        assert_eq!(
            to(&notification),
            "carol,zed",
            "named recipients are not checked"
        );
    }

    #[test]
    fn retries_within_a_batch_take_their_first_copys_outcome() {
        let batch = [
            text("alice", "bob", Some("c1")),
            text("bob", "alice", Some("c1")),
            text("alice", "bob", Some("c1")),
            text("alice", "bob", None),
            text("alice", "bob", None),
            text("alice", "zed", Some("c2")),
            text("alice", "zed", Some("c2")),
            text("alice", "bob", Some("c3")),
            text("alice", "bob", Some("c3")),
        ];
        let mut out = vec![None; batch.len()];
        // "c3" was stored by an earlier batch: its copies are not the batch's.
        let earlier = Appended::Duplicate {
            message: ChatMessage {
                msg_id: msg_id(1),
                client_msg_id: Some("c3".into()),
                conv: batch[7].conv.clone(),
                from: "alice".into(),
                content: json!({}),
                server_time: 0,
            },
            sender_seq: 1,
        };
        out[7] = Some(earlier.clone());
        out[8] = Some(earlier);
        let copies = retries_within_batch(&batch, &out);
        assert_eq!(copies, [(2, 0), (6, 5)].into());

        let stored = |i: usize, seqs: &[(&str, i64)]| Appended::Stored {
            message: ChatMessage {
                msg_id: msg_id(10 + i as i64),
                client_msg_id: batch[i].client_msg_id.clone(),
                conv: batch[i].conv.clone(),
                from: batch[i].sender.clone(),
                content: batch[i].content.clone(),
                server_time: 0,
            },
            seqs: seqs.iter().map(|&(u, s)| (u.to_owned(), s)).collect(),
        };
        out[0] = Some(stored(0, &[("bob", 4), ("alice", 7)]));
        out[5] = Some(Appended::Rejected(Refused::new(
            Why::Missing,
            "no user \"zed\"",
        )));
        answer_retries_within_batch(copies, &mut out);
        let Some(Appended::Duplicate {
            message,
            sender_seq,
        }) = &out[2]
        else {
            panic!("{:?}", out[2])
        };
        assert_eq!((message.msg_id.as_str(), *sender_seq), ("m10", 7));
        assert!(matches!(
            &out[6],
            Some(Appended::Rejected(Refused {
                why: Why::Missing,
                ..
            }))
        ));
    }

    #[test]
    fn seqs_continue_each_head_in_batch_order_and_ids_are_consecutive() {
        let accepted = vec![
            Accepted {
                index: 0,
                recipients: vec!["alice", "bob"],
            },
            Accepted {
                index: 2,
                recipients: vec!["bob", "carol"],
            },
            Accepted {
                index: 3,
                recipients: vec!["alice"],
            },
        ];
        let heads = [("alice", 5), ("bob", 0), ("carol", 9)]
            .map(|(u, s)| (u.to_owned(), s))
            .into();
        let numbering = number(accepted, &heads, 41);
        let rows: Vec<_> = numbering
            .rows
            .iter()
            .map(|r| (r.index, r.id, r.seqs.clone()))
            .collect();
        assert_eq!(
            rows,
            [
                (0, 41, vec![("alice", 6), ("bob", 1)]),
                (2, 42, vec![("bob", 2), ("carol", 10)]),
                (3, 43, vec![("alice", 7)]),
            ]
        );
        let mut advanced = numbering.heads;
        advanced.sort();
        assert_eq!(
            advanced,
            [("alice", 7), ("bob", 2), ("carol", 10)].map(|(u, s)| (u.to_owned(), s))
        );
    }

    #[test]
    fn ids_stop_before_they_would_wrap() {
        assert_eq!(id_range(Some(7), 3).unwrap(), 7..10);
        assert_eq!(
            id_range(Some(i64::MAX - 1), 1).unwrap(),
            i64::MAX - 1..i64::MAX
        );
        assert!(id_range(Some(i64::MAX - 1), 2).is_err());
        assert!(id_range(None, 1).is_err(), "the previous id was the last");
    }

    #[test]
    fn only_each_devices_highest_ack_is_written() {
        let ack = |user: &str, client: &str, up_to| Delivered {
            user_id: user.into(),
            client_id: client.into(),
            platform: 1,
            up_to,
        };
        let acks = [
            ack("bob", "phone", 3),
            ack("bob", "phone", 9),
            ack("bob", "phone", 5),
            ack("bob", "web", 2),
            ack("carol", "phone", 1),
        ];
        let mut latest: Vec<_> = latest_per_device(&acks)
            .map(|d| (d.user_id.as_str(), d.client_id.as_str(), d.up_to))
            .collect();
        latest.sort();
        assert_eq!(
            latest,
            [
                ("bob", "phone", 9),
                ("bob", "web", 2),
                ("carol", "phone", 1)
            ]
        );
    }
}
