//! The store: SQLite embedded, or a PostgreSQL server (`db`). Every SQL
//! statement of imctl lives in this module, always with bound parameters.

mod account;
mod admin;
mod chat;
mod convs;
mod db;
mod favorites;
mod fixtures;
mod groups;
pub mod snapshot;
mod social;
#[cfg(test)]
pub(crate) mod testing;

pub use admin::AdminUser;
pub use chat::{
    Appended, Before, Delivered, Heads, MAX_IMPORTED_MSG_ID, NewMessage, msg_id, parse_msg_id,
};
pub use convs::{ConversationEntry, DeliveredTo};
pub use favorites::{Announcement, Favorite};
pub use fixtures::Fixtures;
pub use groups::{GroupChange, GroupInfo, GroupMember, GroupOutcome, GroupSummary};
pub use social::{FriendRequest, Media, Requested};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Sqlite};

pub use db::mask_password;
use db::{Pool, Tx, on_pool, on_tx};

use crate::token::token_hash;
use crate::wire::http::UserSummary;

/// The database failed (I/O, a full disk, a corrupt file), as opposed to a
/// [`Refused`] change; callers log it and answer "server error" without
/// naming the driver.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] sqlx::Error);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store could not be opened, as far as the user can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenProblem {
    /// The URL, user, password or database name is wrong.
    Settings,
    /// The server cannot be reached.
    Unreachable,
}

impl Error {
    /// The database cannot be reached right now (a PostgreSQL restart, a
    /// network cut), as opposed to a statement that failed: worth retrying.
    /// Worth committing the same batch again at once: another imctl
    /// process on the same PostgreSQL database got in the way (a deadlock
    /// or a serialization failure, or it stored the same retried send
    /// first, which the next attempt answers as a duplicate).
    pub fn is_conflict(&self) -> bool {
        let sqlx::Error::Database(db) = &self.0 else {
            return false;
        };
        match db.code().as_deref() {
            Some("40P01") | Some("40001") => true,
            Some("23505") => db.constraint() == Some("messages_dedupe"),
            _ => false,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        match &self.0 {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => true,
            // Connection exceptions (class 08), and a server shutting down
            // or starting up (57P01-57P03).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")),
            _ => false,
        }
    }

    /// When opening `location` failed for a reason the user can fix: which,
    /// and one line saying what and how. `None` for anything else.
    pub fn open_problem(&self, location: &Location) -> Option<(OpenProblem, String)> {
        let Location::Postgres(url) = location else {
            return None;
        };
        db::open_problem(&self.0, url)
    }
}

/// Why the store refused a change; nothing was written. It carries no wire
/// code: each edge (the broker's `error` frame, the admin API's HTTP
/// status, a Wildfire code) maps [`Why`] once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub why: Why,
    /// Says what and how to fix it, for the user.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A user, group, message or friend request that does not exist.
    Missing,
    /// The actor may not: not a member, muted, not the owner.
    NotAllowed,
    /// The request itself is wrong: an empty name, oneself.
    Invalid,
    /// It is so already: friends, or asked before.
    Already,
}

impl Refused {
    pub fn new(why: Why, message: impl Into<String>) -> Self {
        Refused {
            why,
            message: message.into(),
        }
    }
}

/// Where the database lives.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// One in-memory SQLite database, gone when the process ends.
    Memory,
    /// A SQLite file, created if missing.
    File(PathBuf),
    /// A PostgreSQL database, `postgres://user:pass@host:port/db`; it must exist.
    Postgres(String),
}

impl Location {
    /// A `--database` value: `postgres://…` (or `postgresql://…`),
    /// `sqlite://PATH`, `sqlite::memory:`, or a file path.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(
                "the database is empty: give a path, sqlite://PATH or postgres://user:pass@host/db"
                    .into(),
            );
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Location::Postgres(value.to_owned()));
        }
        if value == "sqlite::memory:" || value == ":memory:" {
            return Ok(Location::Memory);
        }
        if let Some(path) = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(format!("{value:?} names no file: write sqlite://PATH"));
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!(
                "unknown database scheme {scheme:?}: use postgres://user:pass@host/db, sqlite://PATH or a file path"
            ));
        }
        Ok(Location::File(PathBuf::from(value)))
    }

    /// How banners and logs show it: the password masked.
    pub fn display(&self) -> String {
        match self {
            Location::Memory => "SQLite in memory".into(),
            Location::File(path) => format!("SQLite {}", path.display()),
            Location::Postgres(url) => format!("PostgreSQL {}", mask_password(url)),
        }
    }
}

/// A row of `users`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub mobile: Option<String>,
    pub display_name: String,
    pub portrait: Option<String>,
}

impl User {
    pub fn summary(&self) -> UserSummary {
        UserSummary {
            user_id: self.id.clone(),
            display_name: self.display_name.clone(),
            mobile: self.mobile.clone(),
            portrait: self.portrait.clone(),
        }
    }
}

/// A user and whether an administrator banned them.
#[derive(sqlx::FromRow)]
struct UserStatus {
    #[sqlx(flatten)]
    user: User,
    banned: bool,
}

/// A login session found by its `authToken`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthSession {
    pub user_id: String,
    pub client_id: String,
    pub platform: i32,
}

pub use crate::files::create_private_dir;
pub use crate::wire::ids::{is_valid_user_id, now_ms};

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The broker writer's own connection (on-disk stores only). In WAL mode
    /// a connection drops its page cache whenever another one has written,
    /// so commits that hop between pool connections start cold; one
    /// connection for the writer keeps the hot pages cached.
    writer: Arc<tokio::sync::Mutex<Option<PoolConnection<Sqlite>>>>,
    /// Whether the writer should have a connection of its own (on disk).
    dedicated_writer: bool,
}

impl Store {
    /// Opens (creating if needed) the database and runs the migrations.
    pub async fn open(location: &Location) -> Result<Self> {
        let (pool, dedicated_writer) = match location {
            Location::Postgres(url) => {
                let pool = db::connect_postgres(url).await?;
                migrate(&db::POSTGRES_MIGRATIONS, &pool).await?;
                (Pool::Postgres(pool), false)
            }
            Location::Memory | Location::File(_) => {
                let pool = open_sqlite(location).await?;
                migrate(&db::SQLITE_MIGRATIONS, &pool).await?;
                (Pool::Sqlite(pool), matches!(location, Location::File(_)))
            }
        };
        Ok(Self {
            pool,
            writer: Arc::new(tokio::sync::Mutex::new(None)),
            dedicated_writer,
        })
    }

    /// The SQLite pool, for tests of SQLite's own behaviour.
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.pool {
            Pool::Sqlite(pool) => pool,
            Pool::Postgres(_) => panic!("a SQLite test opened a PostgreSQL store"),
        }
    }

    /// Whether this store is a PostgreSQL server (several processes may share it).
    pub fn is_postgres(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// The writer's dedicated connection, if the store has one.
    pub(crate) async fn writer_conn(
        &self,
    ) -> tokio::sync::MutexGuard<'_, Option<PoolConnection<Sqlite>>> {
        self.writer.lock().await
    }

    /// A write transaction: on SQLite, `BEGIN IMMEDIATE` (on the dedicated
    /// connection when there is one); on PostgreSQL, from the pool.
    pub(crate) async fn begin_write<'a>(
        &'a self,
        dedicated: &'a mut Option<PoolConnection<Sqlite>>,
    ) -> Result<Tx<'a>> {
        let pool = match &self.pool {
            Pool::Postgres(pool) => return Ok(Tx::Postgres(pool.begin().await?)),
            Pool::Sqlite(pool) => pool,
        };
        if dedicated.is_none() && self.dedicated_writer {
            let mut conn = pool.acquire().await?;
            // The writer touches the tail pages of every active user's inbox
            // and conversation at each commit: 64 MiB keeps them cached (the
            // default 2 MiB did not at 200 users). Readers keep the default.
            sqlx::query("PRAGMA cache_size = -65536")
                .execute(&mut *conn)
                .await?;
            *dedicated = Some(conn);
        }
        Ok(Tx::Sqlite(match dedicated.as_deref_mut() {
            Some(conn) => conn.begin_with("BEGIN IMMEDIATE").await?,
            None => pool.begin_with("BEGIN IMMEDIATE").await?,
        }))
    }

    /// A write transaction for the app-server's changes (not the writer's).
    pub(crate) async fn begin(&self) -> Result<Tx<'static>> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A read-only transaction: several reads that must agree. SQLite's
    /// first read fixes its snapshot; PostgreSQL's default (read committed)
    /// would take a new one per statement, so it asks for one snapshot.
    pub(crate) async fn begin_read(&self) -> Result<Tx<'static>> {
        Ok(match &self.pool {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await?,
            ),
        })
    }

    /// Copies the WAL into the database; the server calls it periodically,
    /// since commits do not (see `open`). PostgreSQL checkpoints itself.
    ///
    /// A checkpoint running beside a busy writer never catches up with it,
    /// and SQLite only rewinds the WAL to its start for a transaction that
    /// begins with every frame copied: the file would grow by the whole write
    /// volume (gigabytes in a minute of `imctl bench`). So the bulk is copied
    /// while the writer keeps committing, then the writer is paused for the
    /// frames it added meanwhile; its next commit starts the WAL over.
    pub async fn checkpoint(&self) -> Result<()> {
        // 64 MiB of 4 KiB pages: pausing the writer (10-30 ms under load,
        // mostly the fsync) once every few seconds at most, not every call.
        self.checkpoint_then(16_384, async {}).await.map(drop)
    }

    /// [`Self::checkpoint`], pausing the writer only if the WAL had more
    /// than `restart_above` frames; `meanwhile` runs just before the pause
    /// (where the writer's last commits land). Returns the frames the first
    /// pass saw.
    async fn checkpoint_then(
        &self,
        restart_above: i64,
        meanwhile: impl Future<Output = ()>,
    ) -> Result<i64> {
        const SQL: &str = "PRAGMA wal_checkpoint(PASSIVE)";
        let Pool::Sqlite(pool) = &self.pool else {
            return Ok(0);
        };
        let pass = || async {
            let (_, log, _): (i64, i64, i64) = sqlx::query_as(SQL).fetch_one(pool).await?;
            Ok::<_, sqlx::Error>(log)
        };
        let frames = pass().await?;
        if frames <= restart_above {
            return Ok(frames);
        }
        // Each pass copies what the writer added during the previous one;
        // a short tail makes a short pause.
        let mut seen = frames;
        for _ in 0..3 {
            let log = pass().await?;
            let added = log - seen;
            seen = log;
            if added < 1024 {
                break;
            }
        }
        meanwhile.await;
        let mut writer = self.writer.lock().await;
        // On the writer's own connection: waiting for a pool connection
        // while holding the writer would stall its commits behind readers.
        match writer.as_deref_mut() {
            Some(conn) => sqlx::query(SQL).execute(conn).await?,
            None => sqlx::query(SQL).execute(pool).await?,
        };
        Ok(frames)
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        // Back to the pool first: closing waits for every connection.
        drop(self.writer.lock().await.take());
        on_pool!(&self.pool, p => p.close().await);
    }

    pub async fn ping(&self) -> Result<()> {
        on_pool!(&self.pool, p => sqlx::query("SELECT 1").execute(p).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(p)
            .await)?,
        )
    }

    /// Stores `value` under `key` unless the key exists; returns the stored value.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        on_pool!(&self.pool, p => sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT(key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(p)
            .await.map(|r| r.rows_affected()))?;
        Ok(self.setting(key).await?.unwrap_or_else(|| value.to_owned()))
    }

    /// Seeds the fixtures once, the first time this database is opened.
    /// Returns whether it seeded.
    pub async fn seed_once(&self, fixtures: &Fixtures) -> Result<bool> {
        let mut tx = self.begin().await?;
        let fresh = on_tx!(&mut tx, c => {
            let fresh = sqlx::query(
                "INSERT INTO settings (key, value) VALUES ('seeded', '1') ON CONFLICT(key) DO NOTHING",
            )
            .execute(&mut *c)
            .await?
            .rows_affected()
                == 1;
            if fresh {
                let now = now_ms();
                for u in &fixtures.users {
                    sqlx::query(
                        "INSERT INTO users (id, mobile, display_name, portrait, created_at) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&u.user_id)
                    .bind(&u.mobile)
                    .bind(&u.display_name)
                    .bind(&u.portrait)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                }
            }
            fresh
        });
        tx.commit().await?;
        Ok(fresh)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as("SELECT id, mobile, display_name, portrait FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await)?,
        )
    }

    pub async fn user_by_mobile(&self, mobile: &str) -> Result<Option<User>> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_as("SELECT id, mobile, display_name, portrait FROM users WHERE mobile = $1")
            .bind(mobile)
            .fetch_optional(p)
            .await)?,
        )
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        self.first_users(i64::MAX).await
    }

    /// The first `limit` users, oldest first.
    pub async fn first_users(&self, limit: i64) -> Result<Vec<User>> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id, mobile, display_name, portrait FROM users ORDER BY created_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(p)
        .await)?)
    }

    pub async fn user_count(&self) -> Result<usize> {
        let (n,): (i64,) = on_pool!(&self.pool, p => sqlx::query_as("SELECT COUNT(*) FROM users")
            .fetch_one(p)
            .await)?;
        Ok(n as usize)
    }

    /// Finds the user with this mobile or registers a new one.
    /// Returns the user and whether it was created.
    pub async fn user_for_mobile(&self, mobile: &str) -> Result<(User, bool)> {
        if let Some(user) = self.user_by_mobile(mobile).await? {
            return Ok((user, false));
        }
        let user = User {
            id: format!("u{}", crate::token::random_token(6)),
            mobile: Some(mobile.to_owned()),
            display_name: format!("User {}", &mobile[mobile.len().saturating_sub(4)..]),
            portrait: None,
        };
        // A concurrent first login of the same mobile may win the race; the
        // unique index keeps one row and we return that one.
        if self.create_user(&user).await? {
            Ok((user, true))
        } else {
            let existing = self
                .user_by_mobile(mobile)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            Ok((existing, false))
        }
    }

    /// Stores a login session for `token` (only its hash is kept).
    pub async fn create_auth_session(
        &self,
        token: &str,
        session: &AuthSession,
        ttl: Duration,
    ) -> Result<()> {
        let now = now_ms();
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO auth_sessions (token_hash, user_id, client_id, platform, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash(token))
        .bind(&session.user_id)
        .bind(&session.client_id)
        .bind(session.platform)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// The live (unexpired) login session of `token`, if any.
    pub async fn auth_session(&self, token: &str) -> Result<Option<AuthSession>> {
        Ok(on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT user_id, client_id, platform FROM auth_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash(token))
        .bind(now_ms())
        .fetch_optional(p)
        .await)?)
    }

    /// The user behind a live login session, and whether they are banned,
    /// in one query (it runs on every phone call of the QR flow).
    pub async fn auth_user(&self, token: &str) -> Result<Option<(User, bool)>> {
        let row: Option<UserStatus> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT u.id, u.mobile, u.display_name, u.portrait, u.banned_at IS NOT NULL AS banned
             FROM auth_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )
        .bind(token_hash(token))
        .bind(now_ms())
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|r| (r.user, r.banned)))
    }

    /// Deletes expired login sessions; returns how many.
    pub async fn purge_expired_sessions(&self) -> Result<u64> {
        let done = on_pool!(&self.pool, p => sqlx::query("DELETE FROM auth_sessions WHERE expires_at <= $1")
            .bind(now_ms())
            .execute(p)
            .await.map(|r| r.rows_affected()))?;
        Ok(done)
    }
}

/// The SQLite pool of an in-memory or file store.
async fn open_sqlite(location: &Location) -> sqlx::Result<sqlx::SqlitePool> {
    let (options, pool) = match location {
        // Every connection to `:memory:` is its own database, so the
        // in-memory store keeps exactly one connection for its lifetime.
        Location::File(path) => (
            {
                create_private_file(path)?;
                SqliteConnectOptions::new()
            }
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses nothing on a process crash
            // (only on power loss) and saves an fsync per commit.
            .synchronous(SqliteSynchronous::Normal)
            // Checkpoints (and their fsyncs) run from `checkpoint`
            // on another connection, not inside the writer's commits.
            .pragma("wal_autocheckpoint", "0")
            // After a burst, a restarted WAL shrinks back to this.
            .pragma("journal_size_limit", "67108864"),
            SqlitePoolOptions::new().max_connections(8),
        ),
        _ => (
            SqliteConnectOptions::from_str("sqlite::memory:")?,
            SqlitePoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
        ),
    };
    let options = options
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    pool.connect_with(options).await
}

/// Applies the embedded migrations; a database that a newer imctl has
/// migrated further is refused rather than used half-understood.
async fn migrate<'a, A>(migrator: &sqlx::migrate::Migrator, pool: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(sqlx::migrate::MigrateError::VersionMissing(v)) => {
            Err(Error(sqlx::Error::Protocol(format!(
                "this database was created by a newer imctl (it has schema version {v}, this imctl knows up to {}): upgrade imctl or use another database",
                migrator.iter().map(|m| m.version).max().unwrap_or(0)
            ))))
        }
        Err(e) => Err(Error(e.into())),
    }
}

/// The data directory used when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("dev", "imctl", "imctl")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".imctl"))
}

/// Makes the database file exist with mode 0600 before SQLite opens it: it
/// holds the IM-token secret, and SQLite gives its `-wal` and `-shm` files
/// the database file's mode. An older, wider database file is narrowed.
#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_file(_: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("imctl.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_is_one_database_across_calls() {
        let store = crate::store::testing::empty_store().await;
        assert!(store.seed_once(&Fixtures::builtin()).await.unwrap());
        assert!(!store.seed_once(&Fixtures::builtin()).await.unwrap());
        let alice = store.user_by_mobile("13800000001").await.unwrap().unwrap();
        assert_eq!(alice.id, "alice");
        assert_eq!(store.users().await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn user_for_mobile_registers_once() {
        let store = crate::store::testing::empty_store().await;
        let (u1, created1) = store.user_for_mobile("13912345678").await.unwrap();
        let (u2, created2) = store.user_for_mobile("13912345678").await.unwrap();
        assert!(created1 && !created2);
        assert_eq!(u1, u2);
        assert_eq!(u1.display_name, "User 5678");
    }

    #[tokio::test]
    async fn auth_sessions_store_only_hashes_and_expire() {
        let store = crate::store::testing::empty_store().await;
        store.seed_once(&Fixtures::builtin()).await.unwrap();
        let s = AuthSession {
            user_id: "alice".into(),
            client_id: "c".into(),
            platform: 2,
        };
        store
            .create_auth_session("tok-live", &s, Duration::from_secs(60))
            .await
            .unwrap();
        store
            .create_auth_session("tok-dead", &s, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            store
                .auth_session("tok-live")
                .await
                .unwrap()
                .unwrap()
                .user_id,
            "alice"
        );
        assert!(store.auth_session("tok-dead").await.unwrap().is_none());
        assert!(store.auth_session("nope").await.unwrap().is_none());
        let raw: Option<String> = on_pool!(&store.pool, p =>
            sqlx::query_scalar("SELECT token_hash FROM auth_sessions WHERE token_hash = $1")
                .bind("tok-live")
                .fetch_optional(p)
                .await
                .unwrap());
        assert!(raw.is_none(), "the raw token must not be stored");
        assert_eq!(store.purge_expired_sessions().await.unwrap(), 1);
    }
    /// A database migrated by a newer imctl (a migration this one does not
    /// know) is refused at open, on either backend, saying what to do.
    #[tokio::test]
    async fn a_database_from_a_newer_imctl_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut locations = vec![Location::File(dir.path().join("t.db"))];
        if let Some(pg) =
            crate::pg_local::shared_or_skip("a_database_from_a_newer_imctl_is_refused")
        {
            locations.push(Location::Postgres(pg.fresh_database().unwrap()));
        }
        for location in locations {
            let store = Store::open(&location).await.unwrap();
            on_pool!(&store.pool, p => sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (9999, 'from the future', TRUE, $1, 0)",
            )
            .bind(vec![0u8; 48])
            .execute(p)
            .await
            .map(drop))
            .unwrap();
            store.close().await;
            let err = Store::open(&location).await.err().expect("refused");
            let text = err.to_string();
            assert!(
                text.contains("created by a newer imctl") && text.contains("9999"),
                "{location:?}: {text}"
            );
        }
    }
}
