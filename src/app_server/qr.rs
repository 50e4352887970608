//! QR login sessions. Each session's state sits in a `watch` channel, so a
//! waiting `/session_login` long poll wakes the moment `scan_pc`, `confirm_pc`
//! or `cancel_pc` changes it: no timers, no re-reads.
//!
//! In a cluster ([`QrBook::share`]) the sessions live in a NATS key-value
//! bucket: every change is a compare-and-set there, and each node keeps a
//! mirror fed by the bucket's watch ([`QrBook::apply`]), whose `watch`
//! channels wake the long polls waiting on that node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cluster::kv::{Bucket, Change, Write};
use crate::store::now_ms;
use crate::wire::http::{PcSessionInfo, UserSummary};

/// Wildfire's status numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created = 0,
    Scanned = 1,
    Confirmed = 2,
    /// The PC's long poll has reported the scan.
    ScanSeen = 3,
    Cancelled = 4,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Scanned => "scanned",
            Status::Confirmed => "confirmed",
            Status::ScanSeen => "scan seen",
            Status::Cancelled => "cancelled",
        }
    }

    fn is_scanned(self) -> bool {
        matches!(self, Status::Scanned | Status::ScanSeen)
    }

    fn from_i32(n: i32) -> Option<Self> {
        [
            Status::Created,
            Status::Scanned,
            Status::Confirmed,
            Status::ScanSeen,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|s| *s as i32 == n)
    }
}

/// A session as the cluster's bucket holds it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    token: String,
    creator: IpAddr,
    client_id: String,
    platform: i32,
    device_name: String,
    quick: bool,
    created_ms: i64,
    expires_ms: i64,
    status: i32,
    scanner: Option<UserSummary>,
    scan_told: bool,
}

impl Record {
    fn state(&self) -> State {
        State {
            status: Status::from_i32(self.status).unwrap_or(Status::Cancelled),
            scanner: self.scanner.clone(),
            scan_told: self.scan_told,
        }
    }

    fn set(&mut self, state: &State) {
        self.status = state.status as i32;
        self.scanner = state.scanner.clone();
        self.scan_told = state.scan_told;
    }
}

#[derive(Debug, Clone)]
struct State {
    status: Status,
    scanner: Option<UserSummary>,
    /// Whether the PC has been told of the scan (code 9). A confirm that
    /// lands before it was still answers 9 first: vue-chat acts on a 0 only
    /// after a 9.
    scan_told: bool,
}

pub struct QrSession {
    pub token: String,
    /// The address that created it, for the per-client cap.
    pub creator: IpAddr,
    pub client_id: String,
    pub platform: i32,
    pub device_name: String,
    /// Quick login (`flag: 1`): created already scanned by the caller's user.
    pub quick: bool,
    created: Instant,
    created_ms: i64,
    /// Changed only by an injected fault (`qr.expire`, `qr.ttl`).
    expires: Mutex<Instant>,
    state: watch::Sender<State>,
    polling: AtomicBool,
    /// The bucket revision `state` is at (in a cluster).
    revision: AtomicU64,
}

impl QrSession {
    pub fn status(&self) -> Status {
        self.state.borrow().status
    }

    pub fn scanner(&self) -> Option<UserSummary> {
        self.state.borrow().scanner.clone()
    }

    /// Whether a `/session_login` long poll is waiting on this session.
    pub fn is_polled(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }

    pub fn expires_in(&self) -> Duration {
        self.expires().saturating_duration_since(Instant::now())
    }

    pub fn expires(&self) -> Instant {
        *self.expires.lock().unwrap()
    }

    /// How long ago it was created.
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// The token shortened for logs: enough to tell sessions apart, not to use one.
    fn short(&self) -> &str {
        &self.token[..8]
    }

    fn record(&self) -> Record {
        let state = self.state.borrow();
        Record {
            token: self.token.clone(),
            creator: self.creator,
            client_id: self.client_id.clone(),
            platform: self.platform,
            device_name: self.device_name.clone(),
            quick: self.quick,
            created_ms: self.created_ms,
            expires_ms: self.created_ms
                + self.expires().duration_since(self.created).as_millis() as i64,
            status: state.status as i32,
            scanner: state.scanner.clone(),
            scan_told: state.scan_told,
        }
    }

    /// A session another node created, from its record.
    fn from_record(r: Record, revision: u64) -> Self {
        let now = Instant::now();
        let now_ms = now_ms();
        let ago = Duration::from_millis(now_ms.saturating_sub(r.created_ms).max(0) as u64);
        let left = Duration::from_millis(r.expires_ms.saturating_sub(now_ms).max(0) as u64);
        let state = r.state();
        QrSession {
            created: now.checked_sub(ago).unwrap_or(now),
            expires: Mutex::new(now + left),
            token: r.token,
            creator: r.creator,
            client_id: r.client_id,
            platform: r.platform,
            device_name: r.device_name,
            quick: r.quick,
            created_ms: r.created_ms,
            state: watch::Sender::new(state),
            polling: AtomicBool::new(false),
            revision: AtomicU64::new(revision),
        }
    }

    /// Takes `state` if it is newer than what the session has.
    fn apply(&self, state: State, revision: u64) {
        self.state.send_if_modified(|s| {
            // Under the channel's lock: a stale watch event cannot undo a newer change.
            if revision <= self.revision.load(Ordering::Acquire) {
                return false;
            }
            self.revision.store(revision, Ordering::Release);
            *s = state;
            true
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    #[error("QR session not found or expired; create a new one with /pc_session")]
    Missing,
    #[error("the QR code has not been scanned yet; scan it first")]
    NotScanned,
    #[error("the QR session was cancelled; create a new one with /pc_session")]
    Cancelled,
    #[error("the QR session is already confirmed")]
    AlreadyConfirmed,
    #[error("this QR code was scanned by another user; only that user can confirm or cancel it")]
    WrongUser,
    #[error(
        "another /session_login long poll is already waiting on this session; only one may wait at a time"
    )]
    AlreadyPolling,
    #[error(
        "{0} QR sessions are live, the most this server keeps (--max-qr-sessions); wait for some to expire"
    )]
    Full(usize),
    #[error(
        "this address has {0} live QR sessions, the most one client may have (--max-qr-sessions-per-ip); reuse one or wait for some to expire"
    )]
    FullForClient(usize),
    #[error(
        "this user has {0} live quick-login requests, the most one user may have; answer or cancel one on the phone, or wait for some to expire"
    )]
    FullForUser(usize),
    #[error("the cluster's shared QR state is unreachable ({0}); try again in a moment")]
    Unavailable(String),
}

impl QrError {
    fn unavailable(e: crate::cluster::Error) -> Self {
        QrError::Unavailable(e.to_string())
    }
}

/// How a long poll ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PollOutcome {
    /// Code 9: the phone scanned; the session is now "scan seen".
    Scanned(UserSummary),
    /// Code 0: confirmed by this user; the session is gone.
    Confirmed {
        user_id: String,
        client_id: String,
        platform: i32,
    },
    /// Code 18: cancelled on the phone; the session is gone.
    Cancelled,
    /// Code 8: nothing happened within the poll timeout; the session lives
    /// on with this status, so poll again.
    TimedOut(Status),
    /// Code 8: the session expired while waiting.
    Expired,
    /// Code 8: the server is shutting down.
    ShuttingDown,
}

/// How [`QrBook::consume`] went.
enum Consumed {
    /// This poll ends the session.
    Taken,
    /// Another node's poll ended it first.
    Gone,
    /// The cluster's bucket did not answer; the session is left as it was.
    Unavailable,
}

/// Live quick-login requests one user may have: each one rings the user's
/// phones, so a page cannot ring them much.
pub const QUICK_PER_USER: usize = 5;

pub struct QrBook {
    sessions: Mutex<HashMap<String, Arc<QrSession>>>,
    ttl: Duration,
    /// Live sessions at most, in all and per creating address.
    max: usize,
    max_per_client: usize,
    pub prefix: String,
    /// Bumped on every create, state change and removal.
    pub activity: crate::activity::Activity,
    /// The cluster's bucket, when sessions are shared.
    shared: OnceLock<Bucket<Record>>,
}

impl QrBook {
    pub fn new(ttl: Duration, prefix: String) -> Self {
        Self {
            sessions: Mutex::default(),
            ttl,
            max: usize::MAX,
            max_per_client: usize::MAX,
            prefix,
            activity: Default::default(),
            shared: OnceLock::new(),
        }
    }

    /// Shares the sessions through `bucket` from now on; the caller feeds
    /// the bucket's watch to [`apply`](Self::apply).
    pub fn share(&self, bucket: Bucket<Record>) {
        let _ = self.shared.set(bucket);
    }

    /// Takes a change another node (or this one) made in the bucket.
    pub fn apply(&self, change: Change<Record>) {
        let mut sessions = self.sessions.lock().unwrap();
        match change.value {
            Some(record) => match sessions.get(&change.key) {
                Some(s) => s.apply(record.state(), change.revision),
                None if record.expires_ms > now_ms() => {
                    let s = QrSession::from_record(record, change.revision);
                    sessions.insert(change.key, Arc::new(s));
                }
                None => return,
            },
            None => {
                if sessions.remove(&change.key).is_none() {
                    return;
                }
            }
        }
        drop(sessions);
        self.activity.bump();
    }

    /// Caps live sessions: `max` in all, `per_client` per creating address.
    pub fn with_caps(mut self, max: usize, per_client: usize) -> Self {
        (self.max, self.max_per_client) = (max, per_client);
        self
    }

    pub fn qr_text(&self, token: &str) -> String {
        format!("{}{}", self.prefix, token)
    }

    pub async fn create(
        &self,
        creator: IpAddr,
        client_id: &str,
        platform: i32,
        device_name: &str,
    ) -> Result<Arc<QrSession>, QrError> {
        self.insert(creator, client_id, platform, device_name, None)
            .await
    }

    /// A quick-login session (`flag: 1`): already scanned by `user`, so the
    /// phone only confirms or cancels. Besides the usual caps, a user has at
    /// most `max_per_client` live quick-login sessions.
    pub async fn create_quick(
        &self,
        creator: IpAddr,
        client_id: &str,
        platform: i32,
        device_name: &str,
        user: UserSummary,
    ) -> Result<Arc<QrSession>, QrError> {
        self.insert(creator, client_id, platform, device_name, Some(user))
            .await
    }

    async fn insert(
        &self,
        creator: IpAddr,
        client_id: &str,
        platform: i32,
        device_name: &str,
        quick_user: Option<UserSummary>,
    ) -> Result<Arc<QrSession>, QrError> {
        let session = self.insert_here(creator, client_id, platform, device_name, quick_user)?;
        if let Some(bucket) = self.shared.get() {
            let created = bucket.create(&session.token, &session.record()).await;
            match created {
                Ok(Some(revision)) => {
                    session.revision.fetch_max(revision, Ordering::AcqRel);
                }
                // 24 random bytes do not collide; a taken key is an error all the same.
                Ok(None) => {
                    self.remove(&session.token);
                    return Err(QrError::Unavailable("token taken".into()));
                }
                Err(e) => {
                    self.remove(&session.token);
                    return Err(QrError::unavailable(e));
                }
            }
        }
        self.activity.bump();
        Ok(session)
    }

    /// Checks the caps and adds the session to this node's map.
    fn insert_here(
        &self,
        creator: IpAddr,
        client_id: &str,
        platform: i32,
        device_name: &str,
        quick_user: Option<UserSummary>,
    ) -> Result<Arc<QrSession>, QrError> {
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.len() >= self.max {
            sessions.retain(|_, s| s.expires() > now);
            if sessions.len() >= self.max {
                return Err(QrError::Full(self.max));
            }
        }
        let live = || sessions.values().filter(|s| s.expires() > now);
        if live().filter(|s| s.creator == creator).count() >= self.max_per_client {
            return Err(QrError::FullForClient(self.max_per_client));
        }
        if let Some(user) = &quick_user {
            let bound = |s: &&Arc<QrSession>| {
                s.quick && s.scanner().is_some_and(|u| u.user_id == user.user_id)
            };
            if live().filter(bound).count() >= QUICK_PER_USER {
                return Err(QrError::FullForUser(QUICK_PER_USER));
            }
        }
        let quick = quick_user.is_some();
        let session = Arc::new(QrSession {
            token: crate::token::random_token(24),
            creator,
            client_id: client_id.to_owned(),
            platform,
            device_name: device_name.to_owned(),
            quick,
            created: now,
            created_ms: now_ms(),
            expires: Mutex::new(now + self.ttl),
            state: watch::Sender::new(State {
                status: if quick {
                    Status::Scanned
                } else {
                    Status::Created
                },
                scanner: quick_user,
                scan_told: false,
            }),
            polling: AtomicBool::new(false),
            revision: AtomicU64::new(0),
        });
        info!(
            session = session.short(),
            platform,
            device = ?device_name,
            user = ?session.scanner().map(|u| u.user_id),
            quick,
            "QR session created"
        );
        sessions.insert(session.token.clone(), session.clone());
        Ok(session)
    }

    /// Changes the session's state with `f` (which says whether it changed
    /// anything): here, or as a compare-and-set on the cluster's bucket.
    async fn transition(
        &self,
        token: &str,
        f: impl Fn(&mut State) -> Result<bool, QrError>,
    ) -> Result<(Arc<QrSession>, bool), QrError> {
        let session = self.find(token).await?;
        let Some(bucket) = self.shared.get() else {
            let mut result = Ok(false);
            session.state.send_if_modified(|s| {
                result = f(s);
                result == Ok(true)
            });
            return result.map(|changed| (session, changed));
        };
        let decide = |record: Option<Record>| {
            let mut record = record.ok_or(QrError::Missing)?;
            let mut state = record.state();
            if !f(&mut state)? {
                return Ok((Write::Keep, None));
            }
            record.set(&state);
            Ok((Write::Put(record), Some(state)))
        };
        // From the mirror's copy: usually current, so one round trip.
        let revision = session.revision.load(Ordering::Acquire);
        let changed = match revision {
            0 => bucket.change(token, decide).await,
            _ => {
                bucket
                    .change_from(token, (session.record(), revision), decide)
                    .await
            }
        };
        let changed = changed.map_err(QrError::unavailable)??;
        let (state, revision) = changed;
        let changed = state.is_some();
        if let (Some(state), Some(revision)) = (state, revision) {
            session.apply(state, revision);
        }
        Ok((session, changed))
    }

    /// The live session of `token`: here, or (in a cluster, when this
    /// node's mirror has not caught up yet) read from the bucket.
    async fn find(&self, token: &str) -> Result<Arc<QrSession>, QrError> {
        let here = self.get(token);
        let Some(bucket) = self.shared.get().filter(|_| here.is_err()) else {
            return here;
        };
        match bucket.get(token).await {
            Ok(Some((record, revision))) if record.expires_ms > now_ms() => {
                let session = Arc::new(QrSession::from_record(record, revision));
                let mut sessions = self.sessions.lock().unwrap();
                Ok(sessions.entry(token.to_owned()).or_insert(session).clone())
            }
            Ok(_) => Err(QrError::Missing),
            Err(e) => Err(QrError::unavailable(e)),
        }
    }

    /// Ends a confirmed or cancelled session for the one poll that answers
    /// it (a delete-if-unchanged in a cluster, so one node's poll wins).
    async fn consume(&self, token: &str, status: Status) -> Consumed {
        let Some(bucket) = self.shared.get() else {
            self.remove(token);
            return Consumed::Taken;
        };
        let decide = |record: Option<Record>| {
            Ok::<_, ()>(match record {
                Some(r) if r.status == status as i32 => (Write::Delete, true),
                _ => (Write::Keep, false),
            })
        };
        let known = self.get(token).ok().and_then(|s| {
            let revision = s.revision.load(Ordering::Acquire);
            (revision > 0).then(|| (s.record(), revision))
        });
        let taken = match known {
            Some(known) => bucket.change_from(token, known, decide).await,
            None => bucket.change(token, decide).await,
        };
        match taken {
            Ok(Ok((true, _))) => {
                self.remove(token);
                Consumed::Taken
            }
            Ok(_) => {
                self.remove(token);
                Consumed::Gone
            }
            // Still there for the next poll.
            Err(_) => Consumed::Unavailable,
        }
    }

    /// Drops an expired session here and in the cluster's bucket.
    async fn expire(&self, token: &str) {
        self.remove(token);
        if let Some(bucket) = self.shared.get()
            && let Err(e) = bucket.delete(token).await
        {
            tracing::debug!(error = %e, "could not delete an expired QR session from the bucket");
        }
    }

    /// The live session of `token`; an expired one is dropped on the way.
    pub fn get(&self, token: &str) -> Result<Arc<QrSession>, QrError> {
        let mut sessions = self.sessions.lock().unwrap();
        let session = sessions.get(token).ok_or(QrError::Missing)?;
        if session.expires() <= Instant::now() {
            let s = sessions.remove(token).expect("present");
            info!(session = s.short(), "QR session expired");
            return Err(QrError::Missing);
        }
        Ok(session.clone())
    }

    fn remove(&self, token: &str) {
        self.sessions.lock().unwrap().remove(token);
        self.activity.bump();
    }

    /// Status 0 → 1. Scanning again as the same user is harmless.
    pub async fn scan(&self, token: &str, scanner: UserSummary) -> Result<Arc<QrSession>, QrError> {
        let (session, _) = self
            .transition(token, |s| match s.status {
                Status::Created => {
                    s.status = Status::Scanned;
                    s.scanner = Some(scanner.clone());
                    Ok(true)
                }
                st if st.is_scanned()
                    && s.scanner.as_ref().map(|u| &u.user_id) == Some(&scanner.user_id) =>
                {
                    Ok(false)
                }
                Status::Confirmed => Err(QrError::AlreadyConfirmed),
                Status::Cancelled => Err(QrError::Cancelled),
                _ => Err(QrError::WrongUser),
            })
            .await?;
        self.activity.bump();
        info!(session = session.short(), user = ?scanner.user_id, "QR session scanned");
        Ok(session)
    }

    /// Status 1 or 3 → 2, by the user who scanned.
    pub async fn confirm(&self, token: &str, user_id: &str) -> Result<Arc<QrSession>, QrError> {
        self.decide(token, user_id, Status::Confirmed).await
    }

    /// Status 1 or 3 → 4, by the user who scanned.
    pub async fn cancel(&self, token: &str, user_id: &str) -> Result<Arc<QrSession>, QrError> {
        self.decide(token, user_id, Status::Cancelled).await
    }

    async fn decide(
        &self,
        token: &str,
        user_id: &str,
        to: Status,
    ) -> Result<Arc<QrSession>, QrError> {
        let (session, _) = self
            .transition(token, |s| match s.status {
                Status::Created => Err(QrError::NotScanned),
                Status::Confirmed => Err(QrError::AlreadyConfirmed),
                Status::Cancelled => Err(QrError::Cancelled),
                Status::Scanned | Status::ScanSeen => {
                    if s.scanner.as_ref().is_some_and(|u| u.user_id == user_id) {
                        s.status = to;
                        Ok(true)
                    } else {
                        Err(QrError::WrongUser)
                    }
                }
            })
            .await?;
        self.activity.bump();
        info!(
            session = session.short(),
            user = user_id,
            "QR session {}",
            to.name()
        );
        Ok(session)
    }

    /// Takes the session's one waiter slot (a `/session_login` long poll or
    /// an event stream); freed when the `Waiter` is dropped, however its
    /// request ends.
    pub async fn wait_on(&self, token: &str) -> Result<Waiter, QrError> {
        let session = self.find(token).await?;
        if session.polling.swap(true, Ordering::AcqRel) {
            return Err(QrError::AlreadyPolling);
        }
        let rx = session.state.subscribe();
        Ok(Waiter { session, rx })
    }

    /// The `/session_login` long poll: waits up to `timeout` for something the
    /// PC has not been told yet.
    pub async fn poll(
        &self,
        token: &str,
        timeout: Duration,
        shutdown: &CancellationToken,
    ) -> Result<PollOutcome, QrError> {
        let mut waiter = self.wait_on(token).await?;
        Ok(self
            .next(&mut waiter, Instant::now() + timeout, shutdown)
            .await)
    }

    /// Waits until `deadline` for the next thing the PC has not been told:
    /// a scan (marked seen), the confirmation or the cancel (both end the
    /// session), or the session's expiry.
    pub async fn next(
        &self,
        waiter: &mut Waiter,
        deadline: Instant,
        shutdown: &CancellationToken,
    ) -> PollOutcome {
        let session = &waiter.session;
        let token = session.token.as_str();
        loop {
            let state = waiter.rx.borrow_and_update().clone();
            match state.status {
                // Code 9 comes before 0 even when the confirm came first;
                // the session stays confirmed for the next poll.
                Status::Scanned | Status::Confirmed if !state.scan_told => {
                    let told = self
                        .transition(token, |s| {
                            let first = !s.scan_told;
                            s.scan_told = true;
                            if s.status == Status::Scanned {
                                s.status = Status::ScanSeen;
                            }
                            Ok(first)
                        })
                        .await;
                    match told {
                        Ok((_, true)) => {
                            waiter.rx.borrow_and_update();
                            self.activity.bump();
                            info!(session = session.short(), "QR session scan seen by the PC");
                            return PollOutcome::Scanned(
                                state.scanner.expect("scanned sessions have a scanner"),
                            );
                        }
                        // Another node's poll told it: wait for this node's mirror.
                        Ok((_, false)) => {}
                        Err(QrError::Missing) => return PollOutcome::Expired,
                        // The cluster's bucket is unreachable: the PC polls again.
                        Err(_) => return PollOutcome::TimedOut(session.status()),
                    }
                }
                Status::Confirmed => {
                    match self.consume(token, Status::Confirmed).await {
                        Consumed::Taken => {}
                        Consumed::Gone => return PollOutcome::Expired,
                        Consumed::Unavailable => return PollOutcome::TimedOut(Status::Confirmed),
                    }
                    let user = state.scanner.expect("confirmed sessions have a scanner");
                    info!(session = session.short(), user = ?user.user_id, "QR session logged in; token used up");
                    return PollOutcome::Confirmed {
                        user_id: user.user_id,
                        client_id: session.client_id.clone(),
                        platform: session.platform,
                    };
                }
                // A cancel answers 18 at once, told scan or not: the page
                // starts over on 18 whatever came before, and a declined
                // login has no one to show.
                Status::Cancelled => {
                    self.consume(token, Status::Cancelled).await;
                    return PollOutcome::Cancelled;
                }
                Status::Created | Status::Scanned | Status::ScanSeen => {}
            }
            tokio::select! {
                // The sender lives in `session`, which we hold, so this cannot fail.
                _ = waiter.rx.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return PollOutcome::TimedOut(session.status()),
                _ = tokio::time::sleep_until(session.expires()) => {
                    self.expire(token).await;
                    info!(session = session.short(), "QR session expired");
                    return PollOutcome::Expired;
                }
                _ = shutdown.cancelled() => return PollOutcome::ShuttingDown,
            }
        }
    }

    /// The newest live session's token (`latest` in fault rules).
    pub fn newest(&self) -> Option<String> {
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap();
        sessions
            .values()
            .filter(|s| s.expires() > now)
            .max_by_key(|s| s.created)
            .map(|s| s.token.clone())
    }

    /// Makes `token` expire at `at` (an injected fault: `qr.expire`,
    /// `qr.ttl`), waking its waiter so it sees the new time.
    pub async fn set_expiry(&self, token: &str, at: Instant) -> Result<(), QrError> {
        let session = self.get(token)?;
        *session.expires.lock().unwrap() = at;
        session.state.send_modify(|_| {});
        if at <= Instant::now() {
            info!(
                session = session.short(),
                "QR session expired (injected fault)"
            );
            self.expire(token).await;
        }
        self.activity.bump();
        Ok(())
    }

    /// The newest `limit` live sessions, newest first.
    pub fn list(&self, limit: usize) -> Vec<PcSessionInfo> {
        let now = Instant::now();
        let mut list: Vec<_> = self
            .sessions
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.expires() > now)
            .cloned()
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.created));
        list.iter().take(limit).map(|s| self.info(s, now)).collect()
    }

    /// A session as the dev API shows it.
    pub fn info(&self, s: &QrSession, now: Instant) -> PcSessionInfo {
        let state = s.state.borrow().clone();
        PcSessionInfo {
            token: s.token.clone(),
            qr_text: self.qr_text(&s.token),
            status: state.status as i32,
            status_name: state.status.name().into(),
            quick_login: s.quick,
            created_at: s.created_ms,
            age_ms: now.saturating_duration_since(s.created).as_millis() as i64,
            expires_in_ms: s.expires().saturating_duration_since(now).as_millis() as i64,
            client_id: s.client_id.clone(),
            platform: s.platform,
            device_name: s.device_name.clone(),
            scanner: state.scanner,
        }
    }

    /// The state name of every live session.
    pub fn states(&self) -> Vec<&'static str> {
        let now = Instant::now();
        let sessions = self.sessions.lock().unwrap();
        sessions
            .values()
            .filter(|s| s.expires() > now)
            .map(|s| s.state.borrow().status.name())
            .collect()
    }

    /// Drops expired sessions.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut gone = 0;
        self.sessions.lock().unwrap().retain(|_, s| {
            let live = s.expires() > now;
            if !live {
                info!(session = s.short(), "QR session expired");
                gone += 1;
            }
            live
        });
        if gone > 0 {
            self.activity.bump();
        }
    }
}

/// Holds a session's waiter slot (see [`QrBook::wait_on`]).
pub struct Waiter {
    session: Arc<QrSession>,
    rx: watch::Receiver<State>,
}

impl Waiter {
    pub fn session(&self) -> &QrSession {
        &self.session
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.session.polling.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn user(id: &str) -> UserSummary {
        UserSummary {
            user_id: id.into(),
            display_name: id.to_uppercase(),
            mobile: None,
            portrait: None,
        }
    }

    fn book() -> Arc<QrBook> {
        Arc::new(QrBook::new(
            Duration::from_secs(300),
            "imctl://pcsession/".into(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn full_flow_wakes_the_poll_at_each_step() {
        let b = book();
        let s = b.create(LOCAL, "pc-1", 5, "Chrome").await.unwrap();
        let never = CancellationToken::new();
        let t = s.token.clone();

        let poll = {
            let (b, t, never) = (b.clone(), t.clone(), never.clone());
            tokio::spawn(async move { b.poll(&t, Duration::from_secs(50), &never).await })
        };
        tokio::task::yield_now().await;
        b.scan(&t, user("alice")).await.unwrap();
        assert_eq!(poll.await.unwrap(), Ok(PollOutcome::Scanned(user("alice"))));
        assert_eq!(s.status(), Status::ScanSeen);

        let poll = {
            let (b, t, never) = (b.clone(), t.clone(), never.clone());
            tokio::spawn(async move { b.poll(&t, Duration::from_secs(50), &never).await })
        };
        tokio::task::yield_now().await;
        b.confirm(&t, "alice").await.unwrap();
        let out = poll.await.unwrap().unwrap();
        assert_eq!(
            out,
            PollOutcome::Confirmed {
                user_id: "alice".into(),
                client_id: "pc-1".into(),
                platform: 5
            }
        );
        // Single use: the session is gone.
        assert_eq!(b.get(&t).err(), Some(QrError::Missing));
        assert_eq!(
            b.poll(&t, Duration::from_secs(1), &never).await,
            Err(QrError::Missing)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_confirm_before_any_poll_still_answers_9_then_0() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        let never = CancellationToken::new();
        b.scan(&t, user("alice")).await.unwrap();
        b.confirm(&t, "alice").await.unwrap();
        let poll = || b.poll(&t, Duration::from_secs(1), &never);
        assert_eq!(poll().await, Ok(PollOutcome::Scanned(user("alice"))));
        // Still confirmed, and still there for the next poll.
        assert_eq!(b.get(&t).unwrap().status(), Status::Confirmed);
        assert!(matches!(poll().await, Ok(PollOutcome::Confirmed { .. })));
        assert_eq!(poll().await, Err(QrError::Missing));
    }

    #[tokio::test(start_paused = true)]
    async fn a_told_scan_is_not_told_again_after_the_confirm() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        let never = CancellationToken::new();
        b.scan(&t, user("alice")).await.unwrap();
        let poll = || b.poll(&t, Duration::from_secs(1), &never);
        assert_eq!(poll().await, Ok(PollOutcome::Scanned(user("alice"))));
        b.confirm(&t, "alice").await.unwrap();
        assert!(matches!(poll().await, Ok(PollOutcome::Confirmed { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_session_starts_scanned_by_its_user() {
        let b = book();
        let s = b
            .create_quick(LOCAL, "pc", 5, "Chrome", user("alice"))
            .await
            .unwrap();
        let t = s.token.clone();
        assert_eq!(s.status(), Status::Scanned);
        assert!(s.quick && b.list(1)[0].quick_login);
        assert_eq!(
            b.scan(&t, user("bob")).await.err(),
            Some(QrError::WrongUser)
        );
        assert_eq!(b.confirm(&t, "bob").await.err(), Some(QrError::WrongUser));
        // The phone confirms without scanning; the PC still hears 9 first.
        b.confirm(&t, "alice").await.unwrap();
        let never = CancellationToken::new();
        let poll = || b.poll(&t, Duration::from_secs(1), &never);
        assert_eq!(poll().await, Ok(PollOutcome::Scanned(user("alice"))));
        assert_eq!(
            poll().await,
            Ok(PollOutcome::Confirmed {
                user_id: "alice".into(),
                client_id: "pc".into(),
                platform: 5
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_session_can_be_cancelled_and_answers_18_at_once() {
        let b = book();
        let t = b
            .create_quick(LOCAL, "pc", 5, "d", user("alice"))
            .await
            .unwrap()
            .token
            .clone();
        b.cancel(&t, "alice").await.unwrap();
        let never = CancellationToken::new();
        assert_eq!(
            b.poll(&t, Duration::from_secs(1), &never).await,
            Ok(PollOutcome::Cancelled)
        );
    }

    #[tokio::test]
    async fn quick_sessions_are_capped_per_user_too() {
        let b = QrBook::new(Duration::from_secs(300), "p/".into()).with_caps(100, 2);
        let ip = |n| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n));
        for n in 0..QUICK_PER_USER as u8 {
            b.create_quick(ip(n), "pc", 5, "d", user("alice"))
                .await
                .unwrap();
        }
        assert_eq!(
            b.create_quick(ip(99), "pc", 5, "d", user("alice"))
                .await
                .err(),
            Some(QrError::FullForUser(QUICK_PER_USER))
        );
        b.create_quick(ip(99), "pc", 5, "d", user("bob"))
            .await
            .unwrap();
        b.create(ip(99), "pc", 5, "d").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_change_nothing() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        assert_eq!(
            b.confirm(&t, "alice").await.err(),
            Some(QrError::NotScanned)
        );
        assert_eq!(b.cancel(&t, "alice").await.err(), Some(QrError::NotScanned));
        b.scan(&t, user("alice")).await.unwrap();
        b.scan(&t, user("alice")).await.unwrap();
        assert_eq!(
            b.scan(&t, user("bob")).await.err(),
            Some(QrError::WrongUser)
        );
        assert_eq!(b.confirm(&t, "bob").await.err(), Some(QrError::WrongUser));
        assert_eq!(b.get(&t).unwrap().status(), Status::Scanned);
        b.confirm(&t, "alice").await.unwrap();
        assert_eq!(
            b.confirm(&t, "alice").await.err(),
            Some(QrError::AlreadyConfirmed)
        );
        assert_eq!(
            b.cancel(&t, "alice").await.err(),
            Some(QrError::AlreadyConfirmed)
        );
        assert_eq!(b.get(&t).unwrap().status(), Status::Confirmed);
        assert_eq!(
            b.confirm("nope", "alice").await.err(),
            Some(QrError::Missing)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_answers_18_once() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        b.scan(&t, user("alice")).await.unwrap();
        b.cancel(&t, "alice").await.unwrap();
        assert_eq!(b.confirm(&t, "alice").await.err(), Some(QrError::Cancelled));
        let never = CancellationToken::new();
        // The scan was never reported; the PC now learns of the cancel.
        assert_eq!(
            b.poll(&t, Duration::from_secs(1), &never).await,
            Ok(PollOutcome::Cancelled)
        );
        assert_eq!(b.get(&t).err(), Some(QrError::Missing));
    }

    #[tokio::test(start_paused = true)]
    async fn poll_times_out_then_session_expires() {
        let b = Arc::new(QrBook::new(Duration::from_secs(120), "x/".into()));
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        let never = CancellationToken::new();
        assert_eq!(
            b.poll(&t, Duration::from_secs(50), &never).await,
            Ok(PollOutcome::TimedOut(Status::Created))
        );
        assert_eq!(
            b.poll(&t, Duration::from_secs(50), &never).await,
            Ok(PollOutcome::TimedOut(Status::Created))
        );
        assert_eq!(
            b.poll(&t, Duration::from_secs(50), &never).await,
            Ok(PollOutcome::Expired)
        );
        assert_eq!(b.get(&t).err(), Some(QrError::Missing));
        assert!(b.list(usize::MAX).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn second_concurrent_poll_is_refused_and_the_first_keeps_its_place() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        let never = CancellationToken::new();
        let first = {
            let (b, t, never) = (b.clone(), t.clone(), never.clone());
            tokio::spawn(async move { b.poll(&t, Duration::from_secs(50), &never).await })
        };
        tokio::task::yield_now().await;
        assert_eq!(
            b.poll(&t, Duration::from_secs(50), &never).await,
            Err(QrError::AlreadyPolling)
        );
        first.abort();
        let _ = first.await;
        // A dropped poll frees the slot.
        assert_eq!(
            b.poll(&t, Duration::from_secs(1), &never).await,
            Ok(PollOutcome::TimedOut(Status::Created))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_answers_waiting_polls() {
        let b = book();
        let t = b.create(LOCAL, "pc", 5, "d").await.unwrap().token.clone();
        let stop = CancellationToken::new();
        let poll = {
            let (b, t, stop) = (b.clone(), t.clone(), stop.clone());
            tokio::spawn(async move { b.poll(&t, Duration::from_secs(50), &stop).await })
        };
        tokio::task::yield_now().await;
        stop.cancel();
        assert_eq!(poll.await.unwrap(), Ok(PollOutcome::ShuttingDown));
    }

    #[tokio::test(start_paused = true)]
    async fn list_is_newest_first_with_scanner() {
        let b = book();
        let a = b
            .create(LOCAL, "pc", 5, "first")
            .await
            .unwrap()
            .token
            .clone();
        tokio::time::advance(Duration::from_millis(5)).await;
        let c = b
            .create(LOCAL, "pc", 3, "second")
            .await
            .unwrap()
            .token
            .clone();
        b.scan(&a, user("bob")).await.unwrap();
        let list = b.list(usize::MAX);
        assert_eq!(
            list.iter().map(|s| s.token.clone()).collect::<Vec<_>>(),
            [c, a.clone()]
        );
        assert_eq!(list[1].status, 1);
        assert_eq!(list[1].scanner.as_ref().unwrap().user_id, "bob");
        assert_eq!(list[1].qr_text, format!("imctl://pcsession/{a}"));
    }

    #[tokio::test]
    async fn caps_count_live_sessions_in_all_and_per_client() {
        let b = QrBook::new(Duration::from_secs(300), "p/".into()).with_caps(3, 2);
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        b.create(LOCAL, "pc", 5, "d").await.unwrap();
        b.create(LOCAL, "pc", 5, "d").await.unwrap();
        assert_eq!(
            b.create(LOCAL, "pc", 5, "d").await.err(),
            Some(QrError::FullForClient(2))
        );
        b.create(other, "pc", 5, "d").await.unwrap();
        assert_eq!(
            b.create(other, "pc", 5, "d").await.err(),
            Some(QrError::Full(3))
        );
    }
}
