//! A user's own account: passwords (set, reset, change, log in with),
//! display name, and deleting the account.
//!
//! Passwords are stored as argon2id PHC strings (OWASP's m=19 MiB, t=2,
//! p=1), hashed off the async threads, [`HASHING_AT_ONCE`] at a time. A
//! password is weak (code 24) when it has fewer than [`MIN_PASSWORD`]
//! characters or only one distinct character. Five wrong passwords in a row
//! for a mobile lock its password login for five minutes (code 20); tries
//! are counted in memory per mobile, known or not, and reserved before the
//! check, so neither the answers nor concurrent guesses tell more. Reset and
//! deletion codes are six digits, kept in memory, sent under the SMS limits,
//! single use, and die after five wrong tries (re-sending keeps the count).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use std::time::Duration;
use tokio::sync::Semaphore;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::State;
use tokio::time::Instant;

use super::extract::{AuthUser, HeaderUser};
use super::login::{check_client, logged_in, per_address};
use super::rate::Window;
use super::sms::is_valid_mobile;
use super::state::AppState;
use crate::http::advertise::PublicUrls;
use crate::http::reply::Reply;
use crate::http::{ApiError, ApiResult};
use crate::http::{ApiJson, ClientAddr};
use crate::store::{GroupChange, User, now_ms};
use crate::wire::http::{
    ApiResponse, ChangeNameRequest, ChangePasswordRequest, DestroyRequest, Empty, LoginResult,
    PasswordLoginRequest, ResetPasswordRequest, SendResetCodeRequest, SmsEntry,
};
use crate::wire::limits;
use crate::wire::ws::close;

/// The fewest characters of a password that is not weak.
pub const MIN_PASSWORD: usize = 6;
/// Wrong password logins in a row that lock the account.
pub const PASSWORD_TRIES: i64 = 5;
/// How long a locked account refuses password logins.
pub const PASSWORD_LOCK: Duration = Duration::from_secs(5 * 60);
/// How long the `resetCode` of `/login` and `/send_reset_code` lives.
pub const RESET_CODE_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a `/send_destroy_code` code lives.
pub const DESTROY_CODE_TTL: Duration = Duration::from_secs(5 * 60);
/// Wrong tries that burn a reset or deletion code.
pub const CODE_TRIES: u32 = 5;
/// Password, reset and deletion calls one account (or mobile) may make per
/// minute, on top of the per-address limit.
pub const ACCOUNT_CALLS_PER_MINUTE: u32 = 20;
/// Pending codes (and password try counts) kept at most; beyond, expired
/// ones are swept first and a new one refused.
const MAX_PENDING_CODES: usize = 100_000;
/// Password hashes computed at once (each holds 19 MiB), and calls that may
/// wait for one; beyond, code 3.
pub const HASHING_AT_ONCE: usize = 2;
const HASHING_QUEUE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("no code is pending; ask for one with /send_reset_code or /send_destroy_code")]
    NoCode,
    #[error("the code has expired or was used up; ask for a new one")]
    CodeExpired,
    #[error("wrong code; {0} tries left")]
    CodeWrong(u32),
    #[error("wrong mobile or password")]
    WrongCredentials,
    #[error("the old password is wrong")]
    WrongOldPassword,
    #[error("too many wrong passwords: password login is locked for {0}s; log in by SMS or wait")]
    Locked(i64),
    #[error("the password is too weak: use at least {MIN_PASSWORD} characters, not all the same")]
    WeakPassword,
    #[error("another user is already called {0:?}")]
    NameTaken(String),
    #[error("{0}")]
    NoPermission(String),
    #[error("group {0:?} has no announcement yet")]
    NoAnnouncement(String),
}

/// What a one-time account code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Reset,
    Destroy,
}

impl Purpose {
    fn ttl(self) -> Duration {
        match self {
            Purpose::Reset => RESET_CODE_TTL,
            Purpose::Destroy => DESTROY_CODE_TTL,
        }
    }
}

struct Pending {
    code: String,
    expires: Instant,
    wrong: u32,
}

/// Wrong passwords in a row for one mobile.
struct Tries {
    count: i64,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Account codes and per-account limits, shared by the handlers.
pub struct Accounts {
    codes: Mutex<HashMap<(Purpose, String), Pending>>,
    /// Password tries per mobile (or `user:ID` without one).
    tries: Mutex<HashMap<String, Tries>>,
    /// `None` with `--no-rate-limits`.
    per_account: Option<Window<String>>,
}

impl Accounts {
    pub fn new(rate_limited: bool) -> Self {
        Self {
            codes: Mutex::default(),
            tries: Mutex::default(),
            per_account: rate_limited
                .then(|| Window::new(ACCOUNT_CALLS_PER_MINUTE, Duration::from_secs(60))),
        }
    }

    /// A fresh six-digit code for `user`, replacing any pending one but
    /// keeping its wrong tries: re-sending does not buy more guesses.
    pub fn issue(&self, purpose: Purpose, user: &str) -> ApiResult<String> {
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        let now = Instant::now();
        let mut codes = self.codes.lock().unwrap();
        if codes.len() >= MAX_PENDING_CODES {
            codes.retain(|_, p| p.expires > now);
            if codes.len() >= MAX_PENDING_CODES {
                return Err(ApiError::TooMany(
                    "too many account codes are pending; try again in a few minutes".into(),
                ));
            }
        }
        let key = (purpose, user.to_owned());
        let wrong = codes
            .get(&key)
            .filter(|p| p.expires > now)
            .map_or(0, |p| p.wrong);
        codes.insert(
            key,
            Pending {
                code: code.clone(),
                expires: now + purpose.ttl(),
                wrong,
            },
        );
        Ok(code)
    }

    /// Reserves one password try for `key` before it is checked, so
    /// concurrent guesses count too. `Ok(true)` when this try, if wrong,
    /// locks; `Locked` while locked.
    fn begin_try(&self, key: &str) -> ApiResult<bool> {
        let now = Instant::now();
        let mut tries = self.tries.lock().unwrap();
        if tries.len() >= MAX_PENDING_CODES && !tries.contains_key(key) {
            tries.retain(|_, t| t.live(now));
            if tries.len() >= MAX_PENDING_CODES {
                return Err(ApiError::TooMany(
                    "too many password logins are failing; try again in a few minutes".into(),
                ));
            }
        }
        let t = tries.entry(key.to_owned()).or_insert(Tries {
            count: 0,
            last: now,
            locked_until: None,
        });
        if let Some(until) = t.locked_until {
            if until > now {
                return Err(
                    AccountError::Locked(until.duration_since(now).as_secs() as i64 + 1).into(),
                );
            }
            (t.count, t.locked_until) = (0, None);
        }
        t.count += 1;
        t.last = now;
        if t.count >= PASSWORD_TRIES {
            t.locked_until = Some(now + PASSWORD_LOCK);
            return Ok(true);
        }
        Ok(false)
    }

    /// A right password: the count starts over.
    fn right_try(&self, key: &str) {
        self.tries.lock().unwrap().remove(key);
    }

    /// Uses up `user`'s code if `code` is it; a wrong one counts towards
    /// burning it.
    pub fn verify(&self, purpose: Purpose, user: &str, code: &str) -> Result<(), AccountError> {
        let key = (purpose, user.to_owned());
        let mut codes = self.codes.lock().unwrap();
        let pending = codes.get_mut(&key).ok_or(AccountError::NoCode)?;
        if Instant::now() >= pending.expires || pending.wrong >= CODE_TRIES {
            codes.remove(&key);
            return Err(AccountError::CodeExpired);
        }
        if pending.code != code.trim() {
            pending.wrong += 1;
            return Err(AccountError::CodeWrong(CODE_TRIES - pending.wrong));
        }
        codes.remove(&key);
        Ok(())
    }

    fn forget(&self, user: &str) {
        self.codes.lock().unwrap().retain(|(_, u), _| u != user);
    }

    /// Counts one call against `key`'s per-minute budget.
    fn hit(&self, key: String) -> ApiResult<()> {
        let Some(window) = &self.per_account else {
            return Ok(());
        };
        window.hit(key).map_err(|retry_in| {
            ApiError::TooMany(format!(
                "more than {ACCOUNT_CALLS_PER_MINUTE} password or account calls for this account in a minute; wait {}s",
                retry_in.as_secs().max(1)
            ))
        })
    }

    /// Forgets finished rate windows.
    pub fn sweep(&self) {
        if let Some(w) = &self.per_account {
            w.sweep();
        }
        let now = Instant::now();
        self.codes.lock().unwrap().retain(|_, p| p.expires > now);
        self.tries.lock().unwrap().retain(|_, t| t.live(now));
    }
}

impl Tries {
    /// Locked, or with recent wrong tries worth remembering.
    fn live(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|u| u > now) || now.duration_since(self.last) < PASSWORD_LOCK
    }
}

/// Refuses a weak (24) or malformed (15) new password.
fn check_new_password(password: &str) -> ApiResult<()> {
    check_password_text(password)?;
    let mut chars = password.chars();
    let first = chars.next();
    if password.chars().count() < MIN_PASSWORD || chars.all(|c| Some(c) == first) {
        return Err(AccountError::WeakPassword.into());
    }
    Ok(())
}

fn check_password_text(password: &str) -> ApiResult<()> {
    limits::check_text("password", password, limits::MAX_PASSWORD)
        .map_err(ApiError::InvalidParameter)
}

static QUEUE: Semaphore = Semaphore::const_new(HASHING_QUEUE);
static RUNNING: Semaphore = Semaphore::const_new(HASHING_AT_ONCE);

/// Runs `f` (argon2) off the async threads, [`HASHING_AT_ONCE`] at a time:
/// each holds 19 MiB, so a burst of password calls must not run them all.
async fn hashing<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let _queued = QUEUE.try_acquire().map_err(|_| {
        ApiError::TooMany("the server is busy checking passwords; retry in a second".into())
    })?;
    let _running = RUNNING.acquire().await.expect("never closed");
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(&e))
}

/// Hashes a password with a fresh salt.
pub async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    hashing(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| internal(&e))
}

/// Whether `password` matches `hash`; `None` checks against a dummy hash,
/// so an unknown user costs the same time as a known one.
async fn password_matches(hash: Option<String>, password: &str) -> ApiResult<bool> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let password = password.to_owned();
    hashing(move || {
        let hash = hash.unwrap_or_else(|| {
            DUMMY
                .get_or_init(|| {
                    Argon2::default()
                        .hash_password(crate::token::random_token(16).as_bytes())
                        .expect("hashing a random password")
                        .to_string()
                })
                .clone()
        });
        PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("password hashing failed: {e}"))
}

/// Checks a password for the mobile `key` (its user, if any), counting a
/// wrong one towards the lock. `Err(WrongCredentials)` for a wrong one or
/// an unknown user alike; `Locked` while locked.
async fn check_password(
    state: &AppState,
    key: &str,
    user: Option<&User>,
    password: &str,
) -> ApiResult<()> {
    let locks = state.accounts.begin_try(key)?;
    let hash = match user {
        Some(u) => state.store.password(&u.id).await?,
        None => None,
    };
    let known = hash.is_some();
    if password_matches(hash, password).await? && known {
        state.accounts.right_try(key);
        return Ok(());
    }
    if locks {
        tracing::info!(mobile = ?key, "password login locked after wrong passwords");
        return Err(AccountError::Locked(PASSWORD_LOCK.as_secs() as i64).into());
    }
    Err(AccountError::WrongCredentials.into())
}

/// Whose password tries a user's count under: their mobile, as
/// `/login_pwd` names them.
fn tries_key(user: &User) -> String {
    user.mobile
        .clone()
        .unwrap_or_else(|| format!("user:{}", user.id))
}

/// The user a call without login names by `mobile` (`None` when no
/// account has it, which callers must not reveal), else the caller; and
/// the key its calls are limited by.
async fn target_user(
    state: &AppState,
    mobile: Option<&str>,
    caller: Result<AuthUser, ApiError>,
) -> ApiResult<(Option<User>, String)> {
    match mobile.map(str::trim).filter(|m| !m.is_empty()) {
        Some(m) => {
            if !is_valid_mobile(m) {
                return Err(ApiError::InvalidMobile(m.to_owned()));
            }
            let user = state.store.user_by_mobile(m).await?;
            Ok((user, format!("mobile:{m}")))
        }
        None => caller.map(|AuthUser(u)| {
            let key = u.id.clone();
            (Some(u), key)
        }),
    }
}

/// Sends a one-time code to `user`'s mobile through the dev outbox.
async fn send_code(state: &AppState, purpose: Purpose, user: &User) -> ApiResult<()> {
    let mobile = user.mobile.clone().ok_or_else(|| {
        ApiError::InvalidParameter(format!(
            "user {:?} has no mobile to send a code to",
            user.id
        ))
    })?;
    let code = state.accounts.issue(purpose, &user.id)?;
    let ttl = purpose.ttl();
    let what = match purpose {
        Purpose::Reset => "password reset",
        Purpose::Destroy => "account deletion",
    };
    let sent_at = now_ms();
    state
        .sms
        .send_text(SmsEntry {
            mobile,
            text: format!(
                "[imctl] Your {what} code is {code}. It expires in {}.",
                humantime::format_duration(ttl)
            ),
            code,
            sent_at,
            expires_at: sent_at + ttl.as_millis() as i64,
            fault: None,
        })
        .await?;
    tracing::info!(user = ?user.id, what, "account code sent (read it from /_dev/sms)");
    Ok(())
}

#[utoipa::path(post, path = "/send_reset_code", tag = "account", request_body = SendResetCodeRequest,
    responses((status = 200, description = "`code` 0 sent (`result` \"SUCCESS\"; read it from `/_dev/sms`), 1 invalid mobile, 3 too many calls or SMS to this mobile, 13 no mobile and not logged in, 15 user without mobile; a mobile without an account gets the same 0 and no SMS", body = ApiResponse<String>)))]
pub async fn send_reset_code(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Result<AuthUser, ApiError>,
    ApiJson(req): ApiJson<SendResetCodeRequest>,
) -> ApiResult<Reply<&'static str>> {
    per_address(&state, addr)?;
    let (user, key) = target_user(&state, req.mobile.as_deref(), caller).await?;
    state.accounts.hit(key)?;
    match user {
        Some(user) => send_code(&state, Purpose::Reset, &user).await?,
        // The same answer: whether a mobile has an account is not told.
        None => tracing::debug!("reset code asked for a mobile without an account"),
    }
    Ok(Reply::ok("SUCCESS"))
}

#[utoipa::path(post, path = "/reset_pwd", tag = "account", request_body = ResetPasswordRequest,
    responses((status = 200, description = "`code` 0 password set, 1 invalid mobile, 3 too many calls, 5 code expired or burned, 6 wrong code or no account with this mobile, 13 no mobile and not logged in, 15 bad body, 24 weak password", body = ApiResponse<Empty>)))]
pub async fn reset_pwd(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Result<AuthUser, ApiError>,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> ApiResult<Reply<Empty>> {
    per_address(&state, addr)?;
    let (user, key) = target_user(&state, req.mobile.as_deref(), caller).await?;
    state.accounts.hit(key)?;
    // A weak password does not use up the code.
    check_new_password(&req.new_password)?;
    // No account: the same answer as no code sent.
    let user = user.ok_or(AccountError::NoCode)?;
    state
        .accounts
        .verify(Purpose::Reset, &user.id, &req.reset_code)?;
    let hash = hash_password(&req.new_password).await?;
    state.store.set_password(&user.id, &hash).await?;
    state.accounts.right_try(&tries_key(&user));
    tracing::info!(user = ?user.id, "password set with a reset code");
    Ok(Reply::ok(Empty {}))
}

#[utoipa::path(post, path = "/change_pwd", tag = "account", request_body = ChangePasswordRequest,
    responses((status = 200, description = "`code` 0 changed, 3 too many calls, 13 not logged in, 15 bad body, 19 wrong old password (counts towards the lock), 20 locked, 24 weak password", body = ApiResponse<Empty>)))]
pub async fn change_pwd(
    State(state): State<AppState>,
    HeaderUser(user): HeaderUser,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> ApiResult<Reply<Empty>> {
    state.accounts.hit(user.id.clone())?;
    check_password_text(&req.old_password)?;
    check_new_password(&req.new_password)?;
    match check_password(&state, &tries_key(&user), Some(&user), &req.old_password).await {
        Err(e) if e.refusal() == Some(&AccountError::WrongCredentials) => {
            return Err(AccountError::WrongOldPassword.into());
        }
        other => other?,
    }
    let hash = hash_password(&req.new_password).await?;
    state.store.set_password(&user.id, &hash).await?;
    tracing::info!(user = ?user.id, "password changed");
    Ok(Reply::ok(Empty {}))
}

#[utoipa::path(post, path = "/login_pwd", tag = "login", request_body = PasswordLoginRequest,
    responses((status = 200, description = "`code` 0 logged in (as `/login`, with the `authToken` header), 1 invalid mobile, 3 too many logins, 6 unknown mobile or wrong password, 13 banned, 15 bad clientId, platform or password, 20 locked after 5 wrong passwords (5 minutes)",
        body = ApiResponse<LoginResult>, headers(("authToken" = String, description = "the login session, on success")))))]
pub async fn login_pwd(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    urls: PublicUrls,
    ApiJson(req): ApiJson<PasswordLoginRequest>,
) -> ApiResult<Reply<LoginResult>> {
    let mobile = req.mobile.trim();
    if !is_valid_mobile(mobile) {
        return Err(ApiError::InvalidMobile(req.mobile));
    }
    check_client(&req.client_id, req.platform)?;
    check_password_text(&req.password)?;
    per_address(&state, addr)?;
    // Keyed by mobile, so unknown mobiles are limited the same way.
    state.accounts.hit(format!("mobile:{mobile}"))?;
    let user = state.store.user_by_mobile(mobile).await?;
    check_password(&state, mobile, user.as_ref(), &req.password).await?;
    let user = user.expect("a right password has a user");
    logged_in(
        &state,
        &urls,
        &user,
        false,
        &req.client_id,
        req.platform,
        "password",
    )
    .await
}

#[utoipa::path(post, path = "/change_name", tag = "account", request_body = ChangeNameRequest,
    responses((status = 200, description = "`code` 0 renamed (the display name), 13 not logged in, 15 empty, too long or control characters, 17 another user has that name (ASCII case ignored)", body = ApiResponse<Empty>)))]
pub async fn change_name(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<ChangeNameRequest>,
) -> ApiResult<Reply<Empty>> {
    state.accounts.hit(user.id.clone())?;
    let name = req.new_name.trim();
    limits::check_text("newName", name, limits::MAX_DISPLAY_NAME)
        .map_err(ApiError::InvalidParameter)?;
    if !state.store.change_display_name(&user.id, name).await? {
        return Err(AccountError::NameTaken(name.to_owned()).into());
    }
    tracing::info!(user = ?user.id, name = ?name, "display name changed");
    Ok(Reply::ok(Empty {}))
}

#[utoipa::path(post, path = "/send_destroy_code", tag = "account",
    responses((status = 200, description = "`code` 0 sent to the user's mobile (`result` \"SUCCESS\"; read it from `/_dev/sms`), 3 too many calls, 13 not logged in, 15 user without mobile", body = ApiResponse<String>)))]
/// Takes no body (any body is ignored).
pub async fn send_destroy_code(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    HeaderUser(user): HeaderUser,
) -> ApiResult<Reply<&'static str>> {
    per_address(&state, addr)?;
    state.accounts.hit(user.id.clone())?;
    send_code(&state, Purpose::Destroy, &user).await?;
    Ok(Reply::ok("SUCCESS"))
}

#[utoipa::path(post, path = "/destroy", tag = "account", request_body = DestroyRequest,
    responses((status = 200, description = "`code` 0 the account is deleted: its sessions end, its connections close (4001), its messages stay for the others; 3 too many calls, 5 code expired or burned, 6 wrong code, 13 not logged in, 15 bad body", body = ApiResponse<Empty>)))]
pub async fn destroy(
    State(state): State<AppState>,
    HeaderUser(user): HeaderUser,
    ApiJson(req): ApiJson<DestroyRequest>,
) -> ApiResult<Reply<Empty>> {
    state.accounts.hit(user.id.clone())?;
    state
        .accounts
        .verify(Purpose::Destroy, &user.id, &req.code)?;
    // Leave each group through the writer first, as a member leaving would,
    // so the others hear it (owners hand on, last members dissolve).
    // Whatever stays behind, the deletion below removes in one transaction.
    for group in state.store.groups_of(&user.id).await? {
        let change = GroupChange::Leave { group: group.id };
        let left = state.broker.change_group(&user.id, change).await;
        if let Err(e) = left {
            tracing::warn!(user = ?user.id, error = ?e, "leaving a group before deletion failed");
        }
    }
    state.store.delete_user(&user.id).await?;
    state.accounts.forget(&user.id);
    let closed = state
        .broker
        .close_user(&user.id, close::AUTH_FAILED, "account deleted")
        .await;
    tracing::info!(user = ?user.id, closed, "account deleted by its user");
    Ok(Reply::ok(Empty {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn codes_are_single_use_expire_and_burn() {
        let a = Accounts::new(true);
        let code = a.issue(Purpose::Reset, "alice").unwrap();
        assert_eq!(code.len(), 6);
        assert_eq!(
            a.verify(Purpose::Destroy, "alice", &code),
            Err(AccountError::NoCode)
        );
        a.verify(Purpose::Reset, "alice", &code).unwrap();
        assert_eq!(
            a.verify(Purpose::Reset, "alice", &code),
            Err(AccountError::NoCode)
        );
        let code = a.issue(Purpose::Reset, "alice").unwrap();
        tokio::time::advance(RESET_CODE_TTL).await;
        assert_eq!(
            a.verify(Purpose::Reset, "alice", &code),
            Err(AccountError::CodeExpired)
        );
        let code = a.issue(Purpose::Destroy, "alice").unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for left in (0..CODE_TRIES).rev() {
            assert_eq!(
                a.verify(Purpose::Destroy, "alice", wrong),
                Err(AccountError::CodeWrong(left))
            );
        }
        assert_eq!(
            a.verify(Purpose::Destroy, "alice", &code),
            Err(AccountError::CodeExpired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_fifth_try_locks_and_reserved_tries_count() {
        let a = Accounts::new(true);
        // Reserved before the check: five in flight at once are all counted.
        for n in 1..=PASSWORD_TRIES {
            assert_eq!(a.begin_try("13800000001").unwrap(), n == PASSWORD_TRIES);
        }
        assert!(matches!(
            a.begin_try("13800000001").unwrap_err().refusal(),
            Some(AccountError::Locked(_))
        ));
        // Other mobiles are not affected; after the lock the count starts over.
        assert!(!a.begin_try("13800000002").unwrap());
        tokio::time::advance(PASSWORD_LOCK).await;
        assert!(!a.begin_try("13800000001").unwrap());
        // A right password starts it over too.
        for _ in 1..PASSWORD_TRIES {
            a.begin_try("13800000003").unwrap();
        }
        a.right_try("13800000003");
        assert!(!a.begin_try("13800000003").unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn sending_a_code_again_keeps_its_wrong_tries() {
        let a = Accounts::new(true);
        let code = a.issue(Purpose::Reset, "alice").unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..CODE_TRIES - 1 {
            a.verify(Purpose::Reset, "alice", wrong).unwrap_err();
        }
        let code = a.issue(Purpose::Reset, "alice").unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(
            a.verify(Purpose::Reset, "alice", wrong),
            Err(AccountError::CodeWrong(0))
        );
        assert_eq!(
            a.verify(Purpose::Reset, "alice", &code),
            Err(AccountError::CodeExpired)
        );
    }

    #[tokio::test]
    #[expect(
        clippy::await_holding_lock,
        reason = "the held lock is the gate the blocked hashes wait on"
    )]
    async fn password_hashing_waits_in_a_bounded_queue() {
        let gate = std::sync::Arc::new(std::sync::RwLock::new(()));
        let closed = gate.write().unwrap();
        let held: Vec<_> = (0..HASHING_QUEUE)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(hashing(move || drop(gate.read().unwrap())))
            })
            .collect();
        while QUEUE.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(hashing(|| ()).await, Err(ApiError::TooMany(_))));
        drop(closed);
        for h in held {
            h.await.unwrap().unwrap();
        }
        hashing(|| ()).await.unwrap();
    }

    #[test]
    fn weak_passwords() {
        for weak in ["12345", "aaaaaaaa", "ab"] {
            assert!(
                matches!(
                    check_new_password(weak).unwrap_err().refusal(),
                    Some(AccountError::WeakPassword)
                ),
                "{weak}"
            );
        }
        assert!(matches!(
            check_new_password(""),
            Err(ApiError::InvalidParameter(_))
        ));
        assert!(check_new_password("hunter2").is_ok());
    }
}
