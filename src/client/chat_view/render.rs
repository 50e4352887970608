//! How the chat is drawn: lines with a style, message content in words,
//! and the answers to `/history`, `/convs`, `/who` and `/group info`.

use serde_json::Value;

use super::state::ChatView;
use crate::wire::ids::now_ms;
use crate::wire::ws::{
    ChatMessage, ConvType, Conversation, ConversationEntry, Friend, GroupInfo, Notify,
    PcLoginRequest, Profile, UserPresence,
};

/// How a line should look; the terminal picks colours from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A message from someone else.
    Incoming,
    /// A message of ours (this or another device).
    Outgoing,
    /// A sent message's state, typing: quiet.
    Status,
    /// Presence, friends, connection changes, command results.
    Notice,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub style: Style,
    pub text: String,
}

impl Line {
    /// A line to show; control characters other than newlines (what other
    /// users typed may hold terminal escapes) are shown escaped, not obeyed.
    pub fn new(style: Style, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let text = if text.chars().any(|c| c.is_control() && c != '\n') {
            text.chars()
                .flat_map(|c| {
                    if c.is_control() && c != '\n' {
                        c.escape_default().collect::<Vec<_>>()
                    } else {
                        vec![c]
                    }
                })
                .collect()
        } else {
            text
        };
        Self { style, text }
    }
    pub fn notice(text: impl Into<String>) -> Self {
        Self::new(Style::Notice, text)
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self::new(Style::Error, text)
    }
}

impl ChatView {
    /// The prompt: the current conversation.
    pub fn prompt(&self) -> String {
        match self.current() {
            Some(c) => format!("{}> ", self.label(c)),
            None => "> ".into(),
        }
    }

    /// `bob` or `#team`.
    pub fn label(&self, conv: &Conversation) -> String {
        match conv.kind {
            ConvType::Single => conv.target.clone(),
            ConvType::Group => format!(
                "#{}",
                one_line(
                    self.group_name(&conv.target)
                        .unwrap_or(conv.target.as_str())
                )
            ),
        }
    }

    /// A message as a line without touching unread counts (history).
    pub fn message_line(&self, conv: &Conversation, msg: &ChatMessage) -> Line {
        let style = if msg.from == self.me() {
            Style::Outgoing
        } else {
            Style::Incoming
        };
        let text = if msg.content["type"] == "notification" {
            format!("* {}", describe_notification(&msg.content))
        } else {
            format!("{}: {}", msg.from, describe(&msg.content))
        };
        Line::new(
            style,
            format!("{} [{}] {text}", clock(msg.server_time), self.label(conv)),
        )
    }

    /// `/history` from a `history` page (newest first): oldest first, with
    /// the unread marker before the last `unread` messages from others.
    pub fn render_history(
        &self,
        conv: &Conversation,
        newest_first: &[ChatMessage],
        more: bool,
        unread: u32,
    ) -> Vec<Line> {
        let messages: Vec<&ChatMessage> = newest_first.iter().rev().collect();
        if messages.is_empty() {
            return vec![Line::notice(format!(
                "no messages with {} yet",
                self.label(conv)
            ))];
        }
        let marker_at = (unread > 0).then(|| {
            // Count back `unread` messages from others.
            let mut left = unread;
            let mut at = messages.len();
            for (i, m) in messages.iter().enumerate().rev() {
                if left == 0 {
                    break;
                }
                if m.from != self.me() {
                    left -= 1;
                    at = i;
                }
            }
            at
        });
        let mut lines = Vec::with_capacity(messages.len() + 2);
        if more {
            lines.push(Line::new(
                Style::Status,
                "      (older messages: /history with a bigger count)",
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            if marker_at == Some(i) {
                lines.push(Line::notice(format!("──────── {unread} unread ────────")));
            }
            lines.push(self.message_line(conv, m));
        }
        lines
    }

    /// `/convs`.
    pub fn render_convs(&self, convs: &[ConversationEntry]) -> Vec<Line> {
        if convs.is_empty() {
            return vec![Line::notice(
                "no conversations yet: /to USER, then type a message",
            )];
        }
        convs
            .iter()
            .map(|c| {
                let conv = &c.conv;
                let unread = c.unread;
                let mark = if self.current() == Some(conv) {
                    "*"
                } else {
                    " "
                };
                let badge = if unread > 0 {
                    format!("({unread} unread)")
                } else {
                    String::new()
                };
                let muted = if c.muted { " [muted]" } else { "" };
                let m = &c.last_message;
                let last = format!(
                    "{} {}: {}",
                    clock(m.server_time),
                    m.from,
                    preview(&m.content)
                );
                Line::notice(format!(
                    "{mark} {:<16} {badge:<12}{muted} {last}",
                    self.label(conv)
                ))
            })
            .collect()
    }
}

/// A `presence` push: someone came online or went offline.
pub(super) fn presence(user: &str, online: bool, on: &[i32]) -> Line {
    let text = if online {
        format!("{user} is online ({})", platforms(on))
    } else {
        format!("{user} went offline")
    };
    Line::notice(format!("{} {text}", clock(now_ms())))
}

/// A `notify` push: a friend request or its answer.
pub(super) fn notify(notify: &Notify) -> Line {
    let text = match notify {
        Notify::FriendRequest { from, remark, .. } => {
            let remark = Some(remark)
                .filter(|r| !r.is_empty())
                .map(|r| format!(" (“{r}”)"))
                .unwrap_or_default();
            format!("{from} wants to be your friend{remark}: /friend accept {from}")
        }
        Notify::FriendAccepted { from } => format!("{from} accepted your friend request"),
        Notify::FriendRejected { from } => format!("{from} declined your friend request"),
    };
    Line::notice(format!("{} {text}", clock(now_ms())))
}

/// A web page asks to log in as us.
pub(super) fn web_login_request(req: &PcLoginRequest) -> Line {
    Line::notice(format!(
        "{} Web login request from {} ({}) — /approve or /deny",
        clock(now_ms()),
        one_line(&req.device_name),
        platform_name(req.platform.into())
    ))
}

/// A `profile` push: someone changed their display name.
pub(super) fn profile(user: &Profile) -> Line {
    Line::notice(format!(
        "{} is now called {}",
        one_line(&user.user_id),
        one_line(&user.display_name)
    ))
}

/// An `error` frame that answers no request of ours.
pub fn server_error(code: i32, message: &str) -> Line {
    Line::error(format!("server: {message} (code {code})"))
}

/// `/who`: friends with presence.
pub fn who(friends: &[Friend], presence: &[UserPresence]) -> Vec<Line> {
    if friends.is_empty() {
        return vec![Line::notice(
            "no friends yet: /friend add USER (presence is shared between friends)",
        )];
    }
    let platforms_of = |user: &str| {
        presence
            .iter()
            .find(|p| p.user_id == user)
            .map(|p| p.platforms.as_slice())
    };
    friends
        .iter()
        .map(|f| {
            let user = &f.profile.user_id;
            let name = one_line(&f.profile.display_name);
            let state = match platforms_of(user) {
                Some(p) if !p.is_empty() => format!("online ({})", platforms(p)),
                _ if f.online => "online".into(),
                _ => "offline".into(),
            };
            Line::notice(format!("  {user:<12} {name:<20} {state}"))
        })
        .collect()
}

/// `/group info`.
pub fn group_info(g: &GroupInfo) -> Vec<Line> {
    let mut lines = vec![Line::notice(format!(
        "#{} ({}), owner {}",
        one_line(&g.name),
        g.id,
        g.owner
    ))];
    for m in &g.members {
        lines.push(Line::notice(format!("  {:<12} {}", m.user_id, m.role)));
    }
    lines
}

/// Local wall-clock time of a server timestamp, `HH:MM`.
pub fn clock(ms: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%H:%M").to_string())
        .unwrap_or_else(|| "--:--".into())
}

/// A platform number as a name (Wildfire's numbering).
fn platform_name(p: i64) -> String {
    match p {
        1 => "iOS",
        2 => "Android",
        3 => "Windows",
        4 => "macOS",
        5 => "Web",
        6 => "WeChat",
        7 => "Linux",
        8 => "iPad",
        9 => "Android pad",
        _ => return format!("platform {p}"),
    }
    .to_owned()
}

/// Platform numbers as names.
fn platforms(list: &[i32]) -> String {
    let names: Vec<String> = list.iter().map(|p| platform_name((*p).into())).collect();
    if names.is_empty() {
        "connected".into()
    } else {
        names.join(", ")
    }
}

/// Most characters of one message shown; the rest is counted, not printed.
const MAX_SHOWN: usize = 2000;
/// Most characters of a custom message's data shown.
const MAX_CUSTOM_SHOWN: usize = 200;

/// A field shown inside a line: newlines escaped too, so a name cannot
/// start a row of its own (`Line::new` escapes the other control characters).
pub fn one_line(s: &str) -> String {
    s.replace('\n', "\\n").replace('\r', "\\r")
}

/// `s` with every control character escaped (newlines too): a name printed
/// by the CLI cannot start a line of its own or move the cursor.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// At most `max` characters of `s`, saying how many were left out.
fn shorten(s: String, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s;
    }
    let kept: String = s.chars().take(max).collect();
    format!("{kept}… ({} more characters)", n - max)
}

/// Message content, readable in one line: text as it is (continuation lines
/// indented), other types in brackets. Whatever a stored message holds
/// (an unknown type, no object at all, huge strings) gives a line.
pub fn describe(content: &Value) -> String {
    shorten(describe_all(content), MAX_SHOWN)
}

fn describe_all(content: &Value) -> String {
    let s = |k: &str| one_line(content[k].as_str().unwrap_or(""));
    let n = |k: &str| content[k].to_string();
    match content["type"].as_str().unwrap_or_default() {
        // A text's own newlines continue it, indented: never a row of its own.
        "text" => content["text"]
            .as_str()
            .unwrap_or("")
            .replace('\r', "\\r")
            .replace('\n', "\n      "),
        "image" => format!("[image {}x{} {}]", n("w"), n("h"), s("url")),
        "file" => format!(
            "[file {} {} {}]",
            s("name"),
            size(&content["size"]),
            s("url")
        ),
        "video" => format!(
            "[video {}x{} {}s {}]",
            n("w"),
            n("h"),
            content["duration"].as_f64().unwrap_or(0.0),
            s("url")
        ),
        "location" => format!(
            "[location {} {},{}]",
            s("title"),
            content["lat"].as_f64().unwrap_or(0.0),
            content["lng"].as_f64().unwrap_or(0.0)
        ),
        "sticker" => format!("[sticker {}]", s("url")),
        "custom" => format!(
            "[custom {}]",
            shorten(content["data"].to_string(), MAX_CUSTOM_SHOWN)
        ),
        "notification" => describe_notification(content),
        other => format!("[{}]", shorten(one_line(other), MAX_CUSTOM_SHOWN)),
    }
}

/// At most 40 characters of a message, on one line.
pub(super) fn preview(content: &Value) -> String {
    let text = describe(content).replace("\n      ", " ");
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(39).collect::<String>())
    } else {
        text
    }
}

fn size(v: &Value) -> String {
    let bytes = v.as_u64().unwrap_or(0);
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// A group notification in words.
fn describe_notification(c: &Value) -> String {
    let actor = one_line(c["actor"].as_str().unwrap_or("someone"));
    let members = c["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .map(one_line)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let name = || one_line(c["name"].as_str().unwrap_or(""));
    match c["kind"].as_str().unwrap_or_default() {
        "created" => format!("{actor} created the group {} with {members}", name()),
        "member_added" => format!("{actor} added {members}"),
        "member_removed" => format!("{actor} removed {members}"),
        "left" => format!("{actor} left"),
        "dissolved" => format!("{actor} dissolved the group"),
        "renamed" => format!("{actor} renamed the group to {}", name()),
        "admin_added" => format!("{actor} made {members} an admin"),
        "admin_removed" => format!("{actor} dismissed {members} as admin"),
        other => format!("{actor}: {}", one_line(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::chat_view::single;

    #[test]
    fn non_text_content_is_readable() {
        assert_eq!(
            describe(
                &json!({"type": "image", "url": "https://x/a.png", "w": 640, "h": 480, "size": 1})
            ),
            "[image 640x480 https://x/a.png]"
        );
        assert_eq!(
            describe(
                &json!({"type": "location", "title": "Hangzhou", "lat": 30.18, "lng": 120.19})
            ),
            "[location Hangzhou 30.18,120.19]"
        );
        assert_eq!(
            describe(&json!({"type": "file", "url": "u", "name": "a.pdf", "size": 2048})),
            "[file a.pdf 2.0 KiB u]"
        );
        assert_eq!(
            describe(
                &json!({"type": "notification", "kind": "member_added", "actor": "alice", "members": ["carol", "dave"]})
            ),
            "alice added carol, dave"
        );
        assert_eq!(describe(&json!({"type": "poll"})), "[poll]");
        assert_eq!(
            describe(&json!({"type": "text", "text": "a\nb"})),
            "a\n      b"
        );
    }

    #[test]
    fn terminal_escapes_from_peers_are_not_obeyed() {
        let line = Line::new(Style::Incoming, "bob: \x1b[2Jgotcha\x07\nsecond");
        assert_eq!(line.text, "bob: \\u{1b}[2Jgotcha\\u{7}\nsecond");
    }

    #[test]
    fn history_puts_the_unread_marker_before_unread_messages() {
        let s = ChatView::new("alice");
        let m = |id: i64, from: &str| json!({"msgId": format!("m{id}"), "conv": {"type": "single", "target": if from == "alice" {"bob"} else {"alice"}}, "from": from, "content": {"type": "text", "text": format!("t{id}")}, "serverTime": 0});
        // Newest first, as the server answers.
        let messages: Vec<ChatMessage> = serde_json::from_value(json!([
            m(4, "bob"),
            m(3, "bob"),
            m(2, "alice"),
            m(1, "bob")
        ]))
        .unwrap();
        let lines = s.render_history(&single("bob"), &messages, false, 2);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts.len(), 5, "{texts:?}");
        assert!(texts[0].ends_with("bob: t1"));
        assert!(texts[1].ends_with("alice: t2"));
        assert!(texts[2].contains("2 unread"));
        assert!(texts[3].ends_with("bob: t3"));
        assert!(texts[4].ends_with("bob: t4"));
    }

    #[test]
    fn convs_and_who_render() {
        let mut s = ChatView::new("alice");
        s.switch(single("bob"));
        let convs: Vec<ConversationEntry> = serde_json::from_value(json!([
            {"conv": {"type": "single", "target": "bob"}, "lastMessage": {"msgId": "m1", "conv": {"type": "single", "target": "alice"}, "from": "bob", "content": {"type": "text", "text": "yo"}, "serverTime": 0}, "unread": 2, "muted": false},
            {"conv": {"type": "single", "target": "carol"}, "lastMessage": {"msgId": "m0", "conv": {"type": "single", "target": "carol"}, "from": "alice", "content": {"type": "text", "text": "hi"}, "serverTime": 0}, "unread": 0, "muted": true}
        ]))
        .unwrap();
        let lines = s.render_convs(&convs);
        assert!(lines[0].text.starts_with("* bob"), "{lines:?}");
        assert!(lines[0].text.contains("(2 unread)") && lines[0].text.ends_with("bob: yo"));
        assert!(lines[1].text.contains("[muted]"));
        let who = who(
            &serde_json::from_value::<Vec<Friend>>(json!([{"userId": "bob", "displayName": "Bob Chen", "online": true}, {"userId": "carol", "displayName": "Carol", "online": false}])).unwrap(),
            &serde_json::from_value::<Vec<UserPresence>>(json!([{"userId": "bob", "online": true, "platforms": [2, 7]}])).unwrap(),
        );
        assert!(who[0].text.contains("online (Android, Linux)"), "{who:?}");
        assert!(who[1].text.ends_with("offline"));
    }
}
