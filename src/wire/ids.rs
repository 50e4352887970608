//! Ids and names every layer agrees on: what a mobile, a user id and a msgId
//! look like, the senders no user may be, and the clock messages carry.

/// A mainland China mobile number: `1[3-9]` followed by 9 digits.
pub fn is_valid_mobile(mobile: &str) -> bool {
    let b = mobile.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// The user-id rule every way a user comes in enforces (fixtures, the
/// admin API, snapshots): ids take part in 1:1 conversation keys
/// (`"alice|bob"`), so no `|` and nothing a URL or a shell would mangle.
pub fn is_valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The actor named in notifications of changes made through the admin API.
pub const ADMIN_ACTOR: &str = "@admin";

/// The fixture user that answers messages (`broker::robot`).
pub const ROBOT: &str = "robot";

/// A msgId as clients see it: `m42`.
pub fn msg_id(id: i64) -> String {
    format!("m{id}")
}

/// Parses `"m42"` into 42.
pub fn parse_msg_id(s: &str) -> Option<i64> {
    s.strip_prefix('m')?.parse().ok().filter(|&n| n > 0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
