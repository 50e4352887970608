//! Friends, friend requests and profiles.

use crate::store::{Refused, Why};
use serde_json::json;

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
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?")
                .bind(a)
                .bind(b)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
        sqlx::query(
            "INSERT INTO friend_requests (from_user, to_user, remark, status, created_at, updated_at)
             VALUES (?, ?, ?, 'pending', ?, ?)
             ON CONFLICT(from_user, to_user) DO UPDATE SET
               remark = excluded.remark, status = 'pending', created_at = excluded.created_at, updated_at = excluded.updated_at",
        )
        .bind(from)
        .bind(to)
        .bind(remark)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
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
            sqlx::query("UPDATE friend_requests SET status = 'rejected', updated_at = ? WHERE from_user = ? AND to_user = ?")
                .bind(now)
                .bind(from)
                .bind(me)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Friends and group co-members of `user`: whose presence `user` may see.
    pub async fn contacts_of(&self, user: &str) -> Result<std::collections::HashSet<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT friend_id FROM friends WHERE user_id = ?1
             UNION SELECT b.user_id FROM group_members a JOIN group_members b ON b.group_id = a.group_id
             WHERE a.user_id = ?1",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    pub async fn friends_of(&self, user: &str) -> Result<Vec<User>> {
        sqlx::query_as(
            "SELECT u.id, u.mobile, u.display_name, u.portrait FROM friends f JOIN users u ON u.id = f.friend_id
             WHERE f.user_id = ? ORDER BY u.display_name, u.id",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await.map_err(Into::into)
    }

    /// Pending requests to and from `user`, newest first.
    pub async fn pending_requests(
        &self,
        user: &str,
    ) -> Result<(Vec<FriendRequest>, Vec<FriendRequest>)> {
        let all: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT from_user, to_user, remark, status, created_at FROM friend_requests
             WHERE (to_user = ?1 OR from_user = ?1) AND status = 'pending' ORDER BY created_at DESC",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
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
        let found: Vec<User> = sqlx::query_as(
            "SELECT id, mobile, display_name, portrait FROM users WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(json!(ids).to_string())
        .fetch_all(&self.pool)
        .await?;
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
        sqlx::query(
            "UPDATE users SET display_name = COALESCE(?, display_name), portrait = COALESCE(?, portrait) WHERE id = ?",
        )
        .bind(display_name)
        .bind(portrait)
        .bind(user)
        .execute(&self.pool)
        .await?;
        self.user(user).await
    }
}

/// The status of the request `from` sent `to`, if there is one.
async fn request_status(
    conn: &mut sqlx::SqliteConnection,
    from: &str,
    to: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT status FROM friend_requests WHERE from_user = ? AND to_user = ?")
        .bind(from)
        .bind(to)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Into::into)
}

async fn accept_in(
    conn: &mut sqlx::SqliteConnection,
    from: &str,
    to: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE friend_requests SET status = 'accepted', updated_at = ? WHERE from_user = ? AND to_user = ?")
        .bind(now)
        .bind(from)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT OR IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?), (?, ?, ?)")
        .bind(from)
        .bind(to)
        .bind(now)
        .bind(to)
        .bind(from)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fixtures, Location};

    #[tokio::test]
    async fn requests_accept_reject_and_mutual_requests() {
        let s = Store::open(&Location::Memory).await.unwrap();
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
        sqlx::query(
            "INSERT INTO media (id, owner, content_type, size, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&media.id)
        .bind(&media.owner)
        .bind(&media.content_type)
        .bind(media.size)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(Into::into)
    }

    pub async fn media(&self, id: &str) -> Result<Option<Media>> {
        sqlx::query_as("SELECT id, owner, content_type, size FROM media WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Into::into)
    }
}
