//! SMS codes: issuing, resend limits, verification with a burn-after-N rule,
//! and the dev outbox that stands in for the phone network.
//!
//! Each mobile's state is one [`MobileState`]: here in a map, or in a
//! cluster ([`SmsBook::share`]) in a NATS key-value bucket changed by
//! compare-and-set, so a code sent through one node is checked (and used
//! up, or burned) on any other. Sent SMS are broadcast to every node's outbox.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::cluster::kv::{Bucket, Write};
use crate::wire::http::SmsEntry;

/// The window of `--sms-per-mobile-per-day`.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// How many SMS the dev outbox remembers.
const OUTBOX_CAPACITY: usize = 1000;

/// Where nodes tell each other of the SMS they sent.
pub const OUTBOX_SUBJECT: &str = "imctl.sms";

pub use crate::wire::ids::is_valid_mobile;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmsError {
    #[error("a code was sent to this number {}s ago; wait {}s before asking again", .since.as_secs(), .retry_in.as_secs().max(1))]
    TooOften { since: Duration, retry_in: Duration },
    #[error(
        "{0} codes were sent to this number in the last 24 hours, the most it gets (--sms-per-mobile-per-day); try again tomorrow or log in with the super code"
    )]
    TooManyToday(u32),
    #[error("no code is pending for this number; request one with /send_code")]
    NoCode,
    #[error("the code has expired; request a new one with /send_code")]
    Expired,
    #[error("too many wrong codes: this code is burned; request a new one with /send_code")]
    Burned,
    #[error("wrong code; {left} tries left before it is burned")]
    Wrong { left: u32 },
    #[error(
        "wrong code; that was the last try, so this code is burned: request a new one with /send_code"
    )]
    WrongAndBurned,
    #[error("the cluster's shared SMS state is unreachable ({0}); try again in a moment")]
    Unavailable(String),
}

/// What is known of one mobile; times in milliseconds on [`SmsBook::now`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MobileState {
    /// The pending code, until used, expired and seen, or replaced.
    code: Option<String>,
    expires: i64,
    wrong: u32,
    /// When the last SMS went out, while the resend limit holds.
    last_sent: Option<i64>,
    /// When the 24-hour window began, and SMS sent in it.
    day_start: i64,
    day_count: u32,
}

#[derive(Default)]
struct Inner {
    mobiles: HashMap<String, MobileState>,
    outbox: VecDeque<SmsEntry>,
}

pub struct SmsBook {
    inner: Mutex<Inner>,
    /// Bumped on every SMS so `/_dev/sms?wait=` can sleep until one arrives.
    arrivals: watch::Sender<u64>,
    ttl: Duration,
    interval: Duration,
    max_attempts: u32,
    /// Codes one mobile gets per 24 hours (`None`: no limit).
    per_day: Option<u32>,
    /// Fixed codes per mobile (`--sms-test-code`), for scripts and CI.
    test_codes: HashMap<String, String>,
    /// The tests' clock: the wall clock at start, advanced by tokio's (which
    /// they pause and advance).
    start: (Instant, i64),
    /// The cluster's bucket and NATS, when the state is shared.
    shared: OnceLock<(Bucket<MobileState>, Cluster)>,
    /// SMS held back by an injected `sms.delay`.
    held: std::sync::atomic::AtomicUsize,
}

/// SMS an injected `sms.delay` holds back at once; past it they go at once.
pub const MAX_HELD: usize = OUTBOX_CAPACITY;

impl SmsBook {
    pub fn new(ttl: Duration, interval: Duration, max_attempts: u32) -> Self {
        Self {
            inner: Mutex::default(),
            arrivals: watch::Sender::new(0),
            ttl,
            interval,
            max_attempts,
            per_day: None,
            test_codes: HashMap::new(),
            start: (Instant::now(), crate::store::now_ms()),
            shared: OnceLock::new(),
            held: Default::default(),
        }
    }

    /// Takes one of the [`MAX_HELD`] places for a delayed SMS.
    pub fn hold(&self) -> bool {
        use std::sync::atomic::Ordering;
        let ok = self.held.fetch_add(1, Ordering::AcqRel) < MAX_HELD;
        if !ok {
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
        ok
    }

    /// Gives back a place taken by [`hold`](Self::hold).
    pub fn unhold(&self) {
        self.held.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Keeps every mobile's state in `bucket` and tells other nodes of each
    /// SMS; the caller feeds their SMS to [`arrived`](Self::arrived).
    pub fn share(&self, bucket: Bucket<MobileState>, cluster: Cluster) {
        let _ = self.shared.set((bucket, cluster));
    }

    /// Milliseconds since the epoch: the wall clock, which every node of a
    /// cluster shares (and which a laptop's suspend does not stop).
    fn now(&self) -> i64 {
        if cfg!(test) {
            self.start.1 + self.start.0.elapsed().as_millis() as i64
        } else {
            crate::store::now_ms()
        }
    }

    /// Changes whenever an SMS is sent.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    /// Mobiles whose code is always `code`: `/send_code` sends it and
    /// `/login` accepts it without one.
    pub fn with_test_codes(mut self, codes: impl IntoIterator<Item = (String, String)>) -> Self {
        self.test_codes = codes.into_iter().collect();
        self
    }

    /// Limits codes per mobile to `limit` a day (`--sms-test-code` mobiles excepted).
    pub fn with_daily_limit(mut self, limit: Option<u32>) -> Self {
        self.per_day = limit;
        self
    }

    /// Whether `mobile` has a fixed `--sms-test-code`.
    pub fn has_test_code(&self, mobile: &str) -> bool {
        self.test_codes.contains_key(mobile)
    }

    /// Runs `f` on `mobile`'s state and keeps what it changed: here, or as a
    /// compare-and-set on the cluster's bucket (`f` may run more than once).
    async fn with_mobile<R>(
        &self,
        mobile: &str,
        mut f: impl FnMut(&mut MobileState) -> Result<R, SmsError>,
    ) -> Result<R, SmsError> {
        let Some((bucket, _)) = self.shared.get() else {
            let mut inner = self.inner.lock().unwrap();
            return f(inner.mobiles.entry(mobile.to_owned()).or_default());
        };
        let changed = bucket
            .change(mobile, |state: Option<MobileState>| {
                let before = state.unwrap_or_default();
                let mut after = before.clone();
                let result = f(&mut after);
                // A wrong code is counted even though the answer is an error.
                let write = if after == before {
                    Write::Keep
                } else {
                    Write::Put(after)
                };
                Ok::<_, SmsError>((write, result))
            })
            .await
            .map_err(|e| SmsError::Unavailable(e.to_string()))?;
        changed.and_then(|(result, _)| result)
    }

    /// Issues a fresh 6-digit code for `mobile` (which must already be valid)
    /// and puts it in the outbox.
    pub async fn send(&self, mobile: &str) -> Result<SmsEntry, SmsError> {
        let entry = self.issue(mobile).await?;
        self.push(entry.clone()).await;
        Ok(entry)
    }

    /// Issues a fresh code for `mobile` without delivering it: the caller
    /// [`deliver`](Self::deliver)s it (later, when a fault delays it).
    pub async fn issue(&self, mobile: &str) -> Result<SmsEntry, SmsError> {
        let code = match self.test_codes.get(mobile) {
            Some(fixed) => fixed.clone(),
            None => format!("{:06}", rand::random_range(0..1_000_000u32)),
        };
        let ttl = self.ttl.as_millis() as i64;
        let now = self.now();
        let sent_at = self
            .with_mobile(mobile, |m| {
                self.admit(m, mobile, now)?;
                m.code = Some(code.clone());
                m.expires = now + ttl;
                m.wrong = 0;
                Ok(now)
            })
            .await?;
        let entry = SmsEntry {
            mobile: mobile.to_owned(),
            code: code.clone(),
            text: format!(
                "[imctl] Your login code is {code}. It expires in {}.",
                humantime::format_duration(self.ttl)
            ),
            sent_at,
            expires_at: sent_at + ttl,
            fault: None,
        };
        Ok(entry)
    }

    /// Puts an SMS in the outbox (see [`issue`](Self::issue)).
    pub async fn deliver(&self, entry: SmsEntry) {
        self.push(entry).await;
    }

    /// Counts an SMS to `mobile` against its limits (one per `--sms-interval`,
    /// `--sms-per-mobile-per-day`), whatever code it carries.
    fn admit(&self, m: &mut MobileState, mobile: &str, now: i64) -> Result<(), SmsError> {
        let interval = self.interval.as_millis() as i64;
        if let Some(last) = m.last_sent {
            let since = now - last;
            if since < interval {
                return Err(SmsError::TooOften {
                    since: Duration::from_millis(since.max(0) as u64),
                    retry_in: Duration::from_millis((interval - since) as u64),
                });
            }
        }
        if let Some(limit) = self
            .per_day
            .filter(|_| !self.test_codes.contains_key(mobile))
        {
            if now - m.day_start >= DAY.as_millis() as i64 {
                (m.day_start, m.day_count) = (now, 0);
            }
            if m.day_count >= limit {
                return Err(SmsError::TooManyToday(limit));
            }
            m.day_count += 1;
        }
        m.last_sent = Some(now);
        Ok(())
    }

    /// Sends an SMS whose code is checked elsewhere (the account codes of
    /// `/send_reset_code` and `/send_destroy_code`), under the same
    /// per-mobile limits as login codes.
    pub async fn send_text(&self, entry: SmsEntry) -> Result<(), SmsError> {
        let now = self.now();
        self.with_mobile(&entry.mobile, |m| self.admit(m, &entry.mobile, now))
            .await?;
        self.push(entry).await;
        Ok(())
    }

    /// Puts an SMS in the dev outbox (the stand-in for the phone network),
    /// every node's in a cluster.
    async fn push(&self, entry: SmsEntry) {
        if let Some((_, cluster)) = self.shared.get() {
            let body = serde_json::to_vec(&entry).expect("serializable");
            cluster.broadcast(OUTBOX_SUBJECT.into(), body.into()).await;
        }
        self.arrived(entry);
    }

    /// Puts an SMS another node sent in this node's outbox.
    pub fn arrived(&self, entry: SmsEntry) {
        let mut inner = self.inner.lock().unwrap();
        if inner.outbox.len() == OUTBOX_CAPACITY {
            inner.outbox.pop_back();
        }
        inner.outbox.push_front(entry);
        drop(inner);
        self.arrivals.send_modify(|n| *n += 1);
    }

    /// Checks `code` for `mobile`. A right code is used up; a wrong one counts
    /// towards burning the pending code.
    pub async fn verify(&self, mobile: &str, code: &str) -> Result<(), SmsError> {
        let now = self.now();
        let fixed = self.test_codes.get(mobile).is_some_and(|c| c == code);
        self.with_mobile(mobile, |m| {
            if fixed {
                (m.code, m.last_sent) = (None, None);
                return Ok(());
            }
            let pending = m.code.as_deref().ok_or(SmsError::NoCode)?;
            if now >= m.expires {
                m.code = None;
                return Err(SmsError::Expired);
            }
            if m.wrong >= self.max_attempts {
                return Err(SmsError::Burned);
            }
            if pending != code {
                m.wrong += 1;
                let left = self.max_attempts - m.wrong;
                return Err(if left == 0 {
                    SmsError::WrongAndBurned
                } else {
                    SmsError::Wrong { left }
                });
            }
            // The resend limit guards a pending code; once it is used, the next
            // login may ask for a new one at once (scripts log in back to back).
            (m.code, m.last_sent) = (None, None);
            Ok(())
        })
        .await
    }

    /// The outbox, newest first, optionally for one mobile and newer than `since_ms`.
    pub fn outbox(&self, mobile: Option<&str>, since_ms: Option<i64>) -> Vec<SmsEntry> {
        let inner = self.inner.lock().unwrap();
        inner
            .outbox
            .iter()
            .filter(|e| mobile.is_none_or(|m| e.mobile == m))
            .filter(|e| since_ms.is_none_or(|s| e.sent_at > s))
            .cloned()
            .collect()
    }

    /// Like [`outbox`](Self::outbox), but waits up to `wait` for a matching SMS
    /// when there is none yet.
    pub async fn wait_outbox(
        &self,
        mobile: Option<&str>,
        since_ms: Option<i64>,
        wait: Duration,
    ) -> Vec<SmsEntry> {
        let deadline = Instant::now() + wait;
        let mut arrivals = self.arrivals.subscribe();
        loop {
            arrivals.borrow_and_update();
            let found = self.outbox(mobile, since_ms);
            if !found.is_empty() {
                return found;
            }
            tokio::select! {
                _ = arrivals.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return found,
            }
        }
    }

    /// Forgets expired codes and resend limits that no longer apply (the
    /// cluster's bucket ages its entries out by itself).
    pub fn sweep(&self) {
        let now = self.now();
        let interval = self.interval.as_millis() as i64;
        let day = DAY.as_millis() as i64;
        let mut inner = self.inner.lock().unwrap();
        inner.mobiles.retain(|_, m| {
            if m.code.is_some() && m.expires <= now {
                m.code = None;
            }
            if m.last_sent.is_some_and(|t| now - t >= interval) {
                m.last_sent = None;
            }
            m.code.is_some() || m.last_sent.is_some() || now - m.day_start < day
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "13800000001";

    fn book() -> SmsBook {
        SmsBook::new(Duration::from_secs(300), Duration::from_secs(60), 5)
    }

    #[test]
    fn delayed_sms_are_bounded() {
        let b = book();
        for _ in 0..MAX_HELD {
            assert!(b.hold());
        }
        assert!(!b.hold(), "past MAX_HELD an SMS is not held back");
        b.unhold();
        assert!(b.hold());
    }

    #[test]
    fn mobile_validation() {
        assert!(is_valid_mobile("13800000001"));
        assert!(is_valid_mobile("19912345678"));
        for bad in [
            "",
            "1380000000",
            "138000000012",
            "12800000001",
            "23800000001",
            "1380000000a",
            "１3800000001",
        ] {
            assert!(!is_valid_mobile(bad), "{bad:?} should be invalid");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn codes_are_six_digits_single_use_and_rate_limited() {
        let b = book();
        let sms = b.send(M).await.unwrap();
        assert_eq!(sms.code.len(), 6);
        assert!(sms.code.bytes().all(|c| c.is_ascii_digit()));
        assert!(sms.text.contains(&sms.code));
        assert!(matches!(b.send(M).await, Err(SmsError::TooOften { .. })));
        b.verify(M, &sms.code).await.unwrap();
        assert_eq!(b.verify(M, &sms.code).await, Err(SmsError::NoCode));
        // A used code does not hold back the next one.
        let next = b.send(M).await.unwrap();
        assert!(matches!(b.send(M).await, Err(SmsError::TooOften { .. })));
        tokio::time::advance(Duration::from_secs(61)).await;
        let latest = b.send(M).await.unwrap();
        // The newest code replaces the older pending one.
        if latest.code != next.code {
            assert!(b.verify(M, &next.code).await.is_err());
        }
        b.verify(M, &latest.code).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn codes_expire() {
        let b = book();
        let sms = b.send(M).await.unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(b.verify(M, &sms.code).await, Err(SmsError::Expired));
        assert_eq!(b.verify(M, &sms.code).await, Err(SmsError::NoCode));
    }

    #[tokio::test]
    async fn five_wrong_codes_burn_the_code() {
        let b = book();
        let sms = b.send(M).await.unwrap();
        let wrong = if sms.code == "000000" {
            "111111"
        } else {
            "000000"
        };
        for left in (1..5).rev() {
            assert_eq!(b.verify(M, wrong).await, Err(SmsError::Wrong { left }));
        }
        assert_eq!(b.verify(M, wrong).await, Err(SmsError::WrongAndBurned));
        assert_eq!(b.verify(M, &sms.code).await, Err(SmsError::Burned));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_outbox_wakes_on_arrival() {
        let b = std::sync::Arc::new(book());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_outbox(Some(M), None, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.send("13800000002").await.unwrap();
        b.send(M).await.unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mobile, M);
        let none = b
            .wait_outbox(Some("13800000003"), None, Duration::from_secs(5))
            .await;
        assert!(none.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_mobile_gets_so_many_codes_a_day_test_codes_excepted() {
        let b = SmsBook::new(Duration::from_secs(300), Duration::ZERO, 5)
            .with_daily_limit(Some(2))
            .with_test_codes([("13800000009".to_owned(), "1234".to_owned())]);
        b.send(M).await.unwrap();
        b.send(M).await.unwrap();
        assert_eq!(b.send(M).await.unwrap_err(), SmsError::TooManyToday(2));
        for _ in 0..5 {
            b.send("13800000009").await.unwrap();
        }
        tokio::time::advance(DAY).await;
        b.send(M).await.unwrap();
    }
}
