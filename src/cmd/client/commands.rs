//! The chat's `/commands`: each asks the broker (or the app-server) and
//! shows the answer.

use super::controller::{Chat, Flow, refused, user_error};
use crate::client::ClientError;
use crate::client::app::exit;
use crate::client::chat_view::{self, COMMANDS, Command, Line, render};
use crate::cmd::Failure;
use crate::wire::ws::{
    Content, ConvType, Conversation, ConversationsReq, FriendAnswerReq, FriendRequestReq,
    GroupCreateReq, GroupMembersReq, GroupReq, HistoryReq, PresenceReq, ProfileGetReq,
    ProfileUpdateReq, ReadReq, Reply, Request,
};

/// A reply of another kind than the request asks for.
fn wrong_reply(op: &str) -> anyhow::Error {
    anyhow::anyhow!("the broker answered {op} with a reply of another kind")
}

fn history(conv: &Conversation, limit: u32) -> Request {
    Request::History(HistoryReq {
        conv: conv.clone(),
        before: None,
        limit: Some(limit),
    })
}

impl Chat {
    async fn request(&mut self, request: Request) -> anyhow::Result<Reply> {
        self.live.request(&request).await.map_err(refused)
    }

    pub(super) async fn command(&mut self, cmd: Command) -> anyhow::Result<Flow> {
        match cmd {
            Command::To(target) => {
                let conv = self.resolve(&target).await?;
                self.open_conversation(conv).await?;
            }
            Command::Msg(target, text) => {
                let conv = self.resolve(&target).await?;
                self.send(conv, Content::Text { text }).await?;
            }
            Command::History(n) => {
                let conv = self.view.require_current().map_err(user_error)?;
                let Reply::History { messages, more } = self.request(history(&conv, n)).await?
                else {
                    return Err(wrong_reply("history"));
                };
                let lines = self.view.render_history(&conv, &messages, more, 0);
                self.screen.show(lines);
            }
            Command::Convs => {
                let list = Request::Conversations(ConversationsReq {
                    limit: Some(50),
                    before: None,
                });
                let Reply::Conversations { conversations, .. } = self.request(list).await? else {
                    return Err(wrong_reply("conversations"));
                };
                let lines = self.view.render_convs(&conversations);
                self.screen.show(lines);
            }
            Command::Read => {
                let conv = self.view.require_current().map_err(user_error)?;
                let Reply::History { messages, .. } = self.request(history(&conv, 1)).await? else {
                    return Err(wrong_reply("history"));
                };
                match messages.into_iter().next() {
                    Some(newest) => {
                        let last = newest.msg_id;
                        self.mark_read(&conv, &last).await?;
                        let label = self.view.label(&conv);
                        self.screen
                            .show([Line::notice(format!("{label}: read up to {last}"))]);
                    }
                    None => self.screen.show([Line::notice("nothing to read here")]),
                }
            }
            Command::Who => {
                let Reply::FriendList { friends } = self.request(Request::FriendList).await? else {
                    return Err(wrong_reply("friend.list"));
                };
                let users: Vec<String> =
                    friends.iter().map(|f| f.profile.user_id.clone()).collect();
                let presence = if users.is_empty() {
                    Vec::new()
                } else {
                    let ask = Request::Presence(PresenceReq { users: Some(users) });
                    let Reply::Presence { users, .. } = self.request(ask).await? else {
                        return Err(wrong_reply("presence"));
                    };
                    users
                };
                let lines = render::who(&friends, &presence);
                self.screen.show(lines);
            }
            Command::GroupCreate { name, members } => {
                let create = Request::GroupCreate(GroupCreateReq {
                    name: name.clone(),
                    members,
                });
                let Reply::GroupCreate { group } = self.request(create).await? else {
                    return Err(wrong_reply("group.create"));
                };
                self.view.add_group(&group.id, &group.name);
                let id = group.id;
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
                self.request(Request::GroupAdd(GroupMembersReq {
                    group: conv.target.clone(),
                    members: members.clone(),
                }))
                .await?;
                let label = self.view.label(&conv);
                self.screen.show([Line::notice(format!(
                    "added {} to {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupRemove(members) => {
                let conv = self.view.require_group().map_err(user_error)?;
                self.request(Request::GroupRemove(GroupMembersReq {
                    group: conv.target.clone(),
                    members: members.clone(),
                }))
                .await?;
                let label = self.view.label(&conv);
                self.screen.show([Line::notice(format!(
                    "removed {} from {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupLeave => {
                let conv = self.view.require_group().map_err(user_error)?;
                self.request(Request::GroupLeave(GroupReq {
                    group: conv.target.clone(),
                }))
                .await?;
                let label = self.view.label(&conv);
                self.view.left_group(&conv.target);
                self.screen.show([Line::notice(format!(
                    "you left {label}; /to picks the next conversation"
                ))]);
            }
            Command::GroupInfo => {
                let conv = self.view.require_group().map_err(user_error)?;
                let info = Request::GroupInfo(GroupReq {
                    group: conv.target.clone(),
                });
                let Reply::GroupInfo { group } = self.request(info).await? else {
                    return Err(wrong_reply("group.info"));
                };
                let lines = render::group_info(&group);
                self.screen.show(lines);
            }
            Command::FriendAdd { user, remark } => {
                let ask = Request::FriendRequest(FriendRequestReq {
                    target: user.clone(),
                    remark,
                });
                let Reply::FriendRequest { friends, .. } = self.request(ask).await? else {
                    return Err(wrong_reply("friend.request"));
                };
                let text = if friends {
                    format!("{user} had asked you too: you are friends now")
                } else {
                    format!("asked {user} to be your friend")
                };
                self.screen.show([Line::notice(text)]);
            }
            Command::FriendAccept(user) => {
                self.request(Request::FriendAccept(FriendAnswerReq {
                    from: user.clone(),
                }))
                .await?;
                self.screen
                    .show([Line::notice(format!("you and {user} are friends now"))]);
            }
            Command::FriendReject(user) => {
                self.request(Request::FriendReject(FriendAnswerReq {
                    from: user.clone(),
                }))
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
                let me = Request::ProfileGet(ProfileGetReq {
                    users: None,
                    user_id: None,
                });
                let Reply::ProfileGet { users, .. } = self.request(me).await? else {
                    return Err(wrong_reply("profile.get"));
                };
                let u = users.into_iter().next();
                let u = u.as_ref();
                self.screen.show([Line::notice(format!(
                    "{} ({}), mobile {}, portrait {}",
                    u.map_or("?", |u| &u.user_id),
                    chat_view::one_line(u.map_or("", |u| &u.display_name)),
                    u.and_then(|u| u.mobile.clone().flatten())
                        .as_deref()
                        .unwrap_or("-"),
                    u.and_then(|u| u.portrait.as_deref()).unwrap_or("-")
                ))]);
            }
            Command::Me(Some(name)) => {
                self.request(Request::ProfileUpdate(ProfileUpdateReq {
                    display_name: Some(name.clone()),
                    portrait: None,
                }))
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
        let mut before = None;
        let mut unread = 0;
        for _ in 0..10 {
            let page = Request::Conversations(ConversationsReq {
                limit: Some(500),
                before: before.take(),
            });
            let Reply::Conversations {
                conversations,
                more,
            } = self.request(page).await?
            else {
                return Err(wrong_reply("conversations"));
            };
            if let Some(c) = conversations.iter().find(|c| c.conv == conv) {
                unread = u32::try_from(c.unread).unwrap_or(0);
                break;
            }
            match conversations.last() {
                Some(last) if more => before = Some(last.last_message.msg_id.clone()),
                _ => break,
            }
        }
        if unread == 0 {
            self.screen.show([Line::notice(format!(
                "talking to {label} (/history for earlier messages)"
            ))]);
            return Ok(());
        }
        let Reply::History { messages, more } =
            self.request(history(&conv, (unread + 3).min(200))).await?
        else {
            return Err(wrong_reply("history"));
        };
        let lines = self.view.render_history(&conv, &messages, more, unread);
        self.screen.show(lines);
        if let Some(newest) = messages.first() {
            let last = newest.msg_id.clone();
            self.mark_read(&conv, &last).await?;
        }
        Ok(())
    }

    async fn mark_read(&mut self, conv: &Conversation, up_to: &str) -> anyhow::Result<()> {
        self.request(Request::Read(ReadReq {
            conv: conv.clone(),
            up_to: up_to.to_owned(),
        }))
        .await?;
        self.view.clear_unread(conv);
        Ok(())
    }

    /// Uploads a PNG or JPEG to `/media`; returns the image message content.
    async fn upload_image(&mut self, path: &std::path::Path) -> anyhow::Result<Content> {
        let bytes = std::fs::read(path)
            .map_err(|e| user_error(format!("cannot read {}: {e}", path.display())))?;
        let (format, w, h) = crate::qr_image::dimensions(&bytes)
            .map_err(|e| user_error(format!("{} is {e}", path.display())))?;
        let content_type = format.content_type();
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
        Ok(Content::Image {
            url: url.to_owned(),
            w,
            h,
            size: size as u64,
        })
    }
}
