//! What a user changes about their own account: password, display name, and
//! deleting the account altogether.

use super::{Result, Store, now_ms};

/// A user's stored password and its lock state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PasswordRow {
    /// An argon2id PHC string.
    pub hash: String,
    pub failures: i64,
    /// Milliseconds since the epoch; 0 when never locked.
    pub locked_until: i64,
}

/// What [`Store::record_password_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; this many wrong tries so far.
    Counted(i64),
    /// That try reached the limit: locked until this time (ms).
    Locked(i64),
}

impl Store {
    pub async fn password(&self, user: &str) -> Result<Option<PasswordRow>> {
        sqlx::query_as("SELECT hash, failures, locked_until FROM passwords WHERE user_id = ?")
            .bind(user)
            .fetch_optional(&self.pool)
            .await
    }

    /// Sets (or replaces) a password hash, clearing failures and any lock.
    pub async fn set_password(&self, user: &str, hash: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO passwords (user_id, hash, failures, locked_until, updated_at) VALUES (?, ?, 0, 0, ?)
             ON CONFLICT(user_id) DO UPDATE SET hash = excluded.hash, failures = 0, locked_until = 0,
                 updated_at = excluded.updated_at",
        )
        .bind(user)
        .bind(hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Counts a wrong password; the `limit`th in a row locks the account for
    /// `lock_ms` and starts the count over.
    pub async fn record_password_failure(
        &self,
        user: &str,
        limit: i64,
        lock_ms: i64,
    ) -> Result<Failure> {
        let now = now_ms();
        let (failures, locked_until): (i64, i64) = sqlx::query_as(
            "UPDATE passwords SET
                 failures = CASE WHEN failures + 1 >= ? THEN 0 ELSE failures + 1 END,
                 locked_until = CASE WHEN failures + 1 >= ? THEN ? ELSE locked_until END
             WHERE user_id = ? RETURNING failures, locked_until",
        )
        .bind(limit)
        .bind(limit)
        .bind(now + lock_ms)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or((0, 0));
        Ok(if locked_until > now {
            Failure::Locked(locked_until)
        } else {
            Failure::Counted(failures)
        })
    }

    /// Forgets wrong tries after a right password.
    pub async fn clear_password_failures(&self, user: &str) -> Result<()> {
        sqlx::query("UPDATE passwords SET failures = 0 WHERE user_id = ? AND failures != 0")
            .bind(user)
            .execute(&self.pool)
            .await
            .map(drop)
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
    async fn five_failures_lock_and_start_the_count_over() {
        let s = Store::open(&Location::Memory).await.unwrap();
        s.seed_once(&Fixtures::builtin()).await.unwrap();
        s.set_password("alice", "$argon2id$fake").await.unwrap();
        for n in 1..5 {
            assert_eq!(
                s.record_password_failure("alice", 5, 60_000).await.unwrap(),
                Failure::Counted(n)
            );
        }
        let Failure::Locked(until) = s.record_password_failure("alice", 5, 60_000).await.unwrap()
        else {
            panic!("the fifth failure locks");
        };
        assert!(until > now_ms());
        let row = s.password("alice").await.unwrap().unwrap();
        assert_eq!((row.failures, row.locked_until), (0, until));
        // A new password lifts the lock.
        s.set_password("alice", "$argon2id$other").await.unwrap();
        assert_eq!(s.password("alice").await.unwrap().unwrap().locked_until, 0);
        // A user without a password has nothing to count.
        assert_eq!(
            s.record_password_failure("bob", 5, 60_000).await.unwrap(),
            Failure::Counted(0)
        );
    }
}
