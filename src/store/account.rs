//! What a user changes about their own account: password, display name, and
//! deleting the account altogether.

use super::{Result, Store, now_ms};

impl Store {
    /// A user's password hash (an argon2id PHC string), if one is set.
    pub async fn password(&self, user: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT hash FROM passwords WHERE user_id = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(Into::into)
    }

    /// Sets (or replaces) a password hash.
    pub async fn set_password(&self, user: &str, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO passwords (user_id, hash, updated_at) VALUES (?, ?, ?)
             ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
        )
        .bind(user)
        .bind(hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop).map_err(Into::into)
    }

    /// Renames a user's display name; `Ok(false)` when another user already
    /// has that name (ASCII case ignored). Check and write in one transaction.
    pub async fn change_display_name(&self, user: &str, name: &str) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE lower(display_name) = lower(?) AND id != ? LIMIT 1",
        )
        .bind(name)
        .bind(user)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Ok(false);
        }
        sqlx::query("UPDATE users SET display_name = ? WHERE id = ?")
            .bind(name)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a user in one transaction: login sessions, password,
    /// favorites, devices, friendships and requests, read state, inbox and
    /// group memberships go; messages they sent stay for the others. A group
    /// they owned passes to its first admin, else its longest-standing
    /// member, and one they were alone in is dissolved. The mobile is then
    /// free: its next SMS login registers a new account.
    /// `Ok(false)` for an unknown user.
    pub async fn delete_user(&self, user: &str) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let owned: Vec<String> = sqlx::query_scalar(
            "SELECT group_id FROM group_members WHERE user_id = ? AND role = 'owner'",
        )
        .bind(user)
        .fetch_all(&mut *tx)
        .await?;
        for (sql, times) in [
            ("DELETE FROM auth_sessions WHERE user_id = ?", 1),
            ("DELETE FROM passwords WHERE user_id = ?", 1),
            ("DELETE FROM favorites WHERE user_id = ?", 1),
            ("DELETE FROM devices WHERE user_id = ?", 1),
            ("DELETE FROM conv_state WHERE user_id = ?", 1),
            ("DELETE FROM inbox WHERE user_id = ?", 1),
            ("DELETE FROM group_mutes WHERE user_id = ?", 1),
            ("DELETE FROM group_members WHERE user_id = ?", 1),
            ("DELETE FROM friends WHERE user_id = ? OR friend_id = ?", 2),
            (
                "DELETE FROM friend_requests WHERE from_user = ? OR to_user = ?",
                2,
            ),
        ] {
            let mut q = sqlx::query(sql);
            for _ in 0..times {
                q = q.bind(user);
            }
            q.execute(&mut *tx).await?;
        }
        let now = now_ms();
        for group in owned {
            let heir: Option<String> = sqlx::query_scalar(
                "SELECT user_id FROM group_members WHERE group_id = ?
                 ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
            )
            .bind(&group)
            .fetch_optional(&mut *tx)
            .await?;
            match heir {
                Some(heir) => super::groups::make_owner(&mut tx, &group, &heir).await?,
                None => {
                    sqlx::query("UPDATE groups SET dissolved_at = ? WHERE id = ?")
                        .bind(now)
                        .bind(&group)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let deleted = sqlx::query("DELETE FROM users WHERE id = ?")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Fixtures, Location};

    #[tokio::test]
    async fn a_password_is_set_then_replaced() {
        let s = Store::open(&Location::Memory).await.unwrap();
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        assert_eq!(s.password("alice").await.unwrap(), None);
        s.set_password("alice", "$argon2id$fake").await.unwrap();
        s.set_password("alice", "$argon2id$other").await.unwrap();
        assert_eq!(
            s.password("alice").await.unwrap().as_deref(),
            Some("$argon2id$other")
        );
    }
}
