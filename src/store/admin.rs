//! What the admin API changes: bans, group mutes, users made by hand.

use serde::Serialize;

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
        sqlx::query_as(
            "SELECT id AS user_id, mobile, display_name, portrait, banned_at IS NOT NULL AS banned
             FROM users ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Into::into)
    }

    /// Creates a user; `Ok(false)` when the id or mobile is taken.
    pub async fn create_user(&self, user: &User) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO users (id, mobile, display_name, portrait, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.mobile)
        .bind(&user.display_name)
        .bind(&user.portrait)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Bans or unbans; `Ok(false)` for an unknown user.
    pub async fn set_banned(&self, user: &str, banned: bool) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE users SET banned_at = CASE WHEN ? THEN COALESCE(banned_at, ?) END WHERE id = ?",
        )
        .bind(banned)
        .bind(now_ms())
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A user and whether they are banned, in one query.
    pub async fn user_status(&self, id: &str) -> Result<Option<(User, bool)>> {
        let row: Option<UserStatus> = sqlx::query_as(
            "SELECT id, mobile, display_name, portrait, banned_at IS NOT NULL AS banned FROM users WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.user, r.banned)))
    }

    pub async fn is_banned(&self, user: &str) -> Result<bool> {
        let banned: Option<bool> =
            sqlx::query_scalar("SELECT banned_at IS NOT NULL FROM users WHERE id = ?")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
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
        let live: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM groups WHERE id = ? AND dissolved_at IS NULL")
                .bind(group)
                .fetch_optional(&self.pool)
                .await?;
        if live.is_none() {
            return Ok(false);
        }
        let sql = if muted {
            "INSERT OR IGNORE INTO group_mutes (group_id, user_id) VALUES (?, ?)"
        } else {
            "DELETE FROM group_mutes WHERE group_id = ? AND user_id = ?"
        };
        sqlx::query(sql)
            .bind(group)
            .bind(user.unwrap_or(""))
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}
