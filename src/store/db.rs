//! The two backends behind [`Store`](super::Store): the embedded SQLite and
//! a PostgreSQL server. The rest of the store names a backend only where its
//! SQL differs; [`on_pool!`] and [`on_tx!`] compile one body for each.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::SqliteRow;
use sqlx::{Postgres, Sqlite, Transaction};

/// A pool of either backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(PgPool),
}

/// A transaction of either backend.
pub(crate) enum Tx<'a> {
    Sqlite(Transaction<'a, Sqlite>),
    Postgres(Transaction<'a, Postgres>),
}

impl Tx<'_> {
    pub(crate) async fn commit(self) -> sqlx::Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// `on_pool!(pool, p => body)`: `body` with `p` the backend's pool (`&Pool<DB>`),
/// compiled once per backend, so SQL both accept is written once.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::db::Pool::Sqlite($p) => $body,
            $crate::store::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// `on_tx!(tx, c => body)`: `body` with `c` the transaction's connection
/// (`&mut DB::Connection`); use `&mut *c` for each statement.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::store::db::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::store::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// Which backend a connection belongs to, for the few statements only
/// one of them needs inside a shared body (`is_postgres(&*c)`).
pub(crate) trait Dialect {
    const POSTGRES: bool;
}
impl Dialect for sqlx::SqliteConnection {
    const POSTGRES: bool = false;
}
impl Dialect for sqlx::PgConnection {
    const POSTGRES: bool = true;
}
pub(crate) fn is_postgres<C: Dialect>(_: &C) -> bool {
    C::POSTGRES
}

/// A row of either backend, read by column name (row helpers shared by both).
pub(crate) trait Cols {
    fn text(&self, col: &str) -> sqlx::Result<&str>;
    fn opt_text(&self, col: &str) -> sqlx::Result<Option<&str>>;
    fn int(&self, col: &str) -> sqlx::Result<i64>;
    fn opt_int(&self, col: &str) -> sqlx::Result<Option<i64>>;
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, col: &str) -> sqlx::Result<&str> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_text(&self, col: &str) -> sqlx::Result<Option<&str>> {
                sqlx::Row::try_get(self, col)
            }
            fn int(&self, col: &str) -> sqlx::Result<i64> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_int(&self, col: &str) -> sqlx::Result<Option<i64>> {
                sqlx::Row::try_get(self, col)
            }
        }
    };
}
impl_cols!(SqliteRow);
impl_cols!(PgRow);

pub(super) static SQLITE_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/sqlite");
pub(super) static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

/// Connections a PostgreSQL store keeps: the writer's batch, readers, the
/// app-server's calls.
const PG_CONNECTIONS: u32 = 16;

/// How long opening waits for PostgreSQL before saying why it cannot.
pub(crate) const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a PostgreSQL pool at `url` (`postgres://user:pass@host:port/db`).
pub(super) async fn connect_postgres(url: &str) -> sqlx::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?
        .application_name("imctl")
        // Repeated statements are prepared once per connection (sqlx's
        // cache); the writer's batch runs a fixed handful of them.
        .statement_cache_capacity(256)
        // A node cut off mid-transaction (a network partition, not a crash,
        // which resets its connections) would hold its recipients' head
        // locks until TCP gave up, hours later; no transaction of imctl's
        // waits this long between statements.
        .options([("idle_in_transaction_session_timeout", "10s")]);
    // One connection first: the pool would retry a refused connection
    // until its timeout, and hide why.
    let first = tokio::time::timeout(
        PG_CONNECT_TIMEOUT,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await
    .map_err(|_| sqlx::Error::PoolTimedOut)??;
    sqlx::Connection::close(first).await?;
    PgPoolOptions::new()
        .max_connections(PG_CONNECTIONS)
        .min_connections(1)
        .acquire_timeout(PG_CONNECT_TIMEOUT)
        // A pooled connection that died with a server restart is noticed
        // before use instead of failing the caller's statement.
        .test_before_acquire(true)
        .connect_with(options)
        .await
}

/// Why connecting to PostgreSQL at `url` failed, in one line that says how
/// to fix it; `None` for failures that are not about the settings.
pub(super) fn open_problem(e: &sqlx::Error, url: &str) -> Option<(super::OpenProblem, String)> {
    use super::OpenProblem::{Settings, Unreachable};
    let shown = mask_password(url);
    let options = PgConnectOptions::from_str(url).ok();
    let user = options
        .as_ref()
        .map_or_else(String::new, |o| o.get_username().to_owned());
    let database = options
        .as_ref()
        .and_then(|o| o.get_database().map(str::to_owned))
        .unwrap_or_else(|| user.clone());
    let at = options.as_ref().map_or_else(String::new, |o| {
        format!("{}:{}", o.get_host(), o.get_port())
    });
    Some(match e {
        sqlx::Error::Configuration(why) => (
            Settings,
            format!(
                "--database {shown} is not a PostgreSQL URL ({why}): write postgres://user:password@host:port/database"
            ),
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") | Some("28000") => (
                Settings,
                format!(
                    "PostgreSQL at {at} refused user {user:?} ({}): check the user and password in --database",
                    db.message()
                ),
            ),
            Some("3D000") => (
                Settings,
                format!(
                    "PostgreSQL at {at} has no database {database:?}: create it (createdb {database}, or CREATE DATABASE) or fix --database"
                ),
            ),
            _ => return None,
        },
        sqlx::Error::Io(io) => (
            Unreachable,
            format!(
                "cannot reach PostgreSQL at {at} ({io}): is the server running, and are the host and port in --database right?"
            ),
        ),
        sqlx::Error::PoolTimedOut => (
            Unreachable,
            format!(
                "PostgreSQL at {at} did not answer within {} s: is the server running, and are the host and port in --database right?",
                PG_CONNECT_TIMEOUT.as_secs()
            ),
        ),
        sqlx::Error::Tls(why) => (
            Settings,
            format!(
                "cannot speak TLS with PostgreSQL at {at} ({why}): imctl connects without TLS; use a server that accepts that (?sslmode=disable)"
            ),
        ),
        _ => return None,
    })
}

/// `url` with its password replaced by `***`, for banners and logs.
pub fn mask_password(url: &str) -> String {
    // Everything before the last '@' is taken for user information, so a
    // password holding '/' or '@' is masked whole (a malformed URL too).
    let masked = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => url.to_owned(),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    // And a `password=` parameter, which the driver accepts too.
    match masked.split_once('?') {
        Some((base, query)) => {
            let params: Vec<&str> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***"
                    } else {
                        p
                    }
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => masked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_password("postgres://imctl:s3cret@db.local:5432/chat"),
            "postgres://imctl:***@db.local:5432/chat"
        );
        assert_eq!(
            mask_password("postgres://imctl@127.0.0.1/chat"),
            "postgres://imctl@127.0.0.1/chat"
        );
        // An '@' or a '/' inside the password does not leak it.
        assert_eq!(
            mask_password("postgresql://u:p@ss@h/d?sslmode=disable"),
            "postgresql://u:***@h/d?sslmode=disable"
        );
        assert_eq!(
            mask_password("postgres://u:pa/ss@h/d"),
            "postgres://u:***@h/d"
        );
        assert_eq!(
            mask_password("postgres://u@h/d?sslmode=disable&password=s3cret"),
            "postgres://u@h/d?sslmode=disable&password=***"
        );
    }
}
