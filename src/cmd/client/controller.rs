//! The chat controller: a [`ChatView`] wired to a live connection and a
//! screen. It shows what happens on the connection and sends what the user
//! types; `commands` handles the `/commands`.

use std::time::Duration;

use super::screen::Screen;
use crate::client::app::exit;
use crate::client::chat::ChatError;
use crate::client::chat_view::{
    ChatView, Input, Line, Outgoing, Style, Target, parse_input, render,
};
use crate::client::live::{Event, Live};
use crate::cmd::Failure;
use crate::wire::ws::{Content, ConvReq, ConvType, Conversation, InboxEntry, Push, Reply, Request};

/// Messages shown from a sync at start; the rest are counted, not printed.
const BACKLOG_SHOWN: usize = 30;

#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// The chat view wired to a live connection and a screen.
pub struct Chat {
    pub live: Live,
    pub view: ChatView,
    pub screen: Screen,
    /// Scripted: a send waits for its ack (reconnecting if need be) instead
    /// of staying queued, so a script's exit status means something.
    strict: bool,
}

pub(super) fn refused(e: ChatError) -> anyhow::Error {
    match e {
        ChatError::Refused { message, .. } => Failure::new(exit::REFUSED, message).into(),
        ChatError::Timeout(t) => Failure::new(
            exit::TIMED_OUT,
            format!("no answer from the broker within {t:?}"),
        )
        .into(),
        other => other.into(),
    }
}

pub(super) fn user_error(message: String) -> anyhow::Error {
    Failure::new(exit::ERROR, message).into()
}

impl Chat {
    pub fn new(live: Live, screen: Screen, strict: bool) -> Self {
        let view = ChatView::new(live.user_id());
        Self {
            live,
            view,
            screen,
            strict,
        }
    }

    /// Learns users and groups for completion and `#name` targets.
    pub async fn prime(&mut self) {
        if let Ok(users) = self.live.app().dev_users().await {
            self.view.add_users(users.into_iter().map(|u| u.user_id));
        }
        self.refresh_groups().await;
        if let Ok(Reply::FriendList { friends }) = self.live.request(&Request::FriendList).await {
            self.view
                .add_users(friends.into_iter().map(|f| f.profile.user_id));
        }
    }

    pub(super) async fn refresh_groups(&mut self) {
        if let Ok(Reply::GroupList { groups }) = self.live.request(&Request::GroupList).await {
            self.view.set_groups(&groups);
        }
    }

    /// A target as a conversation; asks the server for groups it does not know yet.
    pub(super) async fn resolve(&mut self, target: &Target) -> anyhow::Result<Conversation> {
        if let Ok(c) = self.view.resolve(target) {
            return Ok(c);
        }
        self.refresh_groups().await;
        self.view.resolve(target).map_err(user_error)
    }

    /// Sends a composed message and waits for its ack, reconnecting and
    /// resending (same clientMsgId) if the link drops. A refusal is an error.
    pub(super) async fn deliver(&mut self, out: &Outgoing) -> anyhow::Result<crate::wire::ws::Ack> {
        if let Some(ack) = self.live.send(out.clone()).await.map_err(refused)? {
            return Ok(ack);
        }
        loop {
            if let Event::Connected { .. } = self.live.next().await? {
                for (o, result) in self.live.flush().await {
                    if o.client_msg_id == out.client_msg_id
                        && let Some(ack) = result.map_err(refused)?
                    {
                        return Ok(ack);
                    }
                }
            }
        }
    }

    /// Sends a message, showing it and its ack, or that it is queued until
    /// the connection is back. A refusal comes back as an error.
    pub(super) async fn send(
        &mut self,
        conv: Conversation,
        content: Content,
    ) -> anyhow::Result<()> {
        let (out, line) = self.view.compose(conv, content);
        self.screen.show([line]);
        let sent = if self.strict {
            self.deliver(&out).await.map(Some)
        } else {
            self.live.send(out.clone()).await.map_err(refused)
        };
        let shown = match sent {
            Ok(Some(ack)) => self.view.on_ack(&out.client_msg_id, &ack),
            Ok(None) => self.view.on_queued(&out),
            Err(e) => {
                self.view.forget(&out.client_msg_id);
                return Err(e.context("not sent"));
            }
        };
        self.screen.show([shown]);
        Ok(())
    }

    /// Shows what happened on the connection.
    pub async fn on_event(&mut self, event: Event) {
        match event {
            Event::Connected {
                entries,
                reset,
                reconnect,
            } => {
                if reset {
                    self.screen.show([Line::notice(
                        "the server's data was reset (a new --ephemeral server?); showing everything from the start",
                    )]);
                }
                if reconnect {
                    self.screen.show([Line::notice(format!(
                        "reconnected; {} new message{} while disconnected",
                        entries.len(),
                        if entries.len() == 1 { "" } else { "s" }
                    ))]);
                } else if !entries.is_empty() {
                    self.screen.show([Line::notice(format!(
                        "while you were away ({}):",
                        entries.len()
                    ))]);
                }
                // A new device's first sync can be the whole inbox: show the end.
                let hidden = entries.len().saturating_sub(BACKLOG_SHOWN);
                if hidden > 0 {
                    self.screen.show([Line::new(
                        Style::Status,
                        format!(
                            "      ({hidden} earlier not shown: /convs, then /to and /history)"
                        ),
                    )]);
                }
                self.show_entries(&entries, hidden).await;
                let flushed = self.live.flush().await;
                for (out, result) in flushed {
                    let line = match result {
                        Ok(Some(ack)) => self.view.on_ack(&out.client_msg_id, &ack),
                        Ok(None) => continue,
                        Err(e) => self.view.on_refused(&out.client_msg_id, &e.to_string()),
                    };
                    self.screen.show([line]);
                }
            }
            Event::Push(Push::Msg { seq, message }) => {
                let entry = InboxEntry { seq, message };
                self.show_entries(std::slice::from_ref(&entry), 0).await;
            }
            Event::Push(push) => {
                let lines = self.view.on_push(&push);
                self.screen.show(lines);
            }
            Event::Error { code, message } => {
                self.screen.show([render::server_error(code, &message)]);
            }
            Event::Unreadable { op, seq, error } => match op.as_str() {
                "msg" => {
                    self.screen.show([Line::error(format!(
                        "unreadable message from the server: {error}"
                    ))]);
                    // Seen anyway, or it would hold the saved seq back for good.
                    self.live.seen(seq).await;
                }
                "pc_login_request" => self
                    .screen
                    .show([Line::error("unreadable web login request from the server")]),
                _ => tracing::debug!(%op, %error, "unreadable frame from the server ignored"),
            },
            Event::Lost { reason, .. } => {
                self.screen.show([Line::error(format!(
                    "connection lost ({reason}); reconnecting… (messages you type are queued)"
                ))]);
            }
            Event::RetryFailed { reason, retry_in } => {
                self.screen.show([Line::new(
                    Style::Status,
                    format!(
                        "      still offline ({reason}); next try in {}",
                        humantime::format_duration(Duration::from_millis(
                            retry_in.as_millis() as u64
                        ))
                    ),
                )]);
            }
        }
    }

    /// Shows inbox entries but the first `skip`, and marks them all seen.
    async fn show_entries(&mut self, entries: &[InboxEntry], skip: usize) {
        let mut new_group = false;
        for e in entries {
            if e.message.conv.kind == ConvType::Group
                && !self.view.knows_group(&e.message.conv.target)
            {
                new_group = true;
            }
        }
        if new_group {
            self.refresh_groups().await;
        }
        for (i, e) in entries.iter().enumerate() {
            let line = self.view.on_message(&e.message);
            if let Some(line) = line.filter(|_| i >= skip) {
                self.screen.show([line]);
            }
        }
        self.live.seen(entries.iter().map(|e| e.seq)).await;
    }

    /// Handles one entered line. User mistakes and refusals come back as
    /// errors (the terminal shows them; scripts stop on them).
    pub async fn handle_line(&mut self, line: &str) -> anyhow::Result<Flow> {
        let input = parse_input(line).map_err(user_error)?;
        match input {
            Input::Empty => {}
            Input::Text(text) => {
                let conv = self.view.require_current().map_err(user_error)?;
                self.send(conv, Content::Text { text }).await?;
            }
            Input::Command(cmd) => return self.command(cmd).await,
        }
        Ok(Flow::Continue)
    }

    /// Tells the current conversation that we are typing.
    pub async fn typing(&mut self) {
        if let Some(conv) = self.view.current().cloned() {
            self.live.tell(&Request::Typing(ConvReq { conv })).await;
        }
    }
}
