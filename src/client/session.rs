//! The logic of `imctl client`'s chat session, with neither a terminal nor a
//! socket: parsing what the user types, keeping the session's state (current
//! conversation, groups, sent messages and their states, unread counts) and
//! rendering server frames into lines. `cmd::client` wires it to rustyline
//! and to `client::live`; the unit tests drive it directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::Value;

use crate::wire::ws::{Ack, ChatMessage, ConvType, Conversation, InboxEntry, PcLoginRequest};

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

/// Who a command addresses: `bob` or `#team` (a group's name or id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Group(String),
}

impl Target {
    /// `bob` or `#team`.
    pub fn parse(word: &str) -> Result<Self, String> {
        match word.strip_prefix('#') {
            Some("") => Err("a group needs a name after #, e.g. #team".into()),
            Some(g) => Ok(Target::Group(g.to_owned())),
            None if word.is_empty() => Err("say who: a user id (bob) or #group".into()),
            None => Ok(Target::User(word.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    To(Target),
    Msg(Target, String),
    History(u32),
    Convs,
    Read,
    Who,
    GroupCreate {
        name: String,
        members: Vec<String>,
    },
    GroupAdd(Vec<String>),
    GroupRemove(Vec<String>),
    GroupLeave,
    GroupInfo,
    FriendAdd {
        user: String,
        remark: Option<String>,
    },
    FriendAccept(String),
    FriendReject(String),
    SendImage(PathBuf),
    Me(Option<String>),
    /// Answer the latest web login request (quick login) yes or no.
    Approve,
    Deny,
    Help,
    Quit,
}

/// One line the user entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Empty,
    /// Text for the current conversation.
    Text(String),
    Command(Command),
}

/// Commands, for `/help` and tab completion: (usage, what it does).
pub const COMMANDS: &[(&str, &str)] = &[
    (
        "/to USER|#GROUP",
        "switch to a conversation (shows unread messages)",
    ),
    (
        "/msg USER|#GROUP TEXT",
        "send one message without switching",
    ),
    ("/history [N]", "the last N messages here (default 20)"),
    (
        "/convs",
        "conversations, most recent first, with unread counts",
    ),
    ("/read", "mark this conversation read"),
    ("/who", "friends and whether they are online"),
    (
        "/group create NAME USER...",
        "create a group and switch to it",
    ),
    ("/group add USER...", "add members to this group"),
    ("/group remove USER...", "remove members from this group"),
    ("/group leave", "leave this group"),
    ("/group info", "members of this group"),
    ("/friend add USER [REMARK]", "ask USER to be your friend"),
    ("/friend accept USER", "accept USER's friend request"),
    ("/friend reject USER", "reject USER's friend request"),
    ("/send-image PATH", "upload a PNG or JPEG and send it here"),
    (
        "/me [NEW NAME]",
        "your profile; with a name, change your display name",
    ),
    (
        "/approve",
        "let the web page that asked to log in as you in",
    ),
    ("/deny", "refuse the web page that asked to log in as you"),
    ("/help", "this list"),
    ("/quit", "leave (Ctrl-D too)"),
];

/// The command words, for completion.
pub fn command_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = COMMANDS
        .iter()
        .map(|(usage, _)| usage.split(' ').next().expect("usage has a word"))
        .collect();
    words.dedup();
    words
}

const HISTORY_DEFAULT: u32 = 20;
const HISTORY_MAX: u32 = 200;

/// Parses one entered line. A line starting with `//` sends the text with
/// one `/` removed, so messages can start with a slash.
pub fn parse_input(line: &str) -> Result<Input, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Empty);
    }
    if let Some(rest) = line.strip_prefix("//") {
        return Ok(Input::Text(format!("/{rest}")));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Text(line.to_owned()));
    };
    let (word, args) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .map_or((rest.trim(), ""), |(w, a)| (w, a.trim()));
    let words: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
    let need = |what: &str| Err(format!("usage: {what}"));
    let cmd = match word {
        // Group names may have spaces: `/to #the team`.
        "to" | "query" => match words.as_slice() {
            [] => return need("/to USER|#GROUP"),
            [one] => Command::To(Target::parse(one)?),
            _ if args.starts_with('#') => Command::To(Target::parse(args)?),
            _ => return need("/to USER|#GROUP"),
        },
        "msg" | "m" => match args.split_once(char::is_whitespace) {
            Some((who, text)) if !text.trim().is_empty() => {
                Command::Msg(Target::parse(who)?, text.trim_start().to_owned())
            }
            _ => return need("/msg USER|#GROUP TEXT"),
        },
        "history" | "h" => match words.as_slice() {
            [] => Command::History(HISTORY_DEFAULT),
            [n] => match n.parse::<u32>() {
                Ok(n) if (1..=HISTORY_MAX).contains(&n) => Command::History(n),
                _ => return Err(format!("/history takes a count from 1 to {HISTORY_MAX}")),
            },
            _ => return need("/history [N]"),
        },
        "convs" | "conversations" => Command::Convs,
        "read" => Command::Read,
        "who" => Command::Who,
        "group" | "g" => match words.split_first() {
            Some((sub, rest)) => match (sub.as_str(), rest) {
                ("create", [name, members @ ..]) => Command::GroupCreate {
                    name: name.clone(),
                    members: members.to_vec(),
                },
                ("add", m) if !m.is_empty() => Command::GroupAdd(m.to_vec()),
                ("remove" | "kick", m) if !m.is_empty() => Command::GroupRemove(m.to_vec()),
                ("leave", []) => Command::GroupLeave,
                ("info", []) => Command::GroupInfo,
                _ => {
                    return need(
                        "/group create NAME USER... | /group add USER... | /group remove USER... | /group leave | /group info",
                    );
                }
            },
            None => return need("/group create|add|remove|leave|info ..."),
        },
        "friend" | "f" => match words.as_slice() {
            [sub, user, remark @ ..] if sub == "add" => Command::FriendAdd {
                user: user.clone(),
                remark: (!remark.is_empty()).then(|| remark.join(" ")),
            },
            [sub, user] if sub == "accept" => Command::FriendAccept(user.clone()),
            [sub, user] if sub == "reject" => Command::FriendReject(user.clone()),
            _ => {
                return need(
                    "/friend add USER [REMARK] | /friend accept USER | /friend reject USER",
                );
            }
        },
        "send-image" | "image" => {
            if args.is_empty() {
                return need("/send-image PATH");
            }
            Command::SendImage(PathBuf::from(args))
        }
        "me" => Command::Me((!args.is_empty()).then(|| args.to_owned())),
        "approve" if words.is_empty() => Command::Approve,
        "deny" if words.is_empty() => Command::Deny,
        "approve" | "deny" => return need("/approve or /deny (they answer the latest request)"),
        "help" | "?" => Command::Help,
        "quit" | "exit" | "q!" => Command::Quit,
        other => {
            return Err(format!(
                "unknown command /{other}; /help lists them (start a message with // to send a slash)"
            ));
        }
    };
    Ok(Input::Command(cmd))
}

/// Where a sent message has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SendState {
    Sending,
    Sent,
    Delivered,
    Read,
}

/// A message this session sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub client_msg_id: String,
    pub conv: Conversation,
    pub content: Value,
    pub msg_id: Option<i64>,
    pub state: SendState,
    delivered_to: BTreeSet<String>,
    read_by: BTreeSet<String>,
}

/// How many sent messages are remembered for receipts.
const OUTGOING_KEPT: usize = 1000;

pub struct Session {
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

impl Session {
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

    pub fn current(&self) -> Option<&Conversation> {
        self.current.as_ref()
    }

    /// The prompt: the current conversation.
    pub fn prompt(&self) -> String {
        match &self.current {
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
                    self.groups
                        .get(&conv.target)
                        .map_or(conv.target.as_str(), String::as_str)
                )
            ),
        }
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
    pub fn set_groups(&mut self, list: &Value) {
        for g in list["groups"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name)) = (g["id"].as_str(), g["name"].as_str()) {
                self.groups.insert(id.to_owned(), name.to_owned());
            }
        }
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
    pub fn compose(&mut self, conv: Conversation, content: Value) -> (Outgoing, Line) {
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
                clock(crate::wire::ids::now_ms()),
                self.label(&out.conv),
                self.me,
                describe(&out.content)
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
                format!("[{}] “{}”", self.label(&o.conv), preview(&o.content))
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
                preview(&out.content)
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
    pub fn on_push(&mut self, frame: &Value) -> Vec<Line> {
        match frame["op"].as_str().unwrap_or_default() {
            "msg" => match serde_json::from_value::<InboxEntry>(frame.clone()) {
                Ok(entry) => self.on_message(&entry.message).into_iter().collect(),
                Err(e) => vec![Line::error(format!(
                    "unreadable message from the server: {e}"
                ))],
            },
            "receipt" => self.on_receipt(frame).into_iter().collect(),
            "typing" => self
                .on_typing(frame, crate::wire::ids::now_ms())
                .into_iter()
                .collect(),
            "presence" => {
                let user = frame["userId"].as_str().unwrap_or("?");
                self.users.insert(user.to_owned());
                let text = if frame["online"].as_bool() == Some(true) {
                    format!("{user} is online ({})", platforms(&frame["platforms"]))
                } else {
                    format!("{user} went offline")
                };
                vec![Line::notice(format!(
                    "{} {text}",
                    clock(crate::wire::ids::now_ms())
                ))]
            }
            "notify" => {
                let from = frame["from"].as_str().unwrap_or("?");
                self.users.insert(from.to_owned());
                let text = match frame["kind"].as_str().unwrap_or_default() {
                    "friend_request" => {
                        let remark = frame["remark"]
                            .as_str()
                            .filter(|r| !r.is_empty())
                            .map(|r| format!(" (“{r}”)"))
                            .unwrap_or_default();
                        format!("{from} wants to be your friend{remark}: /friend accept {from}")
                    }
                    "friend_accepted" => format!("{from} accepted your friend request"),
                    "friend_rejected" => format!("{from} declined your friend request"),
                    other => format!("{from}: {other}"),
                };
                vec![Line::notice(format!(
                    "{} {text}",
                    clock(crate::wire::ids::now_ms())
                ))]
            }
            "pc_login_request" => {
                let Ok(req) = serde_json::from_value::<PcLoginRequest>(frame.clone()) else {
                    return vec![Line::error("unreadable web login request from the server")];
                };
                self.web_login = Some(req.token);
                vec![Line::notice(format!(
                    "{} Web login request from {} ({}) — /approve or /deny",
                    clock(crate::wire::ids::now_ms()),
                    one_line(&req.device_name),
                    platform_name(req.platform.into())
                ))]
            }
            "profile" => {
                let user = &frame["user"];
                vec![Line::notice(format!(
                    "{} is now called {}",
                    one_line(user["userId"].as_str().unwrap_or("?")),
                    one_line(user["displayName"].as_str().unwrap_or("?"))
                ))]
            }
            "error" => vec![Line::error(format!(
                "server: {} (code {})",
                frame["message"].as_str().unwrap_or("error"),
                frame["code"]
            ))],
            _ => Vec::new(),
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
        // Our own sends from this session show through their acks.
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

    /// A message as a line without touching unread counts (history).
    pub fn message_line(&self, conv: &Conversation, msg: &ChatMessage) -> Line {
        let style = if msg.from == self.me {
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

    fn on_receipt(&mut self, frame: &Value) -> Option<Line> {
        let conv: Conversation = serde_json::from_value(frame["conv"].clone()).ok()?;
        let by = frame["by"].as_str()?.to_owned();
        let up_to_id = frame["upTo"].as_str()?;
        let up_to = crate::wire::ids::parse_msg_id(up_to_id)?;
        let read = frame["kind"] == "read";
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
                    newest = Some((id, preview(&o.content)));
                }
            }
        }
        let label = self.label(&conv);
        let now = clock(crate::wire::ids::now_ms());
        let text = match newest {
            Some((_, text)) if count > 1 => {
                format!(
                    "{now} [{label}] ✓✓ {verb} {by}: “{text}” and {} earlier",
                    count - 1
                )
            }
            Some((_, text)) => format!("{now} [{label}] ✓✓ {verb} {by}: “{text}”"),
            // Nothing of this session's: say how far, once it matters.
            None if read => format!("{now} [{label}] ✓✓ {verb} {by} up to {up_to_id}"),
            None => return None,
        };
        Some(Line::new(Style::Status, text))
    }

    fn on_typing(&mut self, frame: &Value, now: i64) -> Option<Line> {
        let from = frame["from"].as_str()?.to_owned();
        let addressed: Conversation = serde_json::from_value(frame["conv"].clone()).ok()?;
        let conv = match addressed.kind {
            ConvType::Single => Conversation {
                kind: ConvType::Single,
                target: from.clone(),
            },
            ConvType::Group => addressed,
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

    /// `/history`: oldest first, with the unread marker before the last
    /// `unread` messages from others.
    pub fn render_history(
        &self,
        conv: &Conversation,
        reply: &Value,
        unread: u32,
    ) -> Result<Vec<Line>, String> {
        let mut messages: Vec<ChatMessage> =
            serde_json::from_value(reply["messages"].clone()).map_err(|e| e.to_string())?;
        messages.reverse();
        if messages.is_empty() {
            return Ok(vec![Line::notice(format!(
                "no messages with {} yet",
                self.label(conv)
            ))]);
        }
        let marker_at = (unread > 0).then(|| {
            // Count back `unread` messages from others.
            let mut left = unread;
            let mut at = messages.len();
            for (i, m) in messages.iter().enumerate().rev() {
                if left == 0 {
                    break;
                }
                if m.from != self.me {
                    left -= 1;
                    at = i;
                }
            }
            at
        });
        let mut lines = Vec::with_capacity(messages.len() + 2);
        if reply["more"] == true {
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
        Ok(lines)
    }

    /// `/convs`.
    pub fn render_convs(&self, reply: &Value) -> Vec<Line> {
        let convs = reply["conversations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if convs.is_empty() {
            return vec![Line::notice(
                "no conversations yet: /to USER, then type a message",
            )];
        }
        convs
            .iter()
            .filter_map(|c| {
                let conv: Conversation = serde_json::from_value(c["conv"].clone()).ok()?;
                let last: Option<ChatMessage> =
                    serde_json::from_value(c["lastMessage"].clone()).ok();
                let unread = c["unread"].as_u64().unwrap_or(0);
                let mark = if self.current.as_ref() == Some(&conv) {
                    "*"
                } else {
                    " "
                };
                let badge = if unread > 0 {
                    format!("({unread} unread)")
                } else {
                    String::new()
                };
                let muted = if c["muted"] == true { " [muted]" } else { "" };
                let last = last
                    .map(|m| {
                        format!(
                            "{} {}: {}",
                            clock(m.server_time),
                            m.from,
                            preview(&m.content)
                        )
                    })
                    .unwrap_or_default();
                Some(Line::notice(format!(
                    "{mark} {:<16} {badge:<12}{muted} {last}",
                    self.label(&conv)
                )))
            })
            .collect()
    }

    /// `/who`: friends with presence.
    pub fn render_who(&self, friends: &Value, presence: &Value) -> Vec<Line> {
        let list = friends["friends"].as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            return vec![Line::notice(
                "no friends yet: /friend add USER (presence is shared between friends)",
            )];
        }
        let platforms_of = |user: &str| {
            presence["users"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["userId"] == user)
                .map(|p| p["platforms"].clone())
        };
        list.iter()
            .map(|f| {
                let user = f["userId"].as_str().unwrap_or("?");
                let name = one_line(f["displayName"].as_str().unwrap_or(""));
                let state = match platforms_of(user) {
                    Some(p) if p.as_array().is_some_and(|a| !a.is_empty()) => {
                        format!("online ({})", platforms(&p))
                    }
                    _ if f["online"] == true => "online".into(),
                    _ => "offline".into(),
                };
                Line::notice(format!("  {user:<12} {name:<20} {state}"))
            })
            .collect()
    }

    /// `/group info`.
    pub fn render_group(&self, reply: &Value) -> Vec<Line> {
        let g = &reply["group"];
        let mut lines = vec![Line::notice(format!(
            "#{} ({}), owner {}",
            one_line(g["name"].as_str().unwrap_or("?")),
            g["id"].as_str().unwrap_or("?"),
            g["owner"].as_str().unwrap_or("?")
        ))];
        for m in g["members"].as_array().into_iter().flatten() {
            lines.push(Line::notice(format!(
                "  {:<12} {}",
                m["userId"].as_str().unwrap_or("?"),
                m["role"].as_str().unwrap_or("")
            )));
        }
        lines
    }
}

/// A random id for `clientMsgId`: retries after a reconnect reuse it, so
/// the server stores the message once.
pub fn new_client_msg_id() -> String {
    format!("imctl-{}", crate::token::random_token(12))
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
fn platforms(list: &Value) -> String {
    let names: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .map(platform_name)
        .collect();
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
fn preview(content: &Value) -> String {
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

    fn single(target: &str) -> Conversation {
        Conversation {
            kind: ConvType::Single,
            target: target.into(),
        }
    }

    fn push(seq: i64, id: i64, from: &str, conv: Value, content: Value) -> Value {
        json!({"op": "msg", "seq": seq, "message": {"msgId": format!("m{id}"), "conv": conv, "from": from, "content": content, "serverTime": 1_700_000_000_000i64}})
    }

    #[test]
    fn parses_text_and_commands() {
        assert_eq!(parse_input("  ").unwrap(), Input::Empty);
        assert_eq!(parse_input("hello\n").unwrap(), Input::Text("hello".into()));
        assert_eq!(
            parse_input("//shrug").unwrap(),
            Input::Text("/shrug".into())
        );
        assert_eq!(
            parse_input("/to #team").unwrap(),
            Input::Command(Command::To(Target::Group("team".into())))
        );
        assert_eq!(
            parse_input("/msg bob hi there").unwrap(),
            Input::Command(Command::Msg(Target::User("bob".into()), "hi there".into()))
        );
        assert_eq!(
            parse_input("/history").unwrap(),
            Input::Command(Command::History(20))
        );
        assert_eq!(
            parse_input("/history 5").unwrap(),
            Input::Command(Command::History(5))
        );
        assert_eq!(
            parse_input("/group create team bob carol").unwrap(),
            Input::Command(Command::GroupCreate {
                name: "team".into(),
                members: vec!["bob".into(), "carol".into()]
            })
        );
        assert_eq!(
            parse_input("/friend add carol it's alice").unwrap(),
            Input::Command(Command::FriendAdd {
                user: "carol".into(),
                remark: Some("it's alice".into())
            })
        );
        assert_eq!(
            parse_input("/send-image /tmp/a cat.png").unwrap(),
            Input::Command(Command::SendImage("/tmp/a cat.png".into()))
        );
        assert_eq!(
            parse_input("/me Alice L.").unwrap(),
            Input::Command(Command::Me(Some("Alice L.".into())))
        );
        assert_eq!(parse_input("/quit").unwrap(), Input::Command(Command::Quit));
    }

    #[test]
    fn a_web_login_request_is_shown_and_answered_once() {
        let mut s = Session::new("alice");
        assert!(
            s.take_web_login()
                .unwrap_err()
                .contains("no web login request")
        );
        let lines = s.on_push(
            &json!({"op": "pc_login_request", "token": "t1", "platform": 5,
            "deviceName": "Firefox\u{1b}[2J", "clientId": "web-1", "expiresInMs": 300000}),
        );
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
    fn bad_commands_say_how() {
        for (line, says) in [
            ("/nope", "unknown command /nope"),
            ("/to", "usage: /to"),
            ("/to #", "a group needs a name"),
            ("/msg bob", "usage: /msg"),
            ("/history 0", "from 1 to 200"),
            ("/history x", "from 1 to 200"),
            ("/group", "usage: /group"),
            ("/group create", "usage: /group"),
            ("/friend add", "usage: /friend"),
            ("/send-image", "usage: /send-image"),
        ] {
            let err = parse_input(line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
        }
    }

    #[test]
    fn every_command_in_help_parses() {
        for word in command_words() {
            let err = parse_input(word).err().unwrap_or_default();
            assert!(!err.contains("unknown command"), "{word}: {err}");
        }
    }

    #[test]
    fn incoming_messages_render_and_count_unread() {
        let mut s = Session::new("alice");
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
    fn sent_messages_advance_through_states() {
        let mut s = Session::new("alice");
        s.switch(single("bob"));
        let (out, line) = s.compose(single("bob"), json!({"type": "text", "text": "hello"}));
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
        assert!(s.on_push(&json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m41"})).is_empty());
        let lines = s.on_push(&json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m42"}));
        assert!(
            lines[0].text.contains("✓✓ delivered to bob: “hello”"),
            "{lines:?}"
        );
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Delivered));
        // The same receipt twice says nothing new.
        assert!(s.on_push(&json!({"op": "receipt", "kind": "delivered", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m42"})).is_empty());
        let lines = s.on_push(&json!({"op": "receipt", "kind": "read", "conv": {"type": "single", "target": "bob"}, "by": "bob", "upTo": "m50"}));
        assert!(
            lines[0].text.contains("✓✓ read by bob: “hello”"),
            "{lines:?}"
        );
        assert_eq!(s.state_of(&out.client_msg_id), Some(SendState::Read));
    }

    #[test]
    fn terminal_escapes_from_peers_are_not_obeyed() {
        let line = Line::new(Style::Incoming, "bob: \x1b[2Jgotcha\x07\nsecond");
        assert_eq!(line.text, "bob: \\u{1b}[2Jgotcha\\u{7}\nsecond");
    }

    #[test]
    fn group_names_with_spaces_and_twins() {
        let mut s = Session::new("alice");
        s.set_groups(&json!({"groups": [{"id": "g1", "name": "the team"}, {"id": "g2", "name": "dup"}, {"id": "g3", "name": "dup"}]}));
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
        let mut s = Session::new("alice");
        let frame =
            json!({"op": "typing", "conv": {"type": "single", "target": "alice"}, "from": "bob"});
        let first = s.on_typing(&frame, 1_000).unwrap();
        assert!(first.text.ends_with("[bob] bob is typing…"), "{first:?}");
        assert!(s.on_typing(&frame, 3_000).is_none());
        assert!(s.on_typing(&frame, 12_000).is_some());
    }

    #[test]
    fn groups_resolve_by_name_or_id_and_label_by_name() {
        let mut s = Session::new("alice");
        assert!(
            s.resolve(&Target::Group("team".into()))
                .unwrap_err()
                .contains("/group create")
        );
        s.set_groups(&json!({"groups": [{"id": "g1", "name": "Team"}]}));
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

    #[test]
    fn history_puts_the_unread_marker_before_unread_messages() {
        let s = Session::new("alice");
        let m = |id: i64, from: &str| json!({"msgId": format!("m{id}"), "conv": {"type": "single", "target": if from == "alice" {"bob"} else {"alice"}}, "from": from, "content": {"type": "text", "text": format!("t{id}")}, "serverTime": 0});
        // Newest first, as the server answers.
        let reply = json!({"messages": [m(4, "bob"), m(3, "bob"), m(2, "alice"), m(1, "bob")], "more": false});
        let lines = s.render_history(&single("bob"), &reply, 2).unwrap();
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
        let mut s = Session::new("alice");
        s.switch(single("bob"));
        let lines = s.render_convs(&json!({"conversations": [
            {"conv": {"type": "single", "target": "bob"}, "lastMessage": {"msgId": "m1", "conv": {"type": "single", "target": "alice"}, "from": "bob", "content": {"type": "text", "text": "yo"}, "serverTime": 0}, "unread": 2, "muted": false},
            {"conv": {"type": "single", "target": "carol"}, "unread": 0, "muted": true}
        ]}));
        assert!(lines[0].text.starts_with("* bob"), "{lines:?}");
        assert!(lines[0].text.contains("(2 unread)") && lines[0].text.ends_with("bob: yo"));
        assert!(lines[1].text.contains("[muted]"));
        let who = s.render_who(
            &json!({"friends": [{"userId": "bob", "displayName": "Bob Chen", "online": true}, {"userId": "carol", "displayName": "Carol", "online": false}]}),
            &json!({"users": [{"userId": "bob", "online": true, "platforms": [2, 7]}]}),
        );
        assert!(who[0].text.contains("online (Android, Linux)"), "{who:?}");
        assert!(who[1].text.ends_with("offline"));
    }
}
