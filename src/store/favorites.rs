//! Favorites (what a user kept) and group announcements.

use super::db::{is_postgres, on_pool, on_tx};
use super::{Result, Store, now_ms};

/// A favorite as stored; `id` and `created_at` are set by the store.
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct Favorite {
    pub id: i64,
    pub user_id: String,
    pub message_uid: i64,
    pub kind: i64,
    pub conv_type: i64,
    pub conv_target: String,
    pub conv_line: i64,
    pub origin: String,
    pub sender: String,
    pub title: String,
    pub url: String,
    pub thumb_url: String,
    pub data: String,
    pub created_at: i64,
}

/// A group's current announcement.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Announcement {
    pub group_id: String,
    pub author: String,
    pub text: String,
    pub updated_at: i64,
}

impl Store {
    /// Adds a favorite for `fav.user_id` unless they hold `max` already;
    /// returns its id, or `None` when full. Count and insert in one transaction.
    pub async fn add_favorite(&self, fav: &Favorite, max: i64) -> Result<Option<i64>> {
        let mut tx = self.begin().await?;
        let id = on_tx!(&mut tx, c => {
        if is_postgres(&*c) {
            // Two imctl processes adding at once must not both pass the count.
            sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
                .bind(&fav.user_id)
                .execute(&mut *c)
                .await?;
        }
        let (held,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM favorites WHERE user_id = $1")
            .bind(&fav.user_id)
            .fetch_one(&mut *c)
            .await?;
        if held >= max {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO favorites (user_id, message_uid, type, conv_type, conv_target, conv_line,
                 origin, sender, title, url, thumb_url, data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        )
        .bind(&fav.user_id)
        .bind(fav.message_uid)
        .bind(fav.kind)
        .bind(fav.conv_type)
        .bind(&fav.conv_target)
        .bind(fav.conv_line)
        .bind(&fav.origin)
        .bind(&fav.sender)
        .bind(&fav.title)
        .bind(&fav.url)
        .bind(&fav.thumb_url)
        .bind(&fav.data)
        .bind(now_ms())
        .fetch_one(&mut *c)
        .await?;
        id
        });
        tx.commit().await?;
        Ok(Some(id))
    }

    /// A user's favorites older than `before` (0: from the newest), newest
    /// first, at most `count`, and whether older ones remain.
    pub async fn favorites(
        &self,
        user: &str,
        before: i64,
        count: i64,
    ) -> Result<(Vec<Favorite>, bool)> {
        let before = if before <= 0 { i64::MAX } else { before };
        let mut rows: Vec<Favorite> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id, user_id, message_uid, type AS kind, conv_type, conv_target, conv_line,
                 origin, sender, title, url, thumb_url, data, created_at
             FROM favorites WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user)
        .bind(before)
        .bind(count + 1)
        .fetch_all(p)
        .await)?;
        let more = rows.len() as i64 > count;
        rows.truncate(count as usize);
        Ok((rows, more))
    }

    /// Deletes one of `user`'s favorites; `Ok(false)` when they have no such one.
    pub async fn delete_favorite(&self, user: &str, id: i64) -> Result<bool> {
        on_pool!(&self.pool, p => sqlx::query("DELETE FROM favorites WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user)
            .execute(p)
            .await.map(|r| r.rows_affected()))
            .map(|n| n == 1)
            .map_err(Into::into)
    }

    /// Replaces a group's announcement; returns it as stored.
    pub async fn put_announcement(
        &self,
        group: &str,
        author: &str,
        text: &str,
    ) -> Result<Announcement> {
        on_pool!(&self.pool, p => sqlx::query_as(
            "INSERT INTO group_announcements (group_id, author, text, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT(group_id) DO UPDATE SET author = excluded.author, text = excluded.text,
                 updated_at = excluded.updated_at
             RETURNING group_id, author, text, updated_at",
        )
        .bind(group)
        .bind(author)
        .bind(text)
        .bind(now_ms())
        .fetch_one(p)
        .await).map_err(Into::into)
    }

    pub async fn announcement(&self, group: &str) -> Result<Option<Announcement>> {
        on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT group_id, author, text, updated_at FROM group_announcements WHERE group_id = $1",
        )
        .bind(group)
        .fetch_optional(p)
        .await)
        .map_err(Into::into)
    }

    /// Whether `group` exists and is not dissolved, and whether `user` is in it.
    pub async fn group_membership(&self, group: &str, user: &str) -> Result<Option<bool>> {
        on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM group_members WHERE group_id = g.id AND user_id = $1)
             FROM groups g WHERE g.id = $2 AND g.dissolved_at IS NULL",
        )
        .bind(user)
        .bind(group)
        .fetch_optional(p)
        .await)
        .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Fixtures;

    #[tokio::test]
    async fn favorites_page_newest_first_and_stay_bounded() {
        let s = crate::store::testing::empty_store().await;
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        let fav = |title: &str| Favorite {
            user_id: "alice".into(),
            title: title.into(),
            ..Favorite::default()
        };
        let mut ids = vec![];
        for t in ["a", "b", "c"] {
            ids.push(s.add_favorite(&fav(t), 3).await.unwrap().unwrap());
        }
        assert_eq!(s.add_favorite(&fav("d"), 3).await.unwrap(), None);
        let (page, more) = s.favorites("alice", 0, 2).await.unwrap();
        assert_eq!(
            page.iter().map(|f| f.title.as_str()).collect::<Vec<_>>(),
            ["c", "b"]
        );
        assert!(more);
        let (page, more) = s.favorites("alice", page[1].id, 2).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].title, "a");
        assert!(!more);
        assert!(!s.delete_favorite("bob", ids[0]).await.unwrap());
        assert!(s.delete_favorite("alice", ids[0]).await.unwrap());
        assert!(s.favorites("bob", 0, 10).await.unwrap().0.is_empty());
    }
}
