//! What the chat knows: the current conversation, groups, user ids seen,
//! the messages this chat sent and their states, unread counts and the
//! pending web login request. Events from the server change it and come
//! back as lines to show.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::input::Target;
use super::render::{self, Line, Style, clock, describe, preview};
use crate::wire::ids::now_ms;
use crate::wire::ws::{
    Ack, ChatMessage, Content, ConvType, Conversation, GroupSummary, Notify, Push, ReceiptKind,
};

/// Where a sent message has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SendState {
    Sending,
    Sent,
    Delivered,
    Read,
}

/// A message this chat sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub conv: Conversation,
    pub content: Content,
    pub msg_id: Option<i64>,
    pub state: SendState,
    delivered_to: BTreeSet<String>,
    read_by: BTreeSet<String>,
}

/// How many sent messages are remembered for receipts.
const OUTGOING_KEPT: usize = 1000;

/// What the terminal chat knows; `render` draws it, `cmd::client` feeds it.
pub struct ChatView {
    me: String,
    current: Option<Conversation>,
    /// Group id → name.
    groups: BTreeMap<String, String>,
    /// User ids seen anywhere, for completion.
    users: BTreeSet<String>,
    outgoing: Vec<Outgoing>,
    unread: HashMap<Conversation, u32>,
    /// When a typing notice was last shown, per conversation and user.
    typing_shown: HashMap<(Conversation, String), i64>,
    /// The QR session token of the latest web login request, until answered.
    web_login: Option<String>,
}

/// Typing pushes come every ~2 s while someone types; show one per this long.
const TYPING_QUIET_MS: i64 = 10_000;

impl ChatView {
    pub fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            current: None,
            groups: BTreeMap::new(),
            users: BTreeSet::new(),
            outgoing: Vec::new(),
            unread: HashMap::new(),
            typing_shown: HashMap::new(),
            web_login: None,
        }
    }

    /// Takes the pending web login request's token, for `/approve` or `/deny`.
    pub fn take_web_login(&mut self) -> Result<String, String> {
        self.web_login.take().ok_or_else(|| {
            "no web login request to answer: one shows up when a web page asks to log in as you"
                .into()
        })
    }

    /// Our user id.
    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn current(&self) -> Option<&Conversation> {
        self.current.as_ref()
    }

    /// A group's name, if we know the group.
    pub fn group_name(&self, id: &str) -> Option<&str> {
        self.groups.get(id).map(String::as_str)
    }

    /// Completion candidates: user ids and `#group` names.
    pub fn completion_words(&self) -> Vec<String> {
        let mut words: Vec<String> = self.users.iter().cloned().collect();
        words.extend(self.groups.values().map(|n| format!("#{n}")));
        words
    }

    pub fn add_users<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, users: I) {
        self.users.extend(users.into_iter().map(Into::into));
    }

    /// Takes a `group.list` reply's groups.
    pub fn set_groups(&mut self, groups: &[GroupSummary]) {
        for g in groups {
            self.groups.insert(g.id.clone(), g.name.clone());
        }
    }

    /// A group this chat just created.
    pub fn add_group(&mut self, id: &str, name: &str) {
        self.groups.insert(id.to_owned(), name.to_owned());
    }

    pub fn knows_group(&self, id: &str) -> bool {
        self.groups.contains_key(id)
    }

    /// The conversation a target names; groups by id or by name (any case).
    pub fn resolve(&self, target: &Target) -> Result<Conversation, String> {
        match target {
            Target::User(u) => Ok(Conversation {
                kind: ConvType::Single,
                target: u.clone(),
            }),
            Target::Group(g) => {
                let id = if self.groups.contains_key(g) {
                    Some(g.clone())
                } else {
                    let named: Vec<&String> = self
                        .groups
                        .iter()
                        .filter(|(_, name)| name.eq_ignore_ascii_case(g))
                        .map(|(id, _)| id)
                        .collect();
                    if named.len() > 1 {
                        let ids: Vec<String> = named.iter().map(|id| format!("#{id}")).collect();
                        return Err(format!(
                            "several of your groups are called {g}; use the id: {}",
                            ids.join(", ")
                        ));
                    }
                    named.first().map(|id| (*id).clone())
                };
                id.map(|target| Conversation {
                    kind: ConvType::Group,
                    target,
                })
                .ok_or_else(|| {
                    let names: Vec<String> =
                        self.groups.values().map(|n| format!("#{n}")).collect();
                    if names.is_empty() {
                        format!(
                            "you are in no group #{g}; create one with /group create NAME USER..."
                        )
                    } else {
                        format!(
                            "you are in no group #{g}; your groups: {}",
                            names.join(", ")
                        )
                    }
                })
            }
        }
    }

    /// Makes `conv` current and forgets its unread count, returning it.
    pub fn switch(&mut self, conv: Conversation) -> u32 {
        let unread = self.unread.remove(&conv).unwrap_or(0);
        if let ConvType::Single = conv.kind {
            self.users.insert(conv.target.clone());
        }
        self.current = Some(conv);
        unread
    }

    /// The current conversation, or an error telling how to pick one.
    pub fn require_current(&self) -> Result<Conversation, String> {
        self.current
            .clone()
            .ok_or_else(|| "no conversation yet: pick one with /to USER or /to #GROUP".into())
    }

    /// The current conversation if it is a group.
    pub fn require_group(&self) -> Result<Conversation, String> {
        match self.require_current()? {
            c if c.kind == ConvType::Group => Ok(c),
            _ => Err("this is not a group: switch to one with /to #GROUP".into()),
        }
    }

    /// Forgets a group we left; if it was current, there is no current conversation.
    pub fn left_group(&mut self, id: &str) {
        self.groups.remove(id);
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.kind == ConvType::Group && c.target == id)
        {
            self.current = None;
        }
    }

    pub fn clear_unread(&mut self, conv: &Conversation) {
        self.unread.remove(conv);
    }

    /// Records a message about to be sent and the line that shows it.
    pub fn compose(&mut self, conv: Conversation, content: Content) -> (Outgoing, Line) {
        let out = Outgoing {
            client_msg_id: new_client_msg_id(),
            conv,
            content,
            msg_id: None,
            state: SendState::Sending,
            delivered_to: BTreeSet::new(),
            read_by: BTreeSet::new(),
        };
        let line = Line::new(
            Style::Outgoing,
            format!(
                "{} [{}] {}: {}  ⋯ sending",
                clock(now_ms()),
                self.label(&out.conv),
                self.me,
                describe(&json_of(&out.content))
            ),
        );
        if self.outgoing.len() >= OUTGOING_KEPT {
            self.outgoing.remove(0);
        }
        self.outgoing.push(out.clone());
        (out, line)
    }

    /// The server stored a message of ours.
    pub fn on_ack(&mut self, client_msg_id: &str, ack: &Ack) -> Line {
        let id = crate::wire::ids::parse_msg_id(&ack.msg_id);
        let label = match self
            .outgoing
            .iter_mut()
            .find(|o| o.client_msg_id == client_msg_id)
        {
            Some(o) => {
                o.msg_id = id;
                o.state = o.state.max(SendState::Sent);
                let o = o.clone();
                format!(
                    "[{}] “{}”",
                    self.label(&o.conv),
                    preview(&json_of(&o.content))
                )
            }
            None => String::new(),
        };
        let again = if ack.duplicate {
            ", already stored"
        } else {
            ""
        };
        Line::new(
            Style::Status,
            format!(
                "{} {label} ✓ sent ({}{again})",
                clock(ack.server_time),
                ack.msg_id
            ),
        )
    }

    /// A queued message (the connection is down).
    pub fn on_queued(&self, out: &Outgoing) -> Line {
        Line::new(
            Style::Status,
            format!(
                "      [{}] “{}” queued: sent when the connection is back",
                self.label(&out.conv),
                preview(&json_of(&out.content))
            ),
        )
    }

    /// The server refused a message; it is forgotten.
    pub fn on_refused(&mut self, client_msg_id: &str, why: &str) -> Line {
        self.forget(client_msg_id);
        Line::error(format!("not sent: {why}"))
    }

    pub fn forget(&mut self, client_msg_id: &str) {
        self.outgoing.retain(|o| o.client_msg_id != client_msg_id);
    }

    /// Renders a server push into lines (none for pushes not worth showing).
    pub fn on_push(&mut self, push: &Push) -> Vec<Line> {
        match push {
            Push::Msg { message, .. } => self.on_message(message).into_iter().collect(),
            Push::Receipt {
                kind,
                conv,
                by,
                up_to,
            } => self
                .on_receipt(*kind, conv, by, up_to)
                .into_iter()
                .collect(),
            Push::Typing { conv, from } => {
                self.on_typing(conv, from, now_ms()).into_iter().collect()
            }
            Push::Presence {
                user_id,
                online,
                platforms,
            } => {
                self.users.insert(user_id.clone());
                vec![render::presence(user_id, *online, platforms)]
            }
            Push::Notify(notify) => {
                let (Notify::FriendRequest { from, .. }
                | Notify::FriendAccepted { from }
                | Notify::FriendRejected { from }) = notify;
                self.users.insert(from.clone());
                vec![render::notify(notify)]
            }
            Push::PcLoginRequest(req) => {
                let line = render::web_login_request(req);
                self.web_login = Some(req.token.clone());
                vec![line]
            }
            Push::Profile { user } => vec![render::profile(user)],
            // Shown so nobody mistakes it for a bug; never acted on.
            Push::Fault { kind, detail, .. } => {
                vec![Line::notice(format!("⚡ injected: {kind}: {detail}"))]
            }
        }
    }

    /// The conversation a message belongs to, as this user sees it: for a
    /// 1:1 message from someone else, that someone.
    pub fn conv_of(&self, msg: &ChatMessage) -> Conversation {
        match msg.conv.kind {
            ConvType::Single if msg.from != self.me => Conversation {
                kind: ConvType::Single,
                target: msg.from.clone(),
            },
            _ => msg.conv.clone(),
        }
    }

    /// A stored message (pushed, synced or from history) as a line; counts
    /// it unread when it is someone else's and not in the current conversation.
    pub fn on_message(&mut self, msg: &ChatMessage) -> Option<Line> {
        // Our own sends from this chat show through their acks.
        if msg.from == self.me
            && msg
                .client_msg_id
                .as_deref()
                .is_some_and(|c| self.outgoing.iter().any(|o| o.client_msg_id == c))
        {
            return None;
        }
        let conv = self.conv_of(msg);
        self.learn_from(&conv, msg);
        if msg.from != self.me && self.current.as_ref() != Some(&conv) {
            *self.unread.entry(conv.clone()).or_default() += 1;
        }
        Some(self.message_line(&conv, msg))
    }

    /// Keeps group names and user ids current from what messages say.
    fn learn_from(&mut self, conv: &Conversation, msg: &ChatMessage) {
        self.users.insert(msg.from.clone());
        if conv.kind == ConvType::Group
            && msg.content["type"] == "notification"
            && let Some(name) = msg.content["name"].as_str()
        {
            self.groups.insert(conv.target.clone(), name.to_owned());
        }
        if let Some(members) = msg.content["members"].as_array() {
            self.users
                .extend(members.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }

    fn on_receipt(
        &mut self,
        kind: ReceiptKind,
        conv: &Conversation,
        by: &str,
        up_to_id: &str,
    ) -> Option<Line> {
        let conv = conv.clone();
        let by = by.to_owned();
        let up_to = crate::wire::ids::parse_msg_id(up_to_id)?;
        let read = kind == ReceiptKind::Read;
        if by == self.me {
            // Our other device read this conversation.
            if read {
                self.unread.remove(&conv);
            }
            return None;
        }
        let (state, verb) = if read {
            (SendState::Read, "read by")
        } else {
            (SendState::Delivered, "delivered to")
        };
        let mut newest: Option<(i64, String)> = None;
        let mut count = 0;
        for o in self
            .outgoing
            .iter_mut()
            .filter(|o| o.conv == conv && o.msg_id.is_some_and(|id| id <= up_to))
        {
            let seen = if read {
                &mut o.read_by
            } else {
                &mut o.delivered_to
            };
            if seen.insert(by.clone()) {
                if read {
                    // Read implies delivered.
                    o.delivered_to.insert(by.clone());
                }
                o.state = o.state.max(state);
                count += 1;
                let id = o.msg_id.expect("filtered");
                if newest.as_ref().is_none_or(|(n, _)| id > *n) {
                    newest = Some((id, preview(&json_of(&o.content))));
                }
            }
        }
        let label = self.label(&conv);
        let now = clock(now_ms());
        let text = match newest {
            Some((_, text)) if count > 1 => {
                format!(
                    "{now} [{label}] ✓✓ {verb} {by}: “{text}” and {} earlier",
                    count - 1
                )
            }
            Some((_, text)) => format!("{now} [{label}] ✓✓ {verb} {by}: “{text}”"),
            // Nothing this chat sent: say how far, once it matters.
            None if read => format!("{now} [{label}] ✓✓ {verb} {by} up to {up_to_id}"),
            None => return None,
        };
        Some(Line::new(Style::Status, text))
    }

    fn on_typing(&mut self, addressed: &Conversation, from: &str, now: i64) -> Option<Line> {
        let from = from.to_owned();
        let conv = match addressed.kind {
            ConvType::Single => Conversation {
                kind: ConvType::Single,
                target: from.clone(),
            },
            ConvType::Group => addressed.clone(),
        };
        let key = (conv.clone(), from.clone());
        if self
            .typing_shown
            .get(&key)
            .is_some_and(|at| now - at < TYPING_QUIET_MS)
        {
            return None;
        }
        if self.typing_shown.len() > 1000 {
            self.typing_shown
                .retain(|_, at| now - *at < TYPING_QUIET_MS);
        }
        self.typing_shown.insert(key, now);
        Some(Line::new(
            Style::Status,
            format!("{} [{}] {from} is typing…", clock(now), self.label(&conv)),
        ))
    }

    /// A `sent` message state, for tests and the status of `/history`.
    pub fn state_of(&self, client_msg_id: &str) -> Option<SendState> {
        self.outgoing
            .iter()
            .find(|o| o.client_msg_id == client_msg_id)
            .map(|o| o.state)
    }
}

/// A random id for `clientMsgId`: retries after a reconnect reuse it, so
/// the server stores the message once.
/// Content as JSON, as messages from the server carry it, for the words shown.
fn json_of(content: &Content) -> Value {
    serde_json::to_value(content).expect("content serializes")
}

pub fn new_client_msg_id() -> String {
    format!("imctl-{}", crate::token::random_token(12))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::client::chat_view::input::{Command, Input, parse_input};
    use crate::client::chat_view::single;

    fn push(seq: i64, id: i64, from: &str, conv: Value, content: Value) -> Push {
        push_of(
            json!({"op": "msg", "seq": seq, "message": {"msgId": format!("m{id}"), "conv": conv, "from": from, "content": content, "serverTime": 1_700_000_000_000i64}}),
        )
    }

    fn push_of(frame: Value) -> Push {
        serde_json::from_value(frame).unwrap()
    }

    fn groups(list: &[(&str, &str)]) -> Vec<GroupSummary> {
        list.iter()
            .map(|(id, name)| GroupSummary {
                id: (*id).into(),
                name: (*name).into(),
                owner: "alice".into(),
                role: "member".into(),
                member_count: 2,
            })
            .collect()
    }

    #[test]
    fn a_web_login_request_is_shown_and_answered_once() {
        let mut s = ChatView::new("alice");
        assert!(
            s.take_web_login()
                .unwrap_err()
                .contains("no web login request")
        );
        let lines = s.on_push(&push_of(
            json!({"op": "pc_login_request", "token": "t1", "platform": 5,
            "deviceName": "Firefox\u{1b}[2J", "clientId": "web-1", "expiresInMs": 300000}),
        ));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0]
                .text
                .ends_with("Web login request from Firefox\\u{1b}[2J (Web) — /approve or /deny"),
            "{}",
            lines[0].text
        );
        assert_eq!(s.take_web_login().unwrap(), "t1");
        assert!(s.take_web_login().is_err(), "answered once");
        assert_eq!(
            parse_input("/approve").unwrap(),
            Input::Command(Command::Approve)
        );
        assert_eq!(parse_input("/deny").unwrap(), Input::Command(Command::Deny));
        assert!(parse_input("/approve t1").unwrap_err().contains("usage"));
    }

    #[test]
    fn incoming_messages_render_and_count_unread() {
        let mut s = ChatView::new("alice");
        s.switch(single("carol"));
        let lines = s.on_push(&push(
            1,
            10,
            "bob",
            json!({"type": "single", "target": "alice"}),
            json!({"type": "text", "text": "hi alice"}),
        ));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].style, Style::Incoming);
        assert!(
            lines[0].text.ends_with("[bob] bob: hi alice"),
            "{:?}",
            lines[0]
        );
        // Not the current conversation: unread, until switched to.
        assert_eq!(s.switch(single("bob")), 1);
        assert_eq!(s.switch(single("bob")), 0);
        assert_eq!(s.prompt(), "bob> ");
        s.on_push(&push(
            2,
            11,
            "bob",
            json!({"type": "single", "target": "alice"}),
            json!({"type": "text", "text": "again"}),
        ));
        assert_eq!(s.switch(single("carol")), 0);
    }

    #[test]
    fn sent_messages_advance_through_states() {
        let mut s = ChatView::new("alice");
        s.switch(single("bob"));
        let (out, line) = s.compose(
            single("bob"),
            Content::Text {
                text: "hello".into(),
            },
        );
        assert!(line.text.contains("alice: hello  ⋯ sending"), "{line:?}");
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Sending));
        let ack: Ack = serde_json::from_value(
            json!({"id": 2, "op": "ack", "code": 0, "msgId": "m42", "serverTime": 1, "seq": 7}),
        )
        .unwrap();
        let line = s.on_ack(&out.client_msg_id, &ack);
        assert!(line.text.contains("✓ sent (m42)"), "{line:?}");
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Sent));
        // A receipt for an older message does not cover this one.
        assert!(s.on_push(&push_of(json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m41"}))).is_empty());
        let lines = s.on_push(&push_of(json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m42"})));
        assert!(
            lines[0].text.contains("✓✓ delivered to bob: “hello”"),
            "{lines:?}"
        );
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Delivered));
        // The same receipt twice says nothing new.
        assert!(s.on_push(&push_of(json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m42"}))).is_empty());
        let lines = s.on_push(&push_of(json!({"op": "receipt", "kind": "read", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m50"})));
        assert!(
            lines[0].text.contains("✓✓ read by bob: “hello”"),
            "{lines:?}"
        );
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Read));
    }

    #[test]
    fn group_names_with_spaces_and_twins() {
        let mut s = ChatView::new("alice");
        s.set_groups(&groups(&[("g1", "the team"), ("g2", "dup"), ("g3", "dup")]));
        let Input::Command(Command::To(t)) = parse_input("/to #the team").unwrap() else {
            panic!("not /to");
        };
        assert_eq!(s.resolve(&t).unwrap().target, "g1");
        let err = s.resolve(&Target::Group("dup".into())).unwrap_err();
        assert!(err.contains("#g2, #g3"), "{err}");
        let g1 = s.resolve(&t).unwrap();
        s.switch(g1);
        s.left_group("g1");
        assert!(s.current().is_none());
        assert!(s.resolve(&t).is_err());
    }

    #[test]
    fn typing_is_shown_once_in_a_while() {
        let mut s = ChatView::new("alice");
        let to_me = single("alice");
        let first = s.on_typing(&to_me, "bob", 1_000).unwrap();
        assert!(first.text.ends_with("[bob] bob is typing…"), "{first:?}");
        assert!(s.on_typing(&to_me, "bob", 3_000).is_none());
        assert!(s.on_typing(&to_me, "bob", 12_000).is_some());
    }

    #[test]
    fn groups_resolve_by_name_or_id_and_label_by_name() {
        let mut s = ChatView::new("alice");
        assert!(
            s.resolve(&Target::Group("team".into()))
                .unwrap_err()
                .contains("/group create")
        );
        s.set_groups(&groups(&[("g1", "Team")]));
        let by_name = s.resolve(&Target::Group("team".into())).unwrap();
        assert_eq!(by_name.target, "g1");
        assert_eq!(s.resolve(&Target::Group("g1".into())).unwrap(), by_name);
        assert_eq!(s.label(&by_name), "#Team");
        assert!(
            s.resolve(&Target::Group("x".into()))
                .unwrap_err()
                .contains("#Team")
        );
        assert!(s.completion_words().contains(&"#Team".to_owned()));
        // A rename notification updates the label.
        s.on_push(&push(
            1,
            5,
            "bob",
            json!({"type": "group", "target": "g1"}),
            json!({"type": "notification", "kind": "renamed", "actor": "bob", "name": "crew"}),
        ));
        assert_eq!(s.label(&by_name), "#crew");
    }
}
