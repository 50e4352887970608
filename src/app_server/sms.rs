//! SMS codes: issuing, resend limits, verification with a burn-after-N rule,
//! and the dev outbox that stands in for the phone network.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::store::now_ms;
use crate::wire::http::SmsEntry;

/// The window of `--sms-per-mobile-per-day`.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// How many SMS the dev outbox remembers.
const OUTBOX_CAPACITY: usize = 1000;

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
}

#[derive(Debug)]
struct Pending {
    code: String,
    expires: Instant,
    wrong: u32,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, Pending>,
    last_sent: HashMap<String, Instant>,
    /// Per mobile: when its 24-hour window began and codes sent in it.
    today: HashMap<String, (Instant, u32)>,
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
}

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

    /// Issues a fresh 6-digit code for `mobile` (which must already be valid).
    pub fn send(&self, mobile: &str) -> Result<SmsEntry, SmsError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        self.admit(&mut inner, mobile, now)?;
        let code = match self.test_codes.get(mobile) {
            Some(fixed) => fixed.clone(),
            None => format!("{:06}", rand::random_range(0..1_000_000u32)),
        };
        let sent_at = now_ms();
        let entry = SmsEntry {
            mobile: mobile.to_owned(),
            code: code.clone(),
            text: format!(
                "[imctl] Your login code is {code}. It expires in {}.",
                humantime::format_duration(self.ttl)
            ),
            sent_at,
            expires_at: sent_at + self.ttl.as_millis() as i64,
        };
        inner.pending.insert(
            mobile.to_owned(),
            Pending {
                code,
                expires: now + self.ttl,
                wrong: 0,
            },
        );
        drop(inner);
        self.push(entry.clone());
        Ok(entry)
    }

    /// Counts an SMS to `mobile` against its limits (one per `--sms-interval`,
    /// `--sms-per-mobile-per-day`), whatever code it carries.
    fn admit(&self, inner: &mut Inner, mobile: &str, now: Instant) -> Result<(), SmsError> {
        if let Some(&last) = inner.last_sent.get(mobile) {
            let since = now - last;
            if since < self.interval {
                return Err(SmsError::TooOften {
                    since,
                    retry_in: self.interval - since,
                });
            }
        }
        if let Some(limit) = self
            .per_day
            .filter(|_| !self.test_codes.contains_key(mobile))
        {
            let day = inner.today.entry(mobile.to_owned()).or_insert((now, 0));
            if now - day.0 >= DAY {
                *day = (now, 0);
            }
            if day.1 >= limit {
                return Err(SmsError::TooManyToday(limit));
            }
            day.1 += 1;
        }
        inner.last_sent.insert(mobile.to_owned(), now);
        Ok(())
    }

    /// Sends an SMS whose code is checked elsewhere (the account codes of
    /// `/send_reset_code` and `/send_destroy_code`), under the same
    /// per-mobile limits as login codes.
    pub fn send_text(&self, entry: SmsEntry) -> Result<(), SmsError> {
        self.admit(
            &mut self.inner.lock().unwrap(),
            &entry.mobile,
            Instant::now(),
        )?;
        self.push(entry);
        Ok(())
    }

    /// Puts an SMS in the dev outbox (the stand-in for the phone network).
    fn push(&self, entry: SmsEntry) {
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
    pub fn verify(&self, mobile: &str, code: &str) -> Result<(), SmsError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        if self.test_codes.get(mobile).is_some_and(|c| c == code) {
            inner.pending.remove(mobile);
            inner.last_sent.remove(mobile);
            return Ok(());
        }
        let pending = inner.pending.get_mut(mobile).ok_or(SmsError::NoCode)?;
        if now >= pending.expires {
            inner.pending.remove(mobile);
            return Err(SmsError::Expired);
        }
        if pending.wrong >= self.max_attempts {
            return Err(SmsError::Burned);
        }
        if pending.code != code {
            pending.wrong += 1;
            let left = self.max_attempts - pending.wrong;
            return Err(if left == 0 {
                SmsError::WrongAndBurned
            } else {
                SmsError::Wrong { left }
            });
        }
        inner.pending.remove(mobile);
        // The resend limit guards a pending code; once it is used, the next
        // login may ask for a new one at once (scripts log in back to back).
        inner.last_sent.remove(mobile);
        Ok(())
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

    /// Forgets expired codes and resend limits that no longer apply.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        inner.pending.retain(|_, p| p.expires > now);
        let interval = self.interval;
        inner.last_sent.retain(|_, &mut t| now - t < interval);
        inner.today.retain(|_, &mut (since, _)| now - since < DAY);
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
        let sms = b.send(M).unwrap();
        assert_eq!(sms.code.len(), 6);
        assert!(sms.code.bytes().all(|c| c.is_ascii_digit()));
        assert!(sms.text.contains(&sms.code));
        assert!(matches!(b.send(M), Err(SmsError::TooOften { .. })));
        b.verify(M, &sms.code).unwrap();
        assert_eq!(b.verify(M, &sms.code), Err(SmsError::NoCode));
        // A used code does not hold back the next one.
        let next = b.send(M).unwrap();
        assert!(matches!(b.send(M), Err(SmsError::TooOften { .. })));
        tokio::time::advance(Duration::from_secs(61)).await;
        let latest = b.send(M).unwrap();
        // The newest code replaces the older pending one.
        if latest.code != next.code {
            assert!(b.verify(M, &next.code).is_err());
        }
        b.verify(M, &latest.code).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn codes_expire() {
        let b = book();
        let sms = b.send(M).unwrap();
        tokio::time::advance(Duration::from_secs(301)).await;
        assert_eq!(b.verify(M, &sms.code), Err(SmsError::Expired));
        assert_eq!(b.verify(M, &sms.code), Err(SmsError::NoCode));
    }

    #[test]
    fn five_wrong_codes_burn_the_code() {
        let b = book();
        let sms = b.send(M).unwrap();
        let wrong = if sms.code == "000000" {
            "111111"
        } else {
            "000000"
        };
        for left in (1..5).rev() {
            assert_eq!(b.verify(M, wrong), Err(SmsError::Wrong { left }));
        }
        assert_eq!(b.verify(M, wrong), Err(SmsError::WrongAndBurned));
        assert_eq!(b.verify(M, &sms.code), Err(SmsError::Burned));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_outbox_wakes_on_arrival() {
        let b = std::sync::Arc::new(book());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait_outbox(Some(M), None, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.send("13800000002").unwrap();
        b.send(M).unwrap();
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
        b.send(M).unwrap();
        b.send(M).unwrap();
        assert_eq!(b.send(M).unwrap_err(), SmsError::TooManyToday(2));
        for _ in 0..5 {
            b.send("13800000009").unwrap();
        }
        tokio::time::advance(DAY).await;
        b.send(M).unwrap();
    }
}
