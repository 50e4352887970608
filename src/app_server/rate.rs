//! Fixed-window rate limits keyed by client address (how often one client
//! may ask for SMS codes and log in) or by account (password and account
//! deletion calls).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most `limit` events per key per `period`.
pub struct Window<K = IpAddr> {
    limit: u32,
    period: Duration,
    counts: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Hash + Eq> Window<K> {
    pub fn new(limit: u32, period: Duration) -> Self {
        Self {
            limit,
            period,
            counts: Mutex::default(),
        }
    }

    /// Counts one event of `key`; `Err(retry_in)` when its window is full.
    pub fn hit(&self, key: K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        let window = counts.entry(key).or_insert((now, 0));
        if now - window.0 >= self.period {
            *window = (now, 0);
        }
        if window.1 >= self.limit {
            return Err(self.period - (now - window.0));
        }
        window.1 += 1;
        Ok(())
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Forgets windows that have ended, so the map holds recent clients only.
    pub fn sweep(&self) {
        let now = Instant::now();
        let period = self.period;
        self.counts
            .lock()
            .unwrap()
            .retain(|_, &mut (since, _)| now - since < period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_window_refuses_until_it_ends() {
        let w = Window::new(2, Duration::from_secs(60));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 1].into();
        assert!(w.hit(a).is_ok() && w.hit(a).is_ok());
        assert_eq!(w.hit(a), Err(Duration::from_secs(60)));
        assert!(w.hit(b).is_ok());
        tokio::time::advance(Duration::from_secs(60)).await;
        w.sweep();
        assert!(w.hit(a).is_ok());
    }
}
