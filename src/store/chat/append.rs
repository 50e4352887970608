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
//! a statement costs a round trip to SQLite's thread or to the PostgreSQL
//! server. Only the statements differ per backend; numbering, checks and
//! outcomes are shared. SQLite has one writer, which caches the heads;
//! PostgreSQL may have several (several imctl processes), so each batch
//! locks its recipients' rows of `inbox_heads` instead.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use serde_json::{Value, json};
use sqlx::{PgConnection, SqliteConnection};

use super::{conv_key, message_columns, message_from_row, msg_id};
use crate::store::db::{Cols, Tx, on_tx};
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

/// What SQLite's single writer knows of the store: `MAX(seq)` per user, and
/// the next message id (the writer is the only one adding messages, so it
/// can choose ids instead of asking SQLite for them row by row). Unused on
/// PostgreSQL, where another process may have moved them.
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
    /// Statements per batch, not per message: on SQLite lookups and inbox
    /// rows pass as one JSON parameter (`json_each`), message rows as
    /// multi-row `VALUES` of a few fixed sizes; on PostgreSQL every step is
    /// one statement over arrays (`UNNEST`). A statement costs a round trip,
    /// so their number must not grow with the batch.
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
    conn: &mut Tx<'_>,
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
    conn: &mut Tx<'_>,
    batch: &[NewMessage],
    out: &mut [Option<Appended>],
) -> Result<()> {
    let keyed: Vec<(i64, &str, &str)> = batch
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i as i64, m.sender.as_str(), m.client_msg_id.as_deref()?)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    // Messages stored before `sender_seq` existed find it in the inbox
    // (a scan of the sender's inbox; only for those old rows).
    let sqlite = concat!(
        "SELECT j.value->>0 AS idx, COALESCE(m.sender_seq, (SELECT i.seq FROM inbox i WHERE i.user_id = m.sender AND i.message_id = m.id)) AS seq, ",
        message_columns!(),
        " FROM json_each($1) j
         JOIN messages m ON m.sender = j.value->>1 AND m.client_msg_id = j.value->>2"
    );
    let postgres = concat!(
        "SELECT j.idx, COALESCE(m.sender_seq, (SELECT i.seq FROM inbox i WHERE i.user_id = m.sender AND i.message_id = m.id)) AS seq, ",
        message_columns!(),
        // One index probe per key (the partial dedupe index, named by its
        // own predicate), not a join the planner may turn into a scan.
        " FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS j(idx, sender, cmid)
         CROSS JOIN LATERAL (SELECT * FROM messages m WHERE m.sender = j.sender
           AND m.client_msg_id = j.cmid AND m.client_msg_id IS NOT NULL) m"
    );
    match conn {
        Tx::Sqlite(c) => {
            let rows = sqlx::query(sqlite)
                .bind(serde_json::to_string(&keyed).expect("tuples serialize"))
                .fetch_all(&mut **c)
                .await?;
            record_found(&rows, out)
        }
        Tx::Postgres(c) => {
            let (idx, senders, cmids) = unzip3(&keyed);
            let rows = sqlx::query(postgres)
                .bind(idx)
                .bind(senders)
                .bind(cmids)
                .fetch_all(&mut **c)
                .await?;
            record_found(&rows, out)
        }
    }
}

/// Each retry found stored is answered with the stored copy.
fn record_found(rows: &[impl Cols], out: &mut [Option<Appended>]) -> Result<()> {
    for row in rows {
        out[row.int("idx")? as usize] = Some(Appended::Duplicate {
            message: message_from_row(row)?,
            sender_seq: row.opt_int("seq")?.unwrap_or(0),
        });
    }
    Ok(())
}

/// Three columns out of rows, as PostgreSQL's arrays take them.
fn unzip3<A: Copy, B: Copy, C: Copy>(rows: &[(A, B, C)]) -> (Vec<A>, Vec<B>, Vec<C>) {
    let mut out = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for &(a, b, c) in rows {
        out.0.push(a);
        out.1.push(b);
        out.2.push(c);
    }
    out
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
    async fn load(conn: &mut Tx<'_>, batch: &'a [NewMessage], fresh: &[usize]) -> Result<Self> {
        let mut lookups = Self::default();
        let targets: Vec<&str> = fresh
            .iter()
            .filter(|&&i| batch[i].conv.kind == ConvType::Single && batch[i].recipients.is_none())
            .map(|&i| batch[i].conv.target.as_str())
            .collect();
        if !targets.is_empty() {
            let known: Vec<String> = match conn {
                Tx::Sqlite(c) => {
                    sqlx::query_scalar(
                        "SELECT id FROM users WHERE id IN (SELECT value FROM json_each($1))",
                    )
                    .bind(json!(targets).to_string())
                    .fetch_all(&mut **c)
                    .await?
                }
                Tx::Postgres(c) => {
                    sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
                        .bind(&targets)
                        .fetch_all(&mut **c)
                        .await?
                }
            };
            lookups.known_users = known.into_iter().collect();
        }
        for &i in fresh {
            let conv = &batch[i].conv;
            if conv.kind == ConvType::Group
                && batch[i].recipients.is_none()
                && !lookups.members.contains_key(conv.target.as_str())
            {
                let (list, muted): (Vec<String>, Vec<String>) = on_tx!(conn, c => (
                    sqlx::query_scalar("SELECT user_id FROM group_members WHERE group_id = $1")
                        .bind(&conv.target)
                        .fetch_all(&mut *c)
                        .await?,
                    sqlx::query_scalar("SELECT user_id FROM group_mutes WHERE group_id = $1")
                        .bind(&conv.target)
                        .fetch_all(&mut *c)
                        .await?,
                ));
                lookups.members.insert(conv.target.as_str(), list);
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
    conn: &mut Tx<'_>,
    batch: &[NewMessage],
    accepted: Vec<Accepted<'_>>,
    heads: &mut Heads,
    now: i64,
    out: &mut [Option<Appended>],
) -> Result<Advanced> {
    let advanced = match conn {
        Tx::Sqlite(c) => {
            load_missing_heads(c, heads, &accepted).await?;
            let ids = assign_ids(c, heads.next_id, accepted.len()).await?;
            let numbering = number(accepted, &heads.seqs, ids.clone());
            insert_messages(c, batch, &numbering.rows, now).await?;
            insert_inbox(c, &numbering.rows).await?;
            record_stored(batch, &numbering.rows, now, out);
            Advanced {
                seqs: numbering.heads,
                next_id: Some(ids.end),
            }
        }
        Tx::Postgres(c) => {
            let locked = pg::advance_heads(c, &accepted).await?;
            let ids = pg::assign_ids(c, accepted.len()).await?;
            let numbering = number(accepted, &locked, ids);
            pg::insert_messages(c, batch, &numbering.rows, now).await?;
            pg::insert_inbox(c, &numbering.rows).await?;
            record_stored(batch, &numbering.rows, now, out);
            Advanced::default()
        }
    };
    Ok(advanced)
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
        "SELECT user_id, MAX(seq) FROM inbox WHERE user_id IN (SELECT value FROM json_each($1)) GROUP BY user_id",
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

/// Gives the accepted messages the ascending `ids` and each recipient the
/// next seqs after its head, in batch order: seqs stay gapless and follow
/// the order messages were sent in.
fn number<'a>(
    accepted: Vec<Accepted<'a>>,
    heads: &HashMap<String, i64>,
    ids: impl IntoIterator<Item = i64>,
) -> Numbering<'a> {
    let mut next = HashMap::<&str, i64>::new();
    let rows = accepted
        .into_iter()
        .zip(ids)
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
        "INSERT INTO inbox (user_id, seq, message_id) SELECT value->>0, value->>1, value->>2 FROM json_each($1)",
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
/// each device's highest acknowledgement. In key order: two PostgreSQL
/// writers lock the same devices' rows in the same order, never crosswise.
pub(in crate::store) async fn upsert_devices(
    conn: &mut Tx<'_>,
    delivered: &[Delivered],
    now: i64,
) -> Result<()> {
    match conn {
        Tx::Sqlite(c) => {
            for d in latest_per_device(delivered) {
                sqlx::query(
                    "INSERT INTO devices (user_id, client_id, platform, delivered, last_seen) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT(user_id, client_id) DO UPDATE SET
                       delivered = MAX(delivered, excluded.delivered), platform = excluded.platform, last_seen = excluded.last_seen",
                )
                .bind(&d.user_id)
                .bind(&d.client_id)
                .bind(d.platform)
                .bind(d.up_to)
                .bind(now)
                .execute(&mut **c)
                .await?;
            }
        }
        // One statement for all: a statement is a round trip to the server.
        Tx::Postgres(c) => {
            let devices: Vec<&Delivered> = latest_per_device(delivered).collect();
            if devices.is_empty() {
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO devices (user_id, client_id, platform, delivered, last_seen)
                 SELECT u, c, p, d, $5 FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::bigint[]) AS t(u, c, p, d)
                 ON CONFLICT(user_id, client_id) DO UPDATE SET
                   delivered = GREATEST(devices.delivered, excluded.delivered), platform = excluded.platform, last_seen = excluded.last_seen",
            )
            .bind(devices.iter().map(|d| d.user_id.as_str()).collect::<Vec<_>>())
            .bind(devices.iter().map(|d| d.client_id.as_str()).collect::<Vec<_>>())
            .bind(devices.iter().map(|d| d.platform).collect::<Vec<_>>())
            .bind(devices.iter().map(|d| d.up_to).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut **c)
            .await?;
        }
    }
    Ok(())
}

/// The highest acknowledgement per device is all that matters.
fn latest_per_device(delivered: &[Delivered]) -> impl Iterator<Item = &Delivered> {
    let mut latest = std::collections::BTreeMap::<(&str, &str), &Delivered>::new();
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

/// The PostgreSQL statements of the batch: one per step, over arrays.
mod pg {
    use super::*;

    /// Moves each recipient's head past the batch's entries for them, in
    /// one statement, and returns the heads as they were (numbering starts
    /// after them). The upsert locks each head's row until the batch
    /// commits, in user order, the same in every writer: two writers wait
    /// for each other and never deadlock, and no two inbox entries of a
    /// user get one seq nor is one skipped.
    pub(super) async fn advance_heads(
        conn: &mut PgConnection,
        accepted: &[Accepted<'_>],
    ) -> Result<HashMap<String, i64>> {
        let mut added = std::collections::BTreeMap::<&str, i64>::new();
        for user in accepted.iter().flat_map(|a| a.recipients.iter().copied()) {
            *added.entry(user).or_default() += 1;
        }
        let users: Vec<&str> = added.keys().copied().collect();
        let counts: Vec<i64> = added.values().copied().collect();
        let heads: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO inbox_heads AS h (user_id, seq)
             SELECT u, n FROM UNNEST($1::text[], $2::bigint[]) AS t(u, n) ORDER BY u
             ON CONFLICT (user_id) DO UPDATE SET seq = h.seq + excluded.seq
             RETURNING h.user_id, h.seq",
        )
        .bind(&users)
        .bind(&counts)
        .fetch_all(&mut *conn)
        .await?;
        Ok(heads
            .into_iter()
            .map(|(user, now)| {
                let before = now - added.get(user.as_str()).copied().unwrap_or(0);
                (user, before)
            })
            .collect())
    }

    /// `n` ids from the shared sequence, ascending.
    pub(super) async fn assign_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<i64>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval('messages_id_seq') FROM generate_series(1, $1) ORDER BY 1",
        )
        .bind(n as i64)
        .fetch_all(&mut *conn)
        .await?;
        Ok(ids)
    }

    pub(super) async fn insert_messages(
        conn: &mut PgConnection,
        batch: &[NewMessage],
        rows: &[Numbered<'_>],
        now: i64,
    ) -> Result<()> {
        let n = rows.len();
        let (
            mut ids,
            mut senders,
            mut cmids,
            mut kinds,
            mut keys,
            mut targets,
            mut contents,
            mut sender_seqs,
        ) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in rows {
            let m = &batch[row.index];
            ids.push(row.id);
            senders.push(m.sender.as_str());
            cmids.push(m.client_msg_id.as_deref());
            kinds.push(m.conv.kind.as_str());
            keys.push(conv_key(&m.sender, &m.conv));
            targets.push(m.conv.target.as_str());
            contents.push(m.content.to_string());
            sender_seqs.push(
                row.seqs
                    .iter()
                    .find(|(u, _)| *u == m.sender)
                    .map(|(_, s)| *s),
            );
        }
        sqlx::query(
            "INSERT INTO messages (id, sender, client_msg_id, conv_type, conv_key, target, content, server_time, sender_seq)
             SELECT id, sender, cmid, kind, key, target, content, $8, sseq
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $9::bigint[])
               AS r(id, sender, cmid, kind, key, target, content, sseq)",
        )
        .bind(ids)
        .bind(senders)
        .bind(cmids)
        .bind(kinds)
        .bind(keys)
        .bind(targets)
        .bind(contents)
        .bind(now)
        .bind(sender_seqs)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Rows from which the inbox goes through `COPY`: it takes one round
    /// trip more than an `INSERT`, and pays off for a big group's batch.
    const COPY_FROM: usize = 4096;

    /// The inbox rows: through `COPY` in binary for a big batch (tens of
    /// thousands of rows, loaded without a statement to plan or arrays to
    /// unpack), else one `INSERT` over arrays.
    pub(super) async fn insert_inbox(conn: &mut PgConnection, rows: &[Numbered<'_>]) -> Result<()> {
        let mut inbox: Vec<(&str, i64, i64)> = rows
            .iter()
            .flat_map(|row| row.seqs.iter().map(|&(u, seq)| (u, seq, row.id)))
            .collect();
        inbox.sort_unstable();
        if inbox.len() < COPY_FROM {
            let (users, seqs, ids) = unzip3(&inbox);
            sqlx::query(
                "INSERT INTO inbox (user_id, seq, message_id)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
            )
            .bind(users)
            .bind(seqs)
            .bind(ids)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let mut copy = conn
            .copy_in_raw("COPY inbox (user_id, seq, message_id) FROM STDIN (FORMAT binary)")
            .await?;
        copy.send(copy_binary(&inbox)).await?;
        copy.finish().await?;
        Ok(())
    }

    /// `(text, bigint, bigint)` rows in PostgreSQL's binary `COPY` format.
    pub(super) fn copy_binary(rows: &[(&str, i64, i64)]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(21 + rows.iter().map(|(u, _, _)| 30 + u.len()).sum::<usize>());
        // Signature, flags, header extension length.
        out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        for (text, a, b) in rows {
            out.extend_from_slice(&3i16.to_be_bytes());
            out.extend_from_slice(&(text.len() as i32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
            for n in [a, b] {
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::on_pool;
    use crate::store::testing::{store, text};

    use serde_json::json;

    /// Two imctl processes on one PostgreSQL database (two stores, each
    /// with its own writer) sending to the same user at once: every inbox
    /// gets each seq exactly once, none skipped, and every message once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_writers_on_one_postgres_database_keep_seqs_gapless() {
        let Some(pg) = crate::pg_local::shared_or_skip("two_writers_on_one_postgres_database")
        else {
            return;
        };
        let url = pg.fresh_database().unwrap();
        let a = Store::open(&crate::store::Location::Postgres(url.clone()))
            .await
            .unwrap();
        let b = Store::open(&crate::store::Location::Postgres(url))
            .await
            .unwrap();
        a.seed_once(&crate::store::Fixtures::builtin())
            .await
            .unwrap();
        assert!(
            !b.seed_once(&crate::store::Fixtures::builtin())
                .await
                .unwrap()
        );
        const BATCHES: usize = 40;
        const PER_BATCH: usize = 10;
        // Each writer sends to bob and to the other writer's sender, and to a
        // group of all four, so the two lock overlapping heads in both orders.
        let group = {
            let mut heads = Heads::default();
            let out = a
                .change_group(
                    "alice",
                    &crate::store::GroupChange::Create {
                        name: "all".into(),
                        members: vec!["bob".into(), "carol".into(), "robot".into()],
                    },
                    &mut heads,
                )
                .await
                .unwrap()
                .unwrap();
            out.group.id
        };
        let writer = |s: Store, from: &'static str, other: &'static str, group: String| {
            tokio::spawn(async move {
                let mut heads = Heads::default();
                for i in 0..BATCHES {
                    let batch: Vec<NewMessage> = (0..PER_BATCH)
                        .map(|j| match j % 3 {
                            0 => text(from, "bob", None),
                            1 => text(from, other, Some(&format!("{from}-{i}-{j}"))),
                            _ => NewMessage {
                                conv: crate::wire::ws::Conversation {
                                    kind: ConvType::Group,
                                    target: group.clone(),
                                },
                                ..text(from, "bob", None)
                            },
                        })
                        .collect();
                    let out = s.append(&batch, &[], &mut heads).await.unwrap();
                    assert!(
                        out.iter().all(|o| matches!(o, Appended::Stored { .. })),
                        "{out:?}"
                    );
                }
            })
        };
        let (x, y) = tokio::join!(
            writer(a.clone(), "alice", "carol", group.clone()),
            writer(b.clone(), "carol", "alice", group)
        );
        x.unwrap();
        y.unwrap();
        for user in ["alice", "bob", "carol", "robot"] {
            let (entries, more) = a.inbox_since(user, 0, 10_000).await.unwrap();
            assert!(!more);
            let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
            assert_eq!(
                seqs,
                (1..=seqs.len() as i64).collect::<Vec<_>>(),
                "{user}'s seqs"
            );
            let mut ids: Vec<&str> = entries.iter().map(|e| e.message.msg_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), entries.len(), "{user} got a message twice");
        }
        // bob: a third of each writer's sends are to him, a third to the group;
        // robot only the group's (plus the group's creation notice, for all).
        let per_kind = |k: usize| 2 * BATCHES * (0..PER_BATCH).filter(|j| j % 3 == k).count();
        assert_eq!(
            b.inbox_head("bob").await.unwrap() as usize,
            1 + per_kind(0) + per_kind(2)
        );
        assert_eq!(
            b.inbox_head("robot").await.unwrap() as usize,
            1 + per_kind(2)
        );
    }

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
        on_pool!(&s.pool, p => sqlx::query("UPDATE messages SET sender_seq = NULL")
            .execute(p)
            .await
            .map(drop))
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
        // SQLite's own id counting (PostgreSQL's sequence refuses to wrap).
        let s = crate::store::testing::sqlite_store().await;
        let mut heads = Heads::default();
        sqlx::query("INSERT INTO messages (id, sender, conv_type, conv_key, target, content, server_time) VALUES (?, 'alice', 'single', 'alice|bob', 'bob', '{}', 0)")
            .bind(i64::MAX - 2)
            .execute(s.sqlite_pool())
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
        let numbering = number(accepted, &heads, 41..);
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
