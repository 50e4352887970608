//! Friends, friend requests and profiles.

use crate::store::{Refused, Why};
use serde_json::json;

use super::db::{Pool, Tx, on_pool, on_tx};
use super::{Result, Store, User, now_ms};

pub use crate::wire::ws::FriendRequest;

/// What `friend.request` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    /// A new pending request.
    Pending(FriendRequest),
    /// The target had already asked us: now friends.
    Befriended,
}

impl Store {
    pub async fn are_friends(&self, a: &str, b: &str) -> Result<bool> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM friends WHERE user_id = $1 AND friend_id = $2)")
                .bind(a)
                .bind(b)
                .fetch_one(p)
                .await)?,
        )
    }

    pub async fn friend_request(
        &self,
        from: &str,
        to: &str,
        remark: &str,
    ) -> Result<Result<Requested, Refused>> {
        if from == to {
            return Ok(Err(Refused::new(
                Why::Invalid,
                "you cannot befriend yourself",
            )));
        }
        if self.user(to).await?.is_none() {
            return Ok(Err(Refused::new(Why::Missing, format!("no user {to:?}"))));
        }
        if self.are_friends(from, to).await? {
            return Ok(Err(Refused::new(
                Why::Already,
                format!("you and {to} are already friends"),
            )));
        }
        let mut tx = self.begin().await?;
        let now = now_ms();
        let theirs = request_status(&mut tx, to, from).await?;
        if theirs.as_deref() == Some("pending") {
            accept_in(&mut tx, to, from, now).await?;
            tx.commit().await?;
            return Ok(Ok(Requested::Befriended));
        }
        let mine = request_status(&mut tx, from, to).await?;
        if mine.as_deref() == Some("pending") {
            return Ok(Err(Refused::new(
                Why::Already,
                format!("you already asked {to}; wait for an answer"),
            )));
        }
        on_tx!(&mut tx, c => sqlx::query(
            "INSERT INTO friend_requests (from_user, to_user, remark, status, created_at, updated_at)
             VALUES ($1, $2, $3, 'pending', $4, $5)
             ON CONFLICT(from_user, to_user) DO UPDATE SET
               remark = excluded.remark, status = 'pending', created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .bind(from)
        .bind(to)
        .bind(remark)
        .bind(now)
        .bind(now)
        .execute(&mut *c)
        .await.map(|r| r.rows_affected()))?;
        tx.commit().await?;
        Ok(Ok(Requested::Pending(FriendRequest {
            from_user: from.into(),
            to_user: to.into(),
            remark: remark.into(),
            status: "pending".into(),
            created_at: now,
        })))
    }

    /// `me` answers the pending request `from` sent.
    pub async fn friend_answer(
        &self,
        me: &str,
        from: &str,
        accept: bool,
    ) -> Result<Result<(), Refused>> {
        let mut tx = self.begin().await?;
        let status = request_status(&mut tx, from, me).await?;
        if status.as_deref() != Some("pending") {
            return Ok(Err(Refused::new(
                Why::Missing,
                format!("no pending friend request from {from:?}"),
            )));
        }
        let now = now_ms();
        if accept {
            accept_in(&mut tx, from, me, now).await?;
        } else {
            on_tx!(&mut tx, c => sqlx::query("UPDATE friend_requests SET status = 'rejected', updated_at = $1 WHERE from_user = $2 AND to_user = $3")
                .bind(now)
                .bind(from)
                .bind(me)
                .execute(&mut *c)
                .await.map(|r| r.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Friends and group co-members of `user`: whose presence `user` may see.
    pub async fn contacts_of(&self, user: &str) -> Result<std::collections::HashSet<String>> {
        let ids: Vec<String> = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT friend_id FROM friends WHERE user_id = $1
             UNION SELECT b.user_id FROM group_members a JOIN group_members b ON b.group_id = a.group_id
             WHERE a.user_id = $1",
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(ids.into_iter().collect())
    }

    pub async fn friends_of(&self, user: &str) -> Result<Vec<User>> {
        on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT u.id, u.mobile, u.display_name, u.portrait FROM friends f JOIN users u ON u.id = f.friend_id
             WHERE f.user_id = $1 ORDER BY u.display_name, u.id",
        )
        .bind(user)
        .fetch_all(p)
        .await).map_err(Into::into)
    }

    /// Pending requests to and from `user`, newest first.
    pub async fn pending_requests(
        &self,
        user: &str,
    ) -> Result<(Vec<FriendRequest>, Vec<FriendRequest>)> {
        let all: Vec<(String, String, String, String, i64)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT from_user, to_user, remark, status, created_at FROM friend_requests
             WHERE (to_user = $1 OR from_user = $1) AND status = 'pending' ORDER BY created_at DESC",
        )
        .bind(user)
        .fetch_all(p)
        .await)?;
        Ok(all
            .into_iter()
            .map(
                |(from_user, to_user, remark, status, created_at)| FriendRequest {
                    from_user,
                    to_user,
                    remark,
                    status,
                    created_at,
                },
            )
            .partition(|r| r.to_user == user))
    }

    /// The users among `ids` that exist, in the order asked.
    pub async fn users_by_ids(&self, ids: &[String]) -> Result<Vec<User>> {
        let found: Vec<User> = match &self.pool {
            Pool::Sqlite(p) => sqlx::query_as(
                "SELECT id, mobile, display_name, portrait FROM users WHERE id IN (SELECT value FROM json_each($1))",
            )
            .bind(json!(ids).to_string())
            .fetch_all(p)
            .await?,
            Pool::Postgres(p) => sqlx::query_as(
                "SELECT id, mobile, display_name, portrait FROM users WHERE id = ANY($1)",
            )
            .bind(ids)
            .fetch_all(p)
            .await?,
        };
        Ok(ids
            .iter()
            .filter_map(|id| found.iter().find(|u| &u.id == id).cloned())
            .collect())
    }

    pub async fn update_profile(
        &self,
        user: &str,
        display_name: Option<&str>,
        portrait: Option<&str>,
    ) -> Result<Option<User>> {
        on_pool!(&self.pool, p => sqlx::query(
            "UPDATE users SET display_name = COALESCE($1, display_name), portrait = COALESCE($2, portrait) WHERE id = $3",
        )
        .bind(display_name)
        .bind(portrait)
        .bind(user)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        self.user(user).await
    }
}

/// The status of the request `from` sent `to`, if there is one.
async fn request_status(conn: &mut Tx<'_>, from: &str, to: &str) -> Result<Option<String>> {
    Ok(
        on_tx!(conn, c => sqlx::query_scalar("SELECT status FROM friend_requests WHERE from_user = $1 AND to_user = $2")
        .bind(from)
        .bind(to)
        .fetch_optional(&mut *c)
        .await)?,
    )
}

async fn accept_in(conn: &mut Tx<'_>, from: &str, to: &str, now: i64) -> Result<()> {
    on_tx!(conn, c => {
        sqlx::query("UPDATE friend_requests SET status = 'accepted', updated_at = $1 WHERE from_user = $2 AND to_user = $3")
            .bind(now)
            .bind(from)
            .bind(to)
            .execute(&mut *c)
            .await?;
        sqlx::query("INSERT INTO friends (user_id, friend_id, created_at) VALUES ($1, $2, $3), ($2, $1, $3) ON CONFLICT DO NOTHING")
            .bind(from)
            .bind(to)
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Fixtures;

    #[tokio::test]
    async fn requests_accept_reject_and_mutual_requests() {
        let s = crate::store::testing::empty_store().await;
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        assert_eq!(
            s.friend_request("alice", "alice", "")
                .await
                .unwrap()
                .unwrap_err()
                .why,
            Why::Invalid
        );
        assert_eq!(
            s.friend_request("alice", "zed", "")
                .await
                .unwrap()
                .unwrap_err()
                .why,
            Why::Missing
        );
        assert!(matches!(
            s.friend_request("alice", "bob", "hi").await.unwrap(),
            Ok(Requested::Pending(_))
        ));
        assert_eq!(
            s.friend_request("alice", "bob", "again")
                .await
                .unwrap()
                .unwrap_err()
                .why,
            Why::Already
        );
        let (incoming, _) = s.pending_requests("bob").await.unwrap();
        assert_eq!(
            (incoming[0].from_user.as_str(), incoming[0].remark.as_str()),
            ("alice", "hi")
        );
        s.friend_answer("bob", "alice", true)
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.are_friends("alice", "bob").await.unwrap()
                && s.are_friends("bob", "alice").await.unwrap()
        );
        assert_eq!(
            s.friend_request("bob", "alice", "")
                .await
                .unwrap()
                .unwrap_err()
                .why,
            Why::Already
        );
        assert_eq!(
            s.friend_answer("bob", "alice", true)
                .await
                .unwrap()
                .unwrap_err()
                .why,
            Why::Missing
        );

        s.friend_request("carol", "alice", "")
            .await
            .unwrap()
            .unwrap();
        s.friend_answer("alice", "carol", false)
            .await
            .unwrap()
            .unwrap();
        assert!(!s.are_friends("alice", "carol").await.unwrap());
        // Asking someone who already asked you makes you friends at once.
        s.friend_request("carol", "bob", "").await.unwrap().unwrap();
        assert_eq!(
            s.friend_request("bob", "carol", "").await.unwrap(),
            Ok(Requested::Befriended)
        );
        let names: Vec<_> = s
            .friends_of("bob")
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect();
        assert_eq!(names, ["alice", "carol"]);
    }
}

/// An upload's metadata.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Media {
    pub id: String,
    pub owner: String,
    pub content_type: String,
    pub size: i64,
}

impl Store {
    pub async fn add_media(&self, media: &Media) -> Result<()> {
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO media (id, owner, content_type, size, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&media.id)
        .bind(&media.owner)
        .bind(&media.content_type)
        .bind(media.size)
        .bind(now_ms())
        .execute(p)
        .await.map(|r| r.rows_affected()))
        .map(drop)
        .map_err(Into::into)
    }

    pub async fn media(&self, id: &str) -> Result<Option<Media>> {
        on_pool!(&self.pool, p => sqlx::query_as("SELECT id, owner, content_type, size FROM media WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await)
            .map_err(Into::into)
    }
}
