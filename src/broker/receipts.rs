//! The delivery-receipt watermark: per user, how far of their inbox the
//! senders have been told "delivered", so each acknowledged message is
//! receipted once, however many devices acknowledge it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per user, the inbox seq up to which delivery receipts have been sent.
#[derive(Default)]
pub struct Watermarks(Mutex<HashMap<String, i64>>);

impl Watermarks {
    /// Claims the receipts for `user`'s acknowledgement up to `up_to`:
    /// returns the seq they were sent up to so far (receipts are due for
    /// `(that, up_to]`), or `None` when `up_to` adds nothing.
    ///
    /// `stored` is the delivered position the store holds. It lags (the
    /// writer stores an acknowledgement after it was claimed here) but
    /// survives restarts, so the mark is whichever is further. The claim is
    /// made under the lock, so two devices acknowledging at once do not both
    /// report the same range; the mark never moves back.
    pub fn claim(&self, user: &str, stored: i64, up_to: i64) -> Option<i64> {
        let mut marks = self.0.lock().expect("watermarks lock");
        let mark = marks.entry(user.to_owned()).or_insert(stored);
        let before = (*mark).max(stored);
        *mark = before.max(up_to);
        (up_to > before).then_some(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_advances_the_mark() {
        let marks = Watermarks::default();
        assert_eq!(marks.claim("alice", 0, 3), Some(0));
        assert_eq!(marks.claim("alice", 0, 7), Some(3));
        assert_eq!(marks.claim("alice", 3, 8), Some(7));
    }

    #[test]
    fn an_equal_or_lower_acknowledgement_claims_nothing_and_keeps_the_mark() {
        let marks = Watermarks::default();
        assert_eq!(marks.claim("alice", 0, 5), Some(0));
        assert_eq!(
            marks.claim("alice", 0, 5),
            None,
            "a second device, same position"
        );
        assert_eq!(marks.claim("alice", 0, 2), None, "an older position");
        assert_eq!(marks.claim("alice", 0, 6), Some(5), "the mark stayed at 5");
    }

    #[test]
    fn the_stored_position_counts_when_it_is_further() {
        let marks = Watermarks::default();
        // After a restart the map is empty: the store says 4 were receipted.
        assert_eq!(marks.claim("alice", 4, 4), None);
        assert_eq!(marks.claim("alice", 4, 6), Some(4));
        // Another path stored more than this mark knew of.
        assert_eq!(marks.claim("alice", 9, 8), None);
        assert_eq!(marks.claim("alice", 9, 10), Some(9));
    }

    #[test]
    fn users_have_marks_of_their_own() {
        let marks = Watermarks::default();
        assert_eq!(marks.claim("alice", 0, 5), Some(0));
        assert_eq!(marks.claim("bob", 0, 2), Some(0));
        assert_eq!(marks.claim("bob", 0, 5), Some(2));
    }
}
