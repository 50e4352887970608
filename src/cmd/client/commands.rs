//! The chat's `/commands`: each asks the broker (or the app-server) and
//! shows the answer.

use serde_json::{Value, json};

use super::controller::{Chat, Flow, refused, user_error};
use crate::client::ClientError;
use crate::client::app::exit;
use crate::client::chat_view::{self, COMMANDS, Command, Line, render};
use crate::cmd::Failure;
use crate::wire::ws::{ConvType, Conversation};

impl Chat {
    async fn request(&mut self, frame: Value) -> anyhow::Result<Value> {
        self.live.request(frame).await.map_err(refused)
    }

    pub(super) async fn command(&mut self, cmd: Command) -> anyhow::Result<Flow> {
        match cmd {
            Command::To(target) => {
                let conv = self.resolve(&target).await?;
                self.open_conversation(conv).await?;
            }
            Command::Msg(target, text) => {
                let conv = self.resolve(&target).await?;
                self.send(conv, json!({"type": "text", "text": text}))
                    .await?;
            }
            Command::History(n) => {
                let conv = self.view.require_current().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "history", "conv": conv, "limit": n}))
                    .await?;
                let lines = self
                    .view
                    .render_history(&conv, &reply, 0)
                    .map_err(user_error)?;
                self.screen.show(lines);
            }
            Command::Convs => {
                let reply = self
                    .request(json!({"op": "conversations", "limit": 50}))
                    .await?;
                let lines = self.view.render_convs(&reply);
                self.screen.show(lines);
            }
            Command::Read => {
                let conv = self.view.require_current().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "history", "conv": conv, "limit": 1}))
                    .await?;
                match reply["messages"][0]["msgId"].as_str() {
                    Some(last) => {
                        let last = last.to_owned();
                        self.mark_read(&conv, &last).await?;
                        let label = self.view.label(&conv);
                        self.screen
                            .show([Line::notice(format!("{label}: read up to {last}"))]);
                    }
                    None => self.screen.show([Line::notice("nothing to read here")]),
                }
            }
            Command::Who => {
                let friends = self.request(json!({"op": "friend.list"})).await?;
                let users: Vec<&str> = friends["friends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["userId"].as_str())
                    .collect();
                let presence = if users.is_empty() {
                    json!({})
                } else {
                    self.request(json!({"op": "presence", "users": users}))
                        .await?
                };
                let lines = render::who(&friends, &presence);
                self.screen.show(lines);
            }
            Command::GroupCreate { name, members } => {
                let reply = self
                    .request(json!({"op": "group.create", "name": name, "members": members}))
                    .await?;
                let group = reply["group"].clone();
                self.view.set_groups(&json!({"groups": [group.clone()]}));
                let id = group["id"].as_str().unwrap_or_default().to_owned();
                let conv = Conversation {
                    kind: ConvType::Group,
                    target: id.clone(),
                };
                self.view.switch(conv);
                self.screen.show([Line::notice(format!(
                    "created #{name} ({id}); you are talking there now"
                ))]);
            }
            Command::GroupAdd(members) => {
                let conv = self.view.require_group().map_err(user_error)?;
                self.request(json!({"op": "group.add", "group": conv.target, "members": members}))
                    .await?;
                let label = self.view.label(&conv);
                self.screen.show([Line::notice(format!(
                    "added {} to {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupRemove(members) => {
                let conv = self.view.require_group().map_err(user_error)?;
                self.request(
                    json!({"op": "group.remove", "group": conv.target, "members": members}),
                )
                .await?;
                let label = self.view.label(&conv);
                self.screen.show([Line::notice(format!(
                    "removed {} from {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupLeave => {
                let conv = self.view.require_group().map_err(user_error)?;
                self.request(json!({"op": "group.leave", "group": conv.target}))
                    .await?;
                let label = self.view.label(&conv);
                self.view.left_group(&conv.target);
                self.screen.show([Line::notice(format!(
                    "you left {label}; /to picks the next conversation"
                ))]);
            }
            Command::GroupInfo => {
                let conv = self.view.require_group().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "group.info", "group": conv.target}))
                    .await?;
                let lines = render::group_info(&reply);
                self.screen.show(lines);
            }
            Command::FriendAdd { user, remark } => {
                let reply = self
                    .request(json!({"op": "friend.request", "target": user, "remark": remark}))
                    .await?;
                let text = if reply["friends"] == true {
                    format!("{user} had asked you too: you are friends now")
                } else {
                    format!("asked {user} to be your friend")
                };
                self.screen.show([Line::notice(text)]);
            }
            Command::FriendAccept(user) => {
                self.request(json!({"op": "friend.accept", "from": user}))
                    .await?;
                self.screen
                    .show([Line::notice(format!("you and {user} are friends now"))]);
            }
            Command::FriendReject(user) => {
                self.request(json!({"op": "friend.reject", "from": user}))
                    .await?;
                self.screen
                    .show([Line::notice(format!("declined {user}'s request"))]);
            }
            Command::SendImage(path) => {
                let conv = self.view.require_current().map_err(user_error)?;
                let content = self.upload_image(&path).await?;
                self.send(conv, content).await?;
            }
            Command::Me(None) => {
                let reply = self.request(json!({"op": "profile.get"})).await?;
                let u = if reply["user"].is_object() {
                    reply["user"].clone()
                } else {
                    reply["users"][0].clone()
                };
                self.screen.show([Line::notice(format!(
                    "{} ({}), mobile {}, portrait {}",
                    u["userId"].as_str().unwrap_or("?"),
                    chat_view::one_line(u["displayName"].as_str().unwrap_or("")),
                    u["mobile"].as_str().unwrap_or("-"),
                    u["portrait"].as_str().unwrap_or("-")
                ))]);
            }
            Command::Me(Some(name)) => {
                self.request(json!({"op": "profile.update", "displayName": name}))
                    .await?;
                self.screen
                    .show([Line::notice(format!("your display name is now {name}"))]);
            }
            Command::Approve | Command::Deny => {
                let token = self.view.take_web_login().map_err(user_error)?;
                let auth = self.live.auth_token().map(str::to_owned).ok_or_else(|| {
                    user_error("this login has no app-server session to answer with; log in again with --fresh".into())
                })?;
                let app = self.live.app();
                let (done, result) = if cmd == Command::Approve {
                    let me = self.live.user_id().to_owned();
                    ("approved", app.confirm_pc(&auth, &token, &me).await)
                } else {
                    ("denied", app.cancel_pc(&auth, &token).await)
                };
                result.map_err(|e| Failure::new(exit::REFUSED, e.to_string()))?;
                self.screen
                    .show([Line::notice(format!("web login {done}"))]);
            }
            Command::Help => {
                let mut lines: Vec<Line> = COMMANDS
                    .iter()
                    .map(|(usage, what)| Line::notice(format!("  {usage:<28} {what}")))
                    .collect();
                lines.push(Line::notice(
                    "  Plain text goes to the current conversation; start with // to send a slash.",
                ));
                lines.push(Line::notice(
                    "  End a line with \\ (or press Alt-Enter) to write several lines; Tab completes; Ctrl-C clears the line; Ctrl-D leaves.",
                ));
                self.screen.show(lines);
            }
            Command::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    /// `/to`: switch, and show unread messages under a marker, then mark them read.
    async fn open_conversation(&mut self, conv: Conversation) -> anyhow::Result<()> {
        self.view.switch(conv.clone());
        let label = self.view.label(&conv);
        // Pages end at a byte budget as well as the limit: follow `more`.
        let mut before = Value::Null;
        let mut unread = 0;
        for _ in 0..10 {
            let page = self
                .request(json!({"op": "conversations", "limit": 500, "before": before}))
                .await?;
            let list = page["conversations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(c) = list.iter().find(|c| {
                serde_json::from_value::<Conversation>(c["conv"].clone()).ok() == Some(conv.clone())
            }) {
                unread = c["unread"].as_u64().unwrap_or(0) as u32;
                break;
            }
            match list.last() {
                Some(last) if page["more"] == true => before = last["lastMessage"]["msgId"].clone(),
                _ => break,
            }
        }
        if unread == 0 {
            self.screen.show([Line::notice(format!(
                "talking to {label} (/history for earlier messages)"
            ))]);
            return Ok(());
        }
        let reply = self
            .request(json!({"op": "history", "conv": conv, "limit": (unread + 3).min(200)}))
            .await?;
        let lines = self
            .view
            .render_history(&conv, &reply, unread)
            .map_err(user_error)?;
        self.screen.show(lines);
        if let Some(last) = reply["messages"][0]["msgId"].as_str() {
            let last = last.to_owned();
            self.mark_read(&conv, &last).await?;
        }
        Ok(())
    }

    async fn mark_read(&mut self, conv: &Conversation, up_to: &str) -> anyhow::Result<()> {
        self.request(json!({"op": "read", "conv": conv, "upTo": up_to}))
            .await?;
        self.view.clear_unread(conv);
        Ok(())
    }

    /// Uploads a PNG or JPEG to `/media`; returns the image message content.
    async fn upload_image(&mut self, path: &std::path::Path) -> anyhow::Result<Value> {
        let bytes = std::fs::read(path)
            .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
        let format = image::guess_format(&bytes)
            .map_err(|_| user_error(format!("{} is not a PNG or JPEG picture", path.display())))?;
        let content_type = match format {
            image::ImageFormat::Png => "image/png",
            image::ImageFormat::Jpeg => "image/jpeg",
            _ => {
                return Err(user_error(format!(
                    "{} is a {format:?} picture; send PNG or JPEG",
                    path.display()
                )));
            }
        };
        let (w, h) = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format)
            .into_dimensions()
            .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
        let size = bytes.len();
        let token = self.live.im_token().to_owned();
        let answer = self
            .live
            .app()
            .upload(&token, content_type, bytes)
            .await
            .map_err(|e| match e {
                ClientError::Status { message, .. } => {
                    Failure::new(exit::REFUSED, format!("upload refused: {message}")).into()
                }
                other => anyhow::Error::from(other),
            })?;
        let url = answer["url"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the upload answer has no url: {answer}"))?;
        Ok(json!({"type": "image", "url": url, "w": w, "h": h, "size": size}))
    }
}
