//! Data snapshots (`wire::snapshot`): reading, checking and writing snapshot
//! files, and moving a snapshot out of and into the database.
//!
//! Import keeps every msgId, so ids, `clientMsgId` dedupe (and the robot's
//! answers, keyed by msgId) stay as they were; each user's inbox is rebuilt
//! in message order, gapless from seq 1, from each message's `recipients`
//! (export writes the users who had an inbox row for it, so members who
//! joined later, left, were removed or belonged to a dissolved group see
//! what they saw before). A hand-written message without `recipients` goes
//! to its sender and target (1:1) or the group's current members. The broker
//! writer's cache of inbox heads fills from the database on first use, so a
//! writer started after the import continues each user's seqs.
//!
//! `validate` checks what the database relies on (references resolve,
//! nothing unique appears twice, ids that build conversation keys) and no
//! more: whatever the store holds must import again, so rules that only some
//! ways in enforce (the admin API's 64-character ids and non-empty display
//! names, which fixtures do not) are not refused here.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::db::{Cols, Tx, on_tx};

use super::chat::{
    MAX_IMPORTED_MSG_ID, conv_key, message_columns, msg_id, parse_msg_id, raw_message_from_row,
};
use super::{Result, Store, now_ms};
pub use crate::wire::snapshot::Snapshot;
use crate::wire::snapshot::{
    RawContent, SnapshotFriendRequest, SnapshotGroup, SnapshotMember, SnapshotMessage,
    SnapshotUser, VERSION,
};
use crate::wire::ws::ConvType;

/// Senders that are not users: admin system messages and the admin's group
/// changes.
pub const RESERVED_SENDERS: [&str; 2] = ["system", crate::wire::ids::ADMIN_ACTOR];

const ROLES: [&str; 3] = ["owner", "admin", "member"];

/// Reads and checks a snapshot file; every error names the file.
pub fn load(path: &Path) -> anyhow::Result<Snapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the snapshot file {}", path.display()))?;
    parse(&text).with_context(|| format!("bad snapshot file {}", path.display()))
}

/// Parses and checks a snapshot.
pub fn parse(text: &str) -> anyhow::Result<Snapshot> {
    // The version first, so a snapshot of another version is named as such
    // rather than failing on a field this version does not know.
    #[derive(Deserialize)]
    struct Probe {
        version: Option<Value>,
    }
    let probe: Probe = serde_json::from_str(text).context("not a JSON snapshot object")?;
    match probe.version {
        None => bail!("no \"version\" field; a snapshot starts {{\"version\": {VERSION}, ...}}"),
        Some(v) if v != json!(VERSION) => {
            bail!("snapshot version {v} is not supported; this imctl reads version {VERSION}")
        }
        Some(_) => {}
    }
    let snapshot: Snapshot = serde_json::from_str(text)?;
    validate(&snapshot)?;
    Ok(snapshot)
}

/// What `parse` checks beyond the shape: every reference resolves, nothing
/// appears twice where the database allows it once.
pub fn validate(s: &Snapshot) -> anyhow::Result<()> {
    let mut users = HashSet::new();
    let mut mobiles = HashSet::new();
    for (i, u) in s.users.iter().enumerate() {
        let at = || format!("users[{i}] ({:?})", u.user_id);
        // No length limit and no rule on display names: fixtures have
        // neither, and an export of their data must import.
        if !super::is_valid_user_id(&u.user_id) {
            bail!(
                "{}: a user id is letters, digits, '-' or '_' (at least one)",
                at()
            );
        }
        if !users.insert(u.user_id.as_str()) {
            bail!("{}: user id {:?} appears twice", at(), u.user_id);
        }
        if let Some(m) = &u.mobile {
            if !crate::wire::ids::is_valid_mobile(m) {
                bail!("{}: mobile {m:?} is not 1[3-9] followed by 9 digits", at());
            }
            if !mobiles.insert(m.as_str()) {
                bail!("{}: mobile {m:?} appears twice", at());
            }
        }
    }
    let user = |what: String, id: &str| -> anyhow::Result<()> {
        if users.contains(id) {
            Ok(())
        } else {
            bail!("{what}: {id:?} is not a user of the snapshot")
        }
    };
    for (i, (a, b)) in s.friends.iter().enumerate() {
        user(format!("friends[{i}]"), a)?;
        user(format!("friends[{i}]"), b)?;
        if a == b {
            bail!("friends[{i}]: {a:?} cannot be their own friend");
        }
    }
    let mut requests = HashSet::new();
    for (i, r) in s.friend_requests.iter().enumerate() {
        user(format!("friendRequests[{i}].from"), &r.from)?;
        user(format!("friendRequests[{i}].to"), &r.to)?;
        if r.from == r.to {
            bail!("friendRequests[{i}]: {:?} cannot ask themself", r.from);
        }
        if !requests.insert((&r.from, &r.to)) {
            bail!(
                "friendRequests[{i}]: the request from {:?} to {:?} appears twice",
                r.from,
                r.to
            );
        }
    }
    let mut groups = HashSet::new();
    for (i, g) in s.groups.iter().enumerate() {
        let at = || format!("groups[{i}] ({:?})", g.group_id);
        if g.group_id.is_empty() {
            bail!("{}: groupId must not be empty", at());
        }
        if !groups.insert(g.group_id.as_str()) {
            bail!("{}: group id {:?} appears twice", at(), g.group_id);
        }
        if g.name.trim().is_empty() {
            bail!("{}: name must not be empty", at());
        }
        user(format!("{}.owner", at()), &g.owner)?;
        let mut members = HashSet::new();
        for (j, m) in g.members.iter().enumerate() {
            let at = || format!("{}.members[{j}]", at());
            user(at(), &m.user_id)?;
            if !members.insert(m.user_id.as_str()) {
                bail!("{}: {:?} is listed twice", at(), m.user_id);
            }
            if !ROLES.contains(&m.role.as_str()) {
                bail!(
                    "{}: role {:?} is not one of owner, admin, member",
                    at(),
                    m.role
                );
            }
            if m.role == "owner" && m.user_id != g.owner {
                bail!(
                    "{}: {:?} has role owner but the group's owner is {:?}",
                    at(),
                    m.user_id,
                    g.owner
                );
            }
        }
        match (g.dissolved_at, g.members.is_empty()) {
            (Some(_), false) => bail!("{}: a dissolved group has no members", at()),
            (None, _) if !g.members.iter().any(|m| m.role == "owner") => bail!(
                "{}: the owner {:?} must be a member with role owner",
                at(),
                g.owner
            ),
            _ => {}
        }
    }
    let mut last = 0;
    let mut client_ids = HashSet::new();
    for (i, m) in s.messages.iter().enumerate() {
        let at = || match &m.msg_id {
            Some(id) => format!("messages[{i}] ({id})"),
            None => format!("messages[{i}]"),
        };
        let id = match &m.msg_id {
            None => last + 1,
            Some(text) => parse_msg_id(text)
                .with_context(|| format!("{}: msgId {text:?} is not like \"m42\"", at()))?,
        };
        if id <= last {
            bail!(
                "{}: msgIds must ascend in the order messages were stored ({} came before)",
                at(),
                msg_id(last)
            );
        }
        if id > MAX_IMPORTED_MSG_ID {
            bail!(
                "{}: msgId {} leaves no room for new messages: msgIds above {} cannot be imported; renumber the messages (drop every \"msgId\" field and they are numbered from m1)",
                at(),
                msg_id(id),
                msg_id(MAX_IMPORTED_MSG_ID)
            );
        }
        last = id;
        if !users.contains(m.from.as_str()) && !RESERVED_SENDERS.contains(&m.from.as_str()) {
            bail!(
                "{}: from {:?} is not a user of the snapshot (nor system or @admin)",
                at(),
                m.from
            );
        }
        match m.conv.kind {
            ConvType::Single if !users.contains(m.conv.target.as_str()) => bail!(
                "{}: sent to {:?}, which is not a user of the snapshot",
                at(),
                m.conv.target
            ),
            ConvType::Group if !groups.contains(m.conv.target.as_str()) => bail!(
                "{}: sent to group {:?}, which is not a group of the snapshot",
                at(),
                m.conv.target
            ),
            _ => {}
        }
        if m.content.kind().is_none() {
            bail!(
                "{}: content must be an object with a \"type\", like {{\"type\": \"text\", \"text\": \"hi\"}}",
                at()
            );
        }
        if let Some(c) = &m.client_msg_id
            && !client_ids.insert((m.from.as_str(), c.as_str()))
        {
            bail!("{}: clientMsgId {c:?} of {:?} appears twice", at(), m.from);
        }
        let mut recipients = HashSet::new();
        for (j, r) in m.recipients.iter().flatten().enumerate() {
            user(format!("{}.recipients[{j}]", at()), r)?;
            if !recipients.insert(r.as_str()) {
                bail!("{}.recipients[{j}]: {r:?} is listed twice", at());
            }
        }
    }
    Ok(())
}

/// Writes `snapshot` as pretty JSON to `path` atomically: a temporary file
/// in the same directory, renamed over `path` once complete.
pub fn write(path: &Path, snapshot: &Snapshot) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let failed = || format!("cannot write the snapshot to {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".imctl-snapshot-")
        .tempfile_in(dir)
        .with_context(failed)?;
    serde_json::to_writer_pretty(&mut tmp, snapshot).with_context(failed)?;
    tmp.write_all(b"\n").with_context(failed)?;
    tmp.as_file().sync_all().with_context(failed)?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(failed)?;
    Ok(())
}

/// How much a snapshot holds, for messages to people.
pub fn summary(s: &Snapshot) -> String {
    format!(
        "{} users, {} friendships, {} friend requests, {} groups, {} messages",
        s.users.len(),
        s.friends.len(),
        s.friend_requests.len(),
        s.groups.len(),
        s.messages.len()
    )
}

impl Store {
    /// Everything a snapshot holds, read in one transaction so it is consistent.
    pub async fn export(&self) -> Result<Snapshot> {
        let mut tx = self.begin_read().await?;
        let (users, friends, friend_requests, groups, messages) = on_tx!(&mut tx, c => {
        let users = sqlx::query(
            "SELECT id, display_name, mobile, portrait, banned_at IS NOT NULL AS banned, created_at
             FROM users ORDER BY created_at, id",
        )
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| {
            Ok(SnapshotUser {
                user_id: r.try_get("id")?,
                display_name: r.try_get("display_name")?,
                mobile: r.try_get("mobile")?,
                portrait: r.try_get("portrait")?,
                banned: r.try_get("banned")?,
                created_at: Some(r.try_get("created_at")?),
            })
        })
        .collect::<Result<_>>()?;
        let friends: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT CASE WHEN user_id < friend_id THEN user_id ELSE friend_id END AS a,
                    CASE WHEN user_id < friend_id THEN friend_id ELSE user_id END AS b
             FROM friends ORDER BY a, b",
        )
        .fetch_all(&mut *c)
        .await?;
        let friend_requests = sqlx::query_as::<_, (String, String, String, i64)>(
            "SELECT from_user, to_user, remark, created_at FROM friend_requests
             WHERE status = 'pending' ORDER BY created_at, from_user, to_user",
        )
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .map(|(from, to, remark, created_at)| SnapshotFriendRequest {
            from,
            to,
            remark,
            created_at,
        })
        .collect();
        let mut groups: Vec<SnapshotGroup> = sqlx::query_as::<
            _,
            (String, String, String, i64, Option<i64>),
        >(
            "SELECT id, name, owner, created_at, dissolved_at FROM groups ORDER BY created_at, id",
        )
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .map(
            |(group_id, name, owner, created_at, dissolved_at)| SnapshotGroup {
                group_id,
                name,
                owner,
                created_at,
                members: Vec::new(),
                muted: false,
                dissolved_at,
            },
        )
        .collect();
        let mutes: HashSet<(String, String)> =
            sqlx::query_as("SELECT group_id, user_id FROM group_mutes")
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .collect();
        let members: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT group_id, user_id, role, joined_at FROM group_members
             ORDER BY group_id, CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, joined_at, user_id",
        )
        .fetch_all(&mut *c)
        .await?;
        let mut by_group: HashMap<String, Vec<SnapshotMember>> = HashMap::new();
        for (group, user_id, role, joined_at) in members {
            let muted = mutes.contains(&(group.clone(), user_id.clone()));
            by_group.entry(group).or_default().push(SnapshotMember {
                user_id,
                role,
                muted,
                joined_at: Some(joined_at),
            });
        }
        for g in &mut groups {
            g.muted = mutes.contains(&(g.group_id.clone(), String::new()));
            g.members = by_group.remove(&g.group_id).unwrap_or_default();
        }
        // Who has each message in their inbox, by user id.
        let mut recipients: HashMap<i64, Vec<String>> = HashMap::new();
        for (id, user) in sqlx::query_as::<_, (i64, String)>(
            "SELECT message_id, user_id FROM inbox ORDER BY message_id, user_id",
        )
        .fetch_all(&mut *c)
        .await?
        {
            recipients.entry(id).or_default().push(user);
        }
        // Row by row: each message's content is copied once, as stored
        // (never parsed), and no second copy of all rows is held.
        let mut messages = Vec::new();
        let mut rows = sqlx::query(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m ORDER BY m.id"
        ))
        .fetch(&mut *c);
        while let Some(r) = futures_util::TryStreamExt::try_next(&mut rows).await? {
            let id: i64 = r.int("id")?;
            let m = raw_message_from_row(&r)?;
            messages.push(SnapshotMessage {
                msg_id: Some(m.msg_id),
                from: m.from.to_owned(),
                conv: m.conv,
                content: RawContent(m.content.to_owned()),
                server_time: m.server_time,
                client_msg_id: m.client_msg_id.map(str::to_owned),
                recipients: Some(recipients.remove(&id).unwrap_or_default()),
            });
        }
        drop(rows);
        (users, friends, friend_requests, groups, messages)
        });
        tx.commit().await?;
        Ok(Snapshot {
            version: VERSION,
            exported_at: now_ms(),
            users,
            friends,
            friend_requests,
            groups,
            messages,
        })
    }

    /// Loads a checked snapshot (see [`parse`]) into a database that holds
    /// nothing yet, in one transaction, and marks the database seeded so
    /// fixtures are never added to it. `Ok(false)`, with nothing changed,
    /// when the database already has data.
    pub async fn import(&self, snapshot: &Snapshot) -> Result<bool> {
        let mut tx = self.begin().await?;
        if !is_empty(&mut tx).await? {
            return Ok(false);
        }
        insert_all(&mut tx, snapshot, now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Whether the database is as migrations left it: no fixtures seeded, no
/// users, groups, friends or messages.
async fn is_empty(conn: &mut Tx<'_>) -> Result<bool> {
    Ok(on_tx!(conn, c => sqlx::query_scalar(
        "SELECT NOT (EXISTS (SELECT 1 FROM settings WHERE key = 'seeded')
                  OR EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM groups)
                  OR EXISTS (SELECT 1 FROM friends) OR EXISTS (SELECT 1 FROM friend_requests)
                  OR EXISTS (SELECT 1 FROM messages))",
    )
    .fetch_one(&mut *c)
    .await)?)
}

/// `items` as one JSON array, for a `json_each` parameter.
fn json_rows(items: impl IntoIterator<Item = Value>) -> String {
    Value::Array(items.into_iter().collect()).to_string()
}

/// Inserts every row of a JSON array of rows (the one parameter), column
/// `i` from element `i`. Built from constants only. PostgreSQL reads JSON
/// elements as text, so each column is cast to its type there.
async fn insert_rows(
    conn: &mut Tx<'_>,
    table: &str,
    columns: &[(&str, &str)],
    suffix: &str,
    rows: String,
) -> Result<()> {
    let pg = matches!(conn, Tx::Postgres(_));
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let values: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| match (pg, *ty) {
            (true, "text") | (false, _) => format!("value->>{i}"),
            (true, ty) => format!("(value->>{i})::{ty}"),
        })
        .collect();
    let source = if pg {
        "json_array_elements($1::json)"
    } else {
        "json_each($1)"
    };
    // `WHERE true`: SQLite reads `ON CONFLICT` after a bare `FROM` as a join's.
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {source} WHERE true {suffix}",
        names.join(", "),
        values.join(", ")
    );
    on_tx!(conn, c => sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rows)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Zero (absent) times become the import's time.
fn or_now(t: i64, now: i64) -> i64 {
    if t == 0 { now } else { t }
}

async fn insert_all(conn: &mut Tx<'_>, s: &Snapshot, now: i64) -> Result<()> {
    on_tx!(conn, c => sqlx::query(
        "INSERT INTO settings (key, value) VALUES ('seeded', '1') ON CONFLICT(key) DO NOTHING",
    )
    .execute(&mut *c)
    .await.map(|r| r.rows_affected()))?;
    let users = s.users.iter().map(|u| {
        json!([
            u.user_id,
            u.mobile,
            u.display_name,
            u.portrait,
            u.created_at.unwrap_or(now),
            u.banned.then_some(now)
        ])
    });
    insert_rows(
        conn,
        "users",
        &[
            ("id", "text"),
            ("mobile", "text"),
            ("display_name", "text"),
            ("portrait", "text"),
            ("created_at", "bigint"),
            ("banned_at", "bigint"),
        ],
        "",
        json_rows(users),
    )
    .await?;

    let friends = s
        .friends
        .iter()
        .flat_map(|(a, b)| [json!([a, b, now]), json!([b, a, now])]);
    insert_rows(
        conn,
        "friends",
        &[
            ("user_id", "text"),
            ("friend_id", "text"),
            ("created_at", "bigint"),
        ],
        "ON CONFLICT DO NOTHING",
        json_rows(friends),
    )
    .await?;

    let requests = s.friend_requests.iter().map(|r| {
        let at = or_now(r.created_at, now);
        json!([r.from, r.to, r.remark, "pending", at, at])
    });
    insert_rows(
        conn,
        "friend_requests",
        &[
            ("from_user", "text"),
            ("to_user", "text"),
            ("remark", "text"),
            ("status", "text"),
            ("created_at", "bigint"),
            ("updated_at", "bigint"),
        ],
        "",
        json_rows(requests),
    )
    .await?;

    let groups = s.groups.iter().map(|g| {
        json!([
            g.group_id,
            g.name,
            g.owner,
            or_now(g.created_at, now),
            g.dissolved_at
        ])
    });
    insert_rows(
        conn,
        "groups",
        &[
            ("id", "text"),
            ("name", "text"),
            ("owner", "text"),
            ("created_at", "bigint"),
            ("dissolved_at", "bigint"),
        ],
        "",
        json_rows(groups),
    )
    .await?;
    let members = s.groups.iter().flat_map(|g| {
        let created = or_now(g.created_at, now);
        g.members.iter().map(move |m| {
            json!([
                g.group_id,
                m.user_id,
                m.role,
                m.joined_at.unwrap_or(created)
            ])
        })
    });
    insert_rows(
        conn,
        "group_members",
        &[
            ("group_id", "text"),
            ("user_id", "text"),
            ("role", "text"),
            ("joined_at", "bigint"),
        ],
        "",
        json_rows(members),
    )
    .await?;
    let mutes = s.groups.iter().flat_map(|g| {
        let whole = g.muted.then(|| json!([g.group_id, ""]));
        whole.into_iter().chain(
            g.members
                .iter()
                .filter(|m| m.muted)
                .map(|m| json!([g.group_id, m.user_id])),
        )
    });
    insert_rows(
        conn,
        "group_mutes",
        &[("group_id", "text"), ("user_id", "text")],
        "",
        json_rows(mutes),
    )
    .await?;

    // Messages keep their ids (AUTOINCREMENT then continues after the
    // highest); inbox entries are rebuilt in message order, for the
    // message's recipients or, without them, its conversation's.
    let members_of: HashMap<&str, Vec<&str>> = s
        .groups
        .iter()
        .map(|g| {
            let ids = g.members.iter().map(|m| m.user_id.as_str()).collect();
            (g.group_id.as_str(), ids)
        })
        .collect();
    let users: HashSet<&str> = s.users.iter().map(|u| u.user_id.as_str()).collect();
    let mut heads = HashMap::<&str, i64>::new();
    let mut messages = Vec::with_capacity(s.messages.len());
    let mut inbox = Vec::new();
    let mut last = 0;
    for m in &s.messages {
        let id = m
            .msg_id
            .as_deref()
            .and_then(parse_msg_id)
            .unwrap_or(last + 1);
        last = id;
        let recipients: Vec<&str> = match (&m.recipients, m.conv.kind) {
            (Some(r), _) => r.iter().map(String::as_str).collect(),
            (None, ConvType::Single) => {
                let mut r = Vec::with_capacity(2);
                if users.contains(m.from.as_str()) {
                    r.push(m.from.as_str());
                }
                if m.conv.target != m.from {
                    r.push(m.conv.target.as_str());
                }
                r
            }
            (None, ConvType::Group) => members_of
                .get(m.conv.target.as_str())
                .cloned()
                .unwrap_or_default(),
        };
        let mut sender_seq = None;
        for u in recipients {
            let seq = heads.entry(u).or_insert(0);
            *seq += 1;
            if u == m.from {
                sender_seq = Some(*seq);
            }
            inbox.push(json!([u, *seq, id]));
        }
        messages.push(json!([
            id,
            m.from,
            m.client_msg_id,
            m.conv.kind.as_str(),
            conv_key(&m.from, &m.conv),
            m.conv.target,
            m.content.get(),
            or_now(m.server_time, now),
            sender_seq
        ]));
    }
    insert_rows(
        conn,
        "messages",
        &[
            ("id", "bigint"),
            ("sender", "text"),
            ("client_msg_id", "text"),
            ("conv_type", "text"),
            ("conv_key", "text"),
            ("target", "text"),
            ("content", "text"),
            ("server_time", "bigint"),
            ("sender_seq", "bigint"),
        ],
        "",
        json_rows(messages),
    )
    .await?;
    insert_rows(
        conn,
        "inbox",
        &[
            ("user_id", "text"),
            ("seq", "bigint"),
            ("message_id", "bigint"),
        ],
        "",
        json_rows(inbox),
    )
    .await?;
    if let Tx::Postgres(c) = conn {
        // What SQLite's AUTOINCREMENT and the writer's cache derive by
        // themselves: the next message id and every user's inbox head.
        sqlx::query("SELECT setval('messages_id_seq', (SELECT COALESCE(MAX(id), 0) + 1 FROM messages), false)")
            .execute(&mut **c)
            .await?;
        sqlx::query("INSERT INTO inbox_heads (user_id, seq) SELECT user_id, MAX(seq) FROM inbox GROUP BY user_id")
            .execute(&mut **c)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Appended, Before, Fixtures, GroupChange, Heads, NewMessage, Refused, Why};
    use crate::wire::ws::Conversation;

    fn text(from: &str, kind: ConvType, to: &str, cmid: Option<&str>) -> NewMessage {
        NewMessage {
            sender: from.into(),
            conv: Conversation {
                kind,
                target: to.into(),
            },
            content: json!({"type": "text", "text": format!("{from} to {to}")}),
            client_msg_id: cmid.map(Into::into),
            recipients: None,
        }
    }

    /// alice and bob are friends, carol asked alice; a group of three;
    /// 1:1, group and system messages.
    async fn busy_store() -> (Store, String) {
        let s = crate::store::testing::empty_store().await;
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        s.friend_request("alice", "bob", "hi")
            .await
            .unwrap()
            .unwrap();
        s.friend_answer("bob", "alice", true)
            .await
            .unwrap()
            .unwrap();
        s.friend_request("carol", "alice", "me too")
            .await
            .unwrap()
            .unwrap();
        let mut heads = Heads::default();
        let group = s
            .change_group(
                "alice",
                &crate::store::GroupChange::Create {
                    name: "team".into(),
                    members: vec!["bob".into(), "carol".into()],
                },
                &mut heads,
            )
            .await
            .unwrap()
            .unwrap()
            .group
            .id;
        let mut system = text("system", ConvType::Single, "bob", None);
        system.recipients = Some(vec!["bob".into()]);
        s.append(
            &[
                text("alice", ConvType::Single, "bob", Some("c1")),
                text("bob", ConvType::Group, &group, Some("c1")),
                system,
                text("carol", ConvType::Single, "carol", None),
            ],
            &[],
            &mut heads,
        )
        .await
        .unwrap();
        s.set_banned("carol", true).await.unwrap();
        s.set_muted_in_group(&group, Some("bob"), true)
            .await
            .unwrap();
        (s, group)
    }

    /// Two exports hold the same data (they differ in when they were made).
    fn assert_same_data(got: Snapshot, want: &Snapshot) {
        let unstamped = |s: Snapshot| Snapshot {
            exported_at: 0,
            ..s
        };
        assert_eq!(unstamped(got), unstamped(want.clone()));
    }

    /// `imctl export` from one backend, `serve --import` into the other:
    /// the same data, and the imported store goes on with the next ids and
    /// seqs (PostgreSQL's sequence and inbox heads are set by the import).
    #[tokio::test]
    async fn a_snapshot_moves_between_sqlite_and_postgres() {
        let (s, _) = busy_store().await;
        let snap = s.export().await.unwrap();
        let other = if s.is_postgres() {
            crate::store::Location::Memory
        } else {
            let Some(pg) =
                crate::pg_local::shared_or_skip("a_snapshot_moves_between_sqlite_and_postgres")
            else {
                return;
            };
            crate::store::Location::Postgres(pg.fresh_database().unwrap())
        };
        let t = Store::open(&other).await.unwrap();
        assert_ne!(t.is_postgres(), s.is_postgres());
        assert!(t.import(&snap).await.unwrap());
        assert_same_data(t.export().await.unwrap(), &snap);
        let mut heads = Heads::default();
        let out = t
            .append(
                &[text("alice", ConvType::Single, "bob", None)],
                &[],
                &mut heads,
            )
            .await
            .unwrap();
        let Appended::Stored { message, seqs } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(message.msg_id, "m6");
        assert_eq!(seqs, &[("alice".to_string(), 4), ("bob".to_string(), 5)]);
    }

    #[tokio::test]
    async fn export_import_round_trip_keeps_ids_seqs_and_dedupe() {
        let (s, group) = busy_store().await;
        let snap = s.export().await.unwrap();
        assert_eq!(snap.friends, [("alice".to_string(), "bob".to_string())]);
        assert_eq!(snap.friend_requests.len(), 1);
        assert_eq!(snap.messages.len(), 5, "{:#?}", snap.messages);
        let json = serde_json::to_string_pretty(&snap).unwrap();
        let back = parse(&json).unwrap();
        assert_eq!(back, snap);

        let t = crate::store::testing::empty_store().await;
        assert!(t.import(&back).await.unwrap());
        assert_same_data(t.export().await.unwrap(), &snap);
        // Inboxes: gapless from 1, in message order.
        let (bob, _) = t.inbox_since("bob", 0, 100).await.unwrap();
        assert_eq!(
            bob.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=bob.len() as i64).collect::<Vec<_>>()
        );
        let bob_msgs: Vec<_> = bob.iter().map(|e| e.message.msg_id.as_str()).collect();
        // The group's "created" notice, alice's message, bob's group message, the system message.
        assert_eq!(bob_msgs, ["m1", "m2", "m3", "m4"]);
        let (carol, _) = t.inbox_since("carol", 0, 100).await.unwrap();
        assert_eq!(
            carol
                .iter()
                .map(|e| (e.seq, e.message.msg_id.as_str()))
                .collect::<Vec<_>>(),
            [(1, "m1"), (2, "m3"), (3, "m5")]
        );
        assert!(t.is_banned("carol").await.unwrap());
        assert!(t.are_friends("bob", "alice").await.unwrap());

        // A fresh writer continues seqs and ids, and dedupes old clientMsgIds.
        let mut heads = Heads::default();
        let out = t
            .append(
                &[
                    text("alice", ConvType::Single, "bob", Some("c1")),
                    text("alice", ConvType::Group, &group, None),
                    text("bob", ConvType::Group, &group, None),
                ],
                &[],
                &mut heads,
            )
            .await
            .unwrap();
        let Appended::Duplicate {
            message,
            sender_seq,
        } = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!((message.msg_id.as_str(), *sender_seq), ("m2", 2));
        let Appended::Stored { message, seqs } = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(message.msg_id, "m6");
        assert!(seqs.contains(&("bob".to_string(), 5)), "{seqs:?}");
        assert!(seqs.contains(&("carol".to_string(), 4)), "{seqs:?}");
        // bob is muted in the group, as he was.
        assert!(matches!(
            &out[2],
            Appended::Rejected(Refused {
                why: Why::NotAllowed,
                ..
            })
        ));

        // Nothing is imported twice, and fixtures are never seeded on top.
        assert!(!t.import(&back).await.unwrap());
        assert!(!t.seed_once(&Fixtures::builtin()).await.unwrap());
        let seeded = crate::store::testing::empty_store().await;
        seeded.seed_once(&Fixtures::builtin()).await.unwrap();
        assert!(!seeded.import(&back).await.unwrap());
    }

    /// `user`'s whole inbox as (seq, msgId).
    async fn inbox_of(s: &Store, user: &str) -> Vec<(i64, String)> {
        let (entries, more) = s.inbox_since(user, 0, 1000).await.unwrap();
        assert!(!more);
        entries
            .into_iter()
            .map(|e| (e.seq, e.message.msg_id))
            .collect()
    }

    fn ids(inbox: &[(i64, String)]) -> Vec<&str> {
        inbox.iter().map(|(_, id)| id.as_str()).collect()
    }

    async fn change(s: &Store, heads: &mut Heads, actor: &str, c: GroupChange) -> String {
        s.change_group(actor, &c, heads)
            .await
            .unwrap()
            .unwrap()
            .group
            .id
    }

    /// A group that carol joins late and bob is removed from, with a system
    /// message to it; a dissolved group; a 1:1 message.
    async fn changing_groups_store() -> (Store, String, String) {
        let s = crate::store::testing::empty_store().await;
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        let mut heads = Heads::default();
        let names = |v: &[&str]| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let create = |name: &str, members: &[&str]| GroupChange::Create {
            name: name.into(),
            members: names(members),
        };
        let team = change(&s, &mut heads, "alice", create("team", &["bob"])).await; // m1
        let say = |from: &str, kind: ConvType, to: &str| text(from, kind, to, None);
        s.append(&[say("alice", ConvType::Group, &team)], &[], &mut heads) // m2
            .await
            .unwrap();
        let add = GroupChange::Add {
            group: team.clone(),
            members: names(&["carol"]),
        };
        change(&s, &mut heads, "alice", add).await; // m3
        s.append(&[say("bob", ConvType::Group, &team)], &[], &mut heads) // m4
            .await
            .unwrap();
        let remove = GroupChange::Remove {
            group: team.clone(),
            members: names(&["bob"]),
        };
        change(&s, &mut heads, "alice", remove).await; // m5, bob hears of it
        let mut system = say("system", ConvType::Group, &team);
        system.recipients = Some(s.group_members(&team).await.unwrap());
        s.append(
            &[say("carol", ConvType::Group, &team), system], // m6, m7
            &[],
            &mut heads,
        )
        .await
        .unwrap();
        let gone = change(&s, &mut heads, "bob", create("gone", &["carol"])).await; // m8
        s.append(&[say("carol", ConvType::Group, &gone)], &[], &mut heads) // m9
            .await
            .unwrap();
        let dissolve = GroupChange::Dissolve {
            group: gone.clone(),
        };
        change(&s, &mut heads, "bob", dissolve).await; // m10
        s.append(&[say("alice", ConvType::Single, "bob")], &[], &mut heads) // m11
            .await
            .unwrap();
        (s, team, gone)
    }

    #[tokio::test]
    async fn import_gives_each_message_to_whoever_had_it() {
        let (s, team, gone) = changing_groups_store().await;
        let users = ["alice", "bob", "carol", "robot"];
        let mut before = Vec::new();
        for u in users {
            before.push(inbox_of(&s, u).await);
        }
        assert_eq!(
            ids(&before[0]),
            ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m11"]
        );
        assert_eq!(
            ids(&before[1]),
            ["m1", "m2", "m3", "m4", "m5", "m8", "m9", "m10", "m11"]
        );
        assert_eq!(
            ids(&before[2]),
            ["m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"]
        );

        let snap = s.export().await.unwrap();
        let recipients = |id: &str| {
            let m = snap
                .messages
                .iter()
                .find(|m| m.msg_id.as_deref() == Some(id));
            m.unwrap().recipients.clone().unwrap()
        };
        assert_eq!(recipients("m5"), ["alice", "bob", "carol"]);
        assert_eq!(
            recipients("m7"),
            ["alice", "carol"],
            "not the system sender"
        );
        assert_eq!(recipients("m10"), ["bob", "carol"]);
        assert_eq!(recipients("m11"), ["alice", "bob"]);
        let back = parse(&serde_json::to_string_pretty(&snap).unwrap()).unwrap();
        assert_eq!(back, snap);

        let t = crate::store::testing::empty_store().await;
        assert!(t.import(&back).await.unwrap());
        for (u, before) in users.iter().zip(&before) {
            let after = inbox_of(&t, u).await;
            assert_eq!(&after, before, "{u}");
            let seqs: Vec<i64> = after.iter().map(|(seq, _)| *seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "{u}");
        }
        for (user, group) in [("carol", &team), ("bob", &team), ("carol", &gone)] {
            let conv = Conversation {
                kind: ConvType::Group,
                target: group.clone(),
            };
            assert_eq!(
                t.history(user, &conv, Before::Latest, 100).await.unwrap(),
                s.history(user, &conv, Before::Latest, 100).await.unwrap(),
            );
        }
        assert_same_data(t.export().await.unwrap(), &snap);

        // A fresh writer continues bob's seqs and the sender's own seq.
        let mut heads = Heads::default();
        let out = t
            .append(
                &[text("bob", ConvType::Single, "alice", Some("later"))],
                &[],
                &mut heads,
            )
            .await
            .unwrap();
        let Appended::Stored { seqs, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(seqs, &[("bob".to_string(), 10), ("alice".to_string(), 9)]);
    }

    #[tokio::test]
    async fn messages_without_recipients_go_to_the_conversation() {
        let (s, team, _) = changing_groups_store().await;
        let mut snap = s.export().await.unwrap();
        // Hand-written: only the 1:1 message and the system message say who got them.
        for m in &mut snap.messages {
            if !matches!(m.msg_id.as_deref(), Some("m7" | "m11")) {
                m.recipients = None;
            }
        }
        let t = crate::store::testing::empty_store().await;
        assert!(t.import(&snap).await.unwrap());
        // team's messages go to its current members, alice and carol; the
        // dissolved group's to nobody; m7 and m11 as listed.
        assert_eq!(
            ids(&inbox_of(&t, "alice").await),
            ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m11"]
        );
        assert_eq!(ids(&inbox_of(&t, "bob").await), ["m11"]);
        let carol = inbox_of(&t, "carol").await;
        assert_eq!(ids(&carol), ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]);
        assert_eq!(carol[6].0, 7);
        assert!(t.is_group_member(&team, "carol").await.unwrap());
        // Exported again, each message names who has it now.
        let again = t.export().await.unwrap();
        assert_eq!(
            again.messages[0].recipients,
            Some(vec!["alice".into(), "carol".into()])
        );
        assert_eq!(again.messages[8].recipients, Some(vec![]));
    }

    #[tokio::test]
    async fn whatever_fixtures_hold_exports_and_imports() {
        let long = "u".repeat(80);
        let fixtures = Fixtures::parse(&format!(
            r#"{{"users":[{{"userId":"{long}","displayName":""}},{{"userId":"b","displayName":"  "}}]}}"#
        ))
        .unwrap();
        let s = crate::store::testing::empty_store().await;
        s.seed_once(&fixtures).await.unwrap();
        let mut heads = Heads::default();
        s.append(&[text(&long, ConvType::Single, "b", None)], &[], &mut heads)
            .await
            .unwrap();
        let snap = s.export().await.unwrap();
        let back = parse(&serde_json::to_string(&snap).unwrap()).unwrap();
        let t = crate::store::testing::empty_store().await;
        assert!(t.import(&back).await.unwrap());
        assert_eq!(ids(&inbox_of(&t, "b").await), ["m1"]);
        assert_eq!(ids(&inbox_of(&t, &long).await), ["m1"]);
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn bad_snapshots_say_what_is_wrong() {
        let u = |id: &str| format!(r#"{{"userId":"{id}","displayName":"{id}"}}"#);
        let snap = |users: &[&str], rest: &str| {
            let users: Vec<_> = users.iter().map(|id| u(id)).collect();
            format!(r#"{{"version":1,"users":[{}]{rest}}}"#, users.join(","))
        };
        assert!(err("{\"version\": 1,\n \"users\": [}").contains("line 2 column"));
        assert!(err(r#"{"users":[]}"#).contains("no \"version\""));
        assert!(err(r#"{"version":2,"future":true}"#).contains("version 2 is not supported"));
        assert!(err(&snap(&["a", "a"], "")).contains("\"a\" appears twice"));
        assert!(err(&snap(&["a"], r#","friends":[["a","b"]]"#)).contains("\"b\" is not a user"));
        let msg = |from: &str, kind: &str, to: &str| {
            format!(
                r#","messages":[{{"msgId":"m1","from":"{from}","conv":{{"type":"{kind}","target":"{to}"}},"content":{{"type":"text","text":"x"}},"serverTime":1}}]"#
            )
        };
        assert!(err(&snap(&["a"], &msg("zed", "single", "a"))).contains("from \"zed\""));
        assert!(err(&snap(&["a"], &msg("a", "single", "zed"))).contains("sent to \"zed\""));
        assert!(err(&snap(&["a"], &msg("a", "group", "g9"))).contains("group \"g9\""));
        assert!(parse(&snap(&["a"], &msg("system", "single", "a"))).is_ok());
        let group = r#","groups":[{"groupId":"g1","name":"G","owner":"a","members":[{"userId":"a","role":"owner"},{"userId":"ghost"}]}]"#;
        assert!(err(&snap(&["a"], group)).contains("\"ghost\" is not a user"));
        let two = r#","messages":[{"msgId":"m2","from":"a","conv":{"type":"single","target":"a"},"content":{"type":"text","text":"x"}},{"msgId":"m1","from":"a","conv":{"type":"single","target":"a"},"content":{"type":"text","text":"y"}}]"#;
        assert!(err(&snap(&["a"], two)).contains("must ascend"));
        let to = |recipients: &str| {
            format!(
                r#","messages":[{{"msgId":"m1","from":"a","conv":{{"type":"single","target":"b"}},"content":{{"type":"text","text":"x"}},"recipients":{recipients}}}]"#
            )
        };
        assert!(
            err(&snap(&["a", "b"], &to(r#"["a","zed"]"#)))
                .contains("messages[0] (m1).recipients[1]: \"zed\" is not a user")
        );
        assert!(err(&snap(&["a", "b"], &to(r#"["b","b"]"#))).contains("\"b\" is listed twice"));
        assert!(parse(&snap(&["a", "b"], &to("[]"))).is_ok());
        assert!(err(&snap(&["a b"], "")).contains("a user id is letters"));
    }
}
