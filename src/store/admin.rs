//! What the admin API changes: bans, group mutes, users made by hand.

use serde::Serialize;

use super::db::on_pool;
use super::{Result, Store, User, UserStatus, now_ms};

/// A user as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AdminUser {
    pub user_id: String,
    pub mobile: Option<String>,
    pub display_name: String,
    pub portrait: Option<String>,
    pub banned: bool,
}

impl Store {
    pub async fn admin_users(&self) -> Result<Vec<AdminUser>> {
        on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id AS user_id, mobile, display_name, portrait, banned_at IS NOT NULL AS banned
             FROM users ORDER BY created_at, id",
        )
        .fetch_all(p)
        .await)
        .map_err(Into::into)
    }

    /// Creates a user; `Ok(false)` when the id or mobile is taken.
    pub async fn create_user(&self, user: &User) -> Result<bool> {
        let done = on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO users (id, mobile, display_name, portrait, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.mobile)
        .bind(&user.display_name)
        .bind(&user.portrait)
        .bind(now_ms())
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// Bans or unbans; `Ok(false)` for an unknown user.
    pub async fn set_banned(&self, user: &str, banned: bool) -> Result<bool> {
        let done = on_pool!(&self.pool, p => sqlx::query(
            "UPDATE users SET banned_at = CASE WHEN $1 THEN COALESCE(banned_at, $2) END WHERE id = $3",
        )
        .bind(banned)
        .bind(now_ms())
        .bind(user)
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(done == 1)
    }

    /// A user and whether they are banned, in one query.
    pub async fn user_status(&self, id: &str) -> Result<Option<(User, bool)>> {
        let row: Option<UserStatus> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT id, mobile, display_name, portrait, banned_at IS NOT NULL AS banned FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(p)
        .await)?;
        Ok(row.map(|r| (r.user, r.banned)))
    }

    pub async fn is_banned(&self, user: &str) -> Result<bool> {
        let banned: Option<bool> = on_pool!(&self.pool, p => sqlx::query_scalar("SELECT banned_at IS NOT NULL FROM users WHERE id = $1")
                .bind(user)
                .fetch_optional(p)
                .await)?;
        Ok(banned.unwrap_or(false))
    }

    /// Mutes `user` in `group`, or the whole group when `user` is `None`.
    /// `Ok(false)` for an unknown or dissolved group.
    pub async fn set_muted_in_group(
        &self,
        group: &str,
        user: Option<&str>,
        muted: bool,
    ) -> Result<bool> {
        let live: bool = on_pool!(&self.pool, p => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1 AND dissolved_at IS NULL)",
        )
        .bind(group)
        .fetch_one(p)
        .await)?;
        if !live {
            return Ok(false);
        }
        let sql = if muted {
            "INSERT INTO group_mutes (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM group_mutes WHERE group_id = $1 AND user_id = $2"
        };
        on_pool!(&self.pool, p => sqlx::query(sql)
            .bind(group)
            .bind(user.unwrap_or(""))
            .execute(p)
            .await.map(|r| r.rows_affected()))?;
        Ok(true)
    }
}
