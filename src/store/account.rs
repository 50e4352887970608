//! What a user changes about their own account: password, display name, and
//! deleting the account altogether.

use super::db::{Tx, is_postgres, on_pool, on_tx};
use super::{Result, Store, now_ms};

impl Store {
    /// A user's password hash (an argon2id PHC string), if one is set.
    pub async fn password(&self, user: &str) -> Result<Option<String>> {
        Ok(
            on_pool!(&self.pool, p => sqlx::query_scalar("SELECT hash FROM passwords WHERE user_id = $1")
            .bind(user)
            .fetch_optional(p)
            .await)?,
        )
    }

    /// Sets (or replaces) a password hash.
    pub async fn set_password(&self, user: &str, hash: &str) -> Result<()> {
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO passwords (user_id, hash, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
        )
        .bind(user)
        .bind(hash)
        .bind(now_ms())
        .execute(p)
        .await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Renames a user's display name; `Ok(false)` when another user already
    /// has that name (ASCII case ignored). Check and write in one transaction.
    pub async fn change_display_name(&self, user: &str, name: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let renamed = on_tx!(&mut tx, c => {
            // ASCII case folded on both sides: the column is byte-wise on
            // PostgreSQL, the parameter would take the database's locale.
            let sql = if is_postgres(&*c) {
                "SELECT EXISTS (SELECT 1 FROM users WHERE lower(display_name) = lower($1 COLLATE \"C\") AND id != $2)"
            } else {
                "SELECT EXISTS (SELECT 1 FROM users WHERE lower(display_name) = lower($1) AND id != $2)"
            };
            let taken: bool = sqlx::query_scalar(sql)
            .bind(name)
            .bind(user)
            .fetch_one(&mut *c)
            .await?;
            if !taken {
                sqlx::query("UPDATE users SET display_name = $1 WHERE id = $2")
                    .bind(name)
                    .bind(user)
                    .execute(&mut *c)
                    .await?;
            }
            !taken
        });
        tx.commit().await?;
        Ok(renamed)
    }

    /// Deletes a user in one transaction: login sessions, password,
    /// favorites, devices, friendships and requests, read state, inbox and
    /// group memberships go; messages they sent stay for the others. A group
    /// they owned passes to its first admin, else its longest-standing
    /// member, and one they were alone in is dissolved. The mobile is then
    /// free: its next SMS login registers a new account.
    /// `Ok(false)` for an unknown user.
    pub async fn delete_user(&self, user: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        // On PostgreSQL the inbox head goes first: its row lock is the one a
        // writer takes first, so a batch to this user finishes before the
        // inbox is cleared (no stray rows) and the two never deadlock.
        let mut tables = vec![];
        if let Tx::Postgres(_) = tx {
            tables.push("DELETE FROM inbox_heads WHERE user_id = $1");
        }
        tables.extend([
            "DELETE FROM auth_sessions WHERE user_id = $1",
            "DELETE FROM passwords WHERE user_id = $1",
            "DELETE FROM favorites WHERE user_id = $1",
            "DELETE FROM devices WHERE user_id = $1",
            "DELETE FROM conv_state WHERE user_id = $1",
            "DELETE FROM inbox WHERE user_id = $1",
            "DELETE FROM group_mutes WHERE user_id = $1",
            "DELETE FROM group_members WHERE user_id = $1",
            "DELETE FROM friends WHERE user_id = $1 OR friend_id = $1",
            "DELETE FROM friend_requests WHERE from_user = $1 OR to_user = $1",
        ]);
        let owned: Vec<String> = on_tx!(&mut tx, c => {
            let owned = sqlx::query_scalar(
                "SELECT group_id FROM group_members WHERE user_id = $1 AND role = 'owner'",
            )
            .bind(user)
            .fetch_all(&mut *c)
            .await?;
            for sql in tables {
                sqlx::query(sql).bind(user).execute(&mut *c).await?;
            }
            owned
        });
        let now = now_ms();
        for group in owned {
            let heir: Option<String> = on_tx!(&mut tx, c => sqlx::query_scalar(
                "SELECT user_id FROM group_members WHERE group_id = $1
                 ORDER BY CASE role WHEN 'admin' THEN 0 ELSE 1 END, joined_at, user_id LIMIT 1",
            )
            .bind(&group)
            .fetch_optional(&mut *c)
            .await)?;
            match heir {
                Some(heir) => super::groups::make_owner(&mut tx, &group, &heir).await?,
                None => {
                    on_tx!(&mut tx, c => sqlx::query("UPDATE groups SET dissolved_at = $1 WHERE id = $2")
                        .bind(now)
                        .bind(&group)
                        .execute(&mut *c)
                        .await.map(|r| r.rows_affected()))?;
                }
            }
        }
        let deleted = on_tx!(&mut tx, c => sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user)
            .execute(&mut *c)
            .await.map(|r| r.rows_affected()))?
            == 1;
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Fixtures;

    #[tokio::test]
    async fn a_password_is_set_then_replaced() {
        let s = crate::store::testing::empty_store().await;
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
