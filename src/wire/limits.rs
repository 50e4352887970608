//! Bounds on what a client may make the servers store or log, and the
//! checks for them. One place, so the app-server, the broker, the admin API
//! and the snapshot importer agree; ARCHITECTURE.md ("Limits") lists them.

/// `clientId` (login, QR sessions, `connect`): an app install's id.
pub const MAX_CLIENT_ID: usize = 128;
/// `device_name` of a QR session.
pub const MAX_DEVICE_NAME: usize = 128;
/// A user's or group's display name.
pub const MAX_DISPLAY_NAME: usize = 64;
/// A group name.
pub const MAX_GROUP_NAME: usize = 64;
/// A friend remark or request message.
pub const MAX_REMARK: usize = 200;
/// A URL stored in a profile or message (portrait, media).
pub const MAX_URL: usize = 2048;
/// `clientMsgId` of a send.
pub const MAX_CLIENT_MSG_ID: usize = 128;
/// Nesting of JSON arrays and objects in a message's content.
pub const MAX_CONTENT_DEPTH: usize = 32;
/// Valid platforms, as Wildfire numbers them (1 iOS … 9 Android pad).
pub const PLATFORMS: std::ops::RangeInclusive<i32> = 1..=9;
/// A request body of the HTTP JSON APIs (uploads and admin messages excepted).
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// An SMS code or the super code as a client sends it.
pub const MAX_SMS_CODE: usize = 16;
/// A file name in `file` content.
pub const MAX_FILE_NAME: usize = 255;
/// The title of `location` content.
pub const MAX_LOCATION_TITLE: usize = 256;
/// Bytes of messages in one `sync`, `history` or `conversations` page: a
/// page stops here (with `more: true`) even below its `limit`, but always
/// holds at least one message.
pub const PAGE_BYTES: usize = 1024 * 1024;
/// Characters of a password (argon2 hashes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 128;
/// Characters of a group announcement.
pub const MAX_ANNOUNCEMENT: usize = 2000;
/// Favorites one user may keep (`/fav/add` answers 15 beyond).
pub const MAX_FAVORITES: i64 = 1000;
/// Favorites in one `/fav/list` page, whatever `count` asks for.
pub const MAX_FAVORITES_PAGE: i64 = 100;
/// Characters of a favorite's short fields (origin, sender, title, conversation target).
pub const MAX_FAVORITE_FIELD: usize = 256;
/// Bytes of a favorite's `data` (the kept message's own JSON or text).
pub const MAX_FAVORITE_DATA: usize = 16 * 1024;

/// Characters of a conversation target (a user or group id; imported ids
/// may be longer than the admin API's 64).
pub const MAX_TARGET: usize = 128;

/// Why a field was refused, as a sentence for the client.
pub type Refused = String;

/// A required identifier-like field: 1..=`max` characters, no control
/// characters (they would forge log lines and CLI table rows).
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), Refused> {
    if value.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    check_optional_text(field, value, max)
}

/// Like [`check_text`] but an empty value is fine.
pub fn check_optional_text(field: &str, value: &str, max: usize) -> Result<(), Refused> {
    if value.chars().count() > max {
        return Err(format!("{field} has at most {max} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

/// A platform number as Wildfire's clients send it.
pub fn check_platform(platform: i32) -> Result<(), Refused> {
    if PLATFORMS.contains(&platform) {
        Ok(())
    } else {
        Err(format!(
            "platform {platform} is unknown: use 1 iOS, 2 Android, 3 Windows, 4 macOS, 5 Web, 6 mini-program, 7 Linux, 8 iPad, 9 Android pad"
        ))
    }
}

/// A URL in content or a profile: `http(s)://…` or relative (`/media/…`),
/// at most [`MAX_URL`] bytes, no control characters or whitespace.
pub fn check_url(field: &str, url: &str) -> Result<(), Refused> {
    if url.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if url.len() > MAX_URL {
        return Err(format!("{field} has at most {MAX_URL} bytes"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{field} must not contain spaces or control characters"
        ));
    }
    let lower = url.to_ascii_lowercase();
    let scheme = lower.split_once(':').map(|(s, _)| s);
    // "//host" and "/\host" are other hosts to a browser, not paths.
    let relative = url.starts_with('/') && !url.starts_with("//") && !url.starts_with("/\\");
    match scheme {
        Some("http" | "https") if lower.starts_with("http://") || lower.starts_with("https://") => {
            Ok(())
        }
        // "a:b" without "/" before the colon is a scheme; "/x?y=a:b" is not.
        Some(s) if !s.contains('/') && !relative => Err(format!(
            "{field} must be an http(s) URL or a relative path, not {s}:"
        )),
        _ if relative => Ok(()),
        _ => Err(format!(
            "{field} must be an http(s) URL or a relative path starting with /"
        )),
    }
}

/// The nesting depth of a JSON value (a scalar is 0).
pub fn depth(value: &serde_json::Value) -> usize {
    // Iterative: a hostile value must not overflow the stack here either.
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        max = max.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    max
}

/// Refuses content nested deeper than [`MAX_CONTENT_DEPTH`].
pub fn check_depth(field: &str, value: &serde_json::Value) -> Result<(), Refused> {
    if depth(value) > MAX_CONTENT_DEPTH {
        return Err(format!(
            "{field} is nested more than {MAX_CONTENT_DEPTH} levels deep"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_refuses_control_characters_and_long_values() {
        assert!(check_text("clientId", "web-1", MAX_CLIENT_ID).is_ok());
        assert!(check_text("clientId", " ", MAX_CLIENT_ID).is_err());
        assert!(check_text("clientId", "a\u{1b}[31mb", MAX_CLIENT_ID).is_err());
        assert!(check_text("clientId", "a\nb", MAX_CLIENT_ID).is_err());
        assert!(check_text("clientId", &"x".repeat(MAX_CLIENT_ID), MAX_CLIENT_ID).is_ok());
        assert!(check_text("clientId", &"x".repeat(MAX_CLIENT_ID + 1), MAX_CLIENT_ID).is_err());
        assert!(check_optional_text("remark", "", MAX_REMARK).is_ok());
    }

    #[test]
    fn platforms_are_wildfires() {
        assert!(check_platform(1).is_ok() && check_platform(9).is_ok());
        for p in [-1, 0, 10, 1000] {
            assert!(check_platform(p).is_err(), "{p}");
        }
    }

    #[test]
    fn urls_are_http_or_relative() {
        for ok in [
            "http://x/a.png",
            "HTTPS://x/a",
            "/media/abc",
            "/media/a?b=c:d",
        ] {
            assert!(check_url("url", ok).is_ok(), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "//evil/x",
            "/\\evil/x",
            "media/abc",
            "http://x/a b",
            "",
        ] {
            assert!(check_url("url", bad).is_err(), "{bad}");
        }
        assert!(check_url("url", &format!("/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn depth_counts_levels() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({"a": [1]})), 2);
        let mut v = json!(0);
        for _ in 0..(MAX_CONTENT_DEPTH + 1) {
            v = json!([v]);
        }
        assert!(check_depth("data", &v).is_err());
        let mut v = json!(0);
        for _ in 0..MAX_CONTENT_DEPTH {
            v = json!([v]);
        }
        assert!(check_depth("data", &v).is_ok());
    }
}
