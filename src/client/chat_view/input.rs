//! What the user types: plain text for the current conversation, or a
//! `/command` with its arguments.

use std::path::PathBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
