//! A counter that wakes watchers when something changed (a connection came or
//! went, a message was stored, a QR session moved), for live dev views.

use tokio::sync::watch;

pub struct Activity(watch::Sender<u64>);

impl Default for Activity {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Activity {
    pub fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}
