//! `imctl client`: a terminal chat that runs the whole client flow (login,
//! route, connect, sync), interactively with rustyline, or scripted
//! (`--send`, `--listen`, commands on stdin) for CI.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Failure;
use crate::client::app::exit;
use crate::client::chat::ChatError;
use crate::client::live::{Event, Live, Relogin};
use crate::client::login;
use crate::client::profiles::{ClientSession, ClientSessions, default_state_dir};
use crate::client::session::{
    COMMANDS, Command, Input, Line, Outgoing, Session, Style, Target, parse_input,
};
use crate::client::{AppClient, ClientError};
use crate::store::now_ms;
use crate::wire::ws::{ConvType, Conversation, InboxEntry};

mod terminal;

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Log in as this user: a user id (alice) or a mobile (--mobile and --qr take precedence)
    #[arg(long, env = "IMCTL_USER", required_unless_present_any = ["qr", "mobile"])]
    pub user: Option<String>,

    /// Log in by this mobile number
    #[arg(long)]
    pub mobile: Option<String>,

    /// Log in like a web or desktop client: show a QR code and wait for a phone
    /// (`imctl simulate approve --latest --as alice`) to approve it
    #[arg(long, conflicts_with_all = ["mobile", "code"])]
    pub qr: bool,

    /// The SMS code to log in with [default: read from the dev outbox]
    #[arg(long)]
    pub code: Option<String>,

    /// Ignore the saved login and log in again
    #[arg(long)]
    pub fresh: bool,

    /// The app-server to log in to
    #[arg(
        long,
        env = "IMCTL_APP_SERVER",
        default_value = "http://127.0.0.1:8888"
    )]
    pub app_server: String,

    /// Connect to this broker WebSocket URL instead of asking /route
    #[arg(long, env = "IMCTL_BROKER", value_name = "WS_URL")]
    pub broker: Option<String>,

    /// Where saved logins and input history live [default: e.g. ~/.local/state/imctl]
    #[arg(long, env = "IMCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Platform number to log in with (7 Linux, 3 Windows, 4 macOS, 5 Web)
    #[arg(long, default_value_t = 7)]
    pub platform: i32,

    /// Start in this conversation (bob or #team)
    #[arg(long, value_name = "USER|#GROUP")]
    pub to: Option<String>,

    /// Send one message, wait for the server's ack, print its msgId, exit
    #[arg(long, num_args = 2, value_names = ["USER|#GROUP", "TEXT"], conflicts_with = "listen")]
    pub send: Option<Vec<String>>,

    /// Print incoming messages (those missed first) until --count or --timeout
    #[arg(long)]
    pub listen: bool,

    /// With --listen: exit 0 after this many messages
    #[arg(long, requires = "listen")]
    pub count: Option<u64>,

    /// With --listen: also print (and count) group notifications
    #[arg(long, requires = "listen")]
    pub notifications: bool,

    /// With --send: how long to wait for the ack [default: 10s].
    /// With --listen: how long to listen [default: forever]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Print JSON (one object per line) instead of text
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Modes:
  interactive   stdin is a terminal: chat, /help lists the commands
  --send        imctl client --user alice --send bob \"hello\"
  --listen      imctl client --user bob --listen --count 1 --json
  stdin script  echo \"/msg bob hi\" | imctl client --user alice
                (each line a message for the current conversation or a command;
                 stops at the first failure with a non-zero exit)

Exit codes:
  0  success
  1  error (see the message)
  2  bad command line
  3  the app-server or broker cannot be reached
  5  the server refused (bad code, banned, not a member, unknown user)
  6  timed out (no ack within --timeout, fewer messages than --count)";

const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages shown from a sync at start; the rest are counted, not printed.
const BACKLOG_SHOWN: usize = 30;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.send.is_some() {
        return send_one(args).await;
    }
    if args.listen {
        return listen(args).await;
    }
    if std::io::stdin().is_terminal() {
        terminal::run(args).await
    } else {
        script(args).await
    }
}

/// Logs in (or reuses the saved login) and connects.
async fn open(args: &Args, sync: bool) -> anyhow::Result<(Live, Event)> {
    let app = AppClient::new(&args.app_server);
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let mut saved = ClientSessions::load(&state_dir)?;
    let timeout = args.timeout.unwrap_or(SEND_TIMEOUT);
    let (session, relogin) = if args.qr {
        let mut session = qr_login(&app, args).await?;
        // Same user on this machine: keep the place in the inbox.
        if let Some(before) = saved.find(app.base(), &session.user_id) {
            session.last_seq = before.last_seq;
        }
        saved.save(session.clone())?;
        (session, Relogin::Qr)
    } else {
        let who = args
            .mobile
            .as_deref()
            .or(args.user.as_deref())
            .expect("clap requires --user, --mobile or --qr");
        let cached = saved.find(app.base(), who).cloned();
        match cached {
            Some(c) if !args.fresh => {
                let relogin = match &c.mobile {
                    Some(m) => Relogin::Sms {
                        mobile: m.clone(),
                        code: args.code.clone(),
                    },
                    None => Relogin::Qr,
                };
                (c, relogin)
            }
            cached => {
                let mobile = login::resolve_mobile(&app, who).await?;
                let (client_id, last_seq) = cached
                    .map(|c| (c.client_id, c.last_seq))
                    .unwrap_or_else(|| (new_client_id(), 0));
                let (result, auth) = login::sms_login(
                    &app,
                    &mobile,
                    args.code.as_deref(),
                    &client_id,
                    args.platform,
                )
                .await?;
                let route_url = login::route_url(&app, result.route_url).await?;
                let session = ClientSession {
                    app_server: app.base().to_owned(),
                    user_id: result.user_id,
                    mobile: Some(mobile.clone()),
                    client_id,
                    platform: args.platform,
                    im_token: result.token,
                    auth_token: Some(auth),
                    route_url,
                    last_seq,
                    saved_at: now_ms(),
                };
                saved.save(session.clone())?;
                (
                    session,
                    Relogin::Sms {
                        mobile,
                        code: args.code.clone(),
                    },
                )
            }
        }
    };
    Live::start(
        app,
        saved,
        session,
        relogin,
        args.broker.clone(),
        timeout,
        sync,
    )
    .await
}

fn new_client_id() -> String {
    format!("imctl-cli-{}", crate::token::random_token(6))
}

/// Shows a login QR on stderr and waits for a phone to approve it.
async fn qr_login(app: &AppClient, args: &Args) -> anyhow::Result<ClientSession> {
    let client_id = new_client_id();
    let pc = app
        .pc_session(&client_id, args.platform, "imctl client")
        .await?;
    let qr_text = pc.qr_text.clone().unwrap_or_else(|| pc.token.clone());
    eprintln!("{}", crate::qr_image::terminal(&qr_text));
    eprintln!("Scan with the app, or from another terminal:");
    eprintln!("  imctl simulate approve --latest --as alice");
    let deadline = Instant::now() + Duration::from_millis(pc.expired.max(0) as u64);
    let (result, auth) = super::wait_for_qr_login(app, &pc.token, deadline).await?;
    let route_url = login::route_url(app, result.route_url).await?;
    Ok(ClientSession {
        app_server: app.base().to_owned(),
        user_id: result.user_id,
        mobile: None,
        client_id,
        platform: args.platform,
        im_token: result.token,
        auth_token: Some(auth),
        route_url,
        last_seq: 0,
        saved_at: now_ms(),
    })
}

/// `--send TARGET TEXT`.
async fn send_one(args: Args) -> anyhow::Result<()> {
    let [to, text] = args.send.as_deref().expect("checked") else {
        unreachable!("clap takes two values");
    };
    let target = Target::parse(to).map_err(|e| Failure::new(exit::ERROR, e))?;
    let timeout = args.timeout.unwrap_or(SEND_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let timed_out = |what: &str| {
        anyhow::Error::from(Failure::new(
            exit::TIMED_OUT,
            format!("{what} within {}", humantime::format_duration(timeout)),
        ))
    };
    let (live, _) = tokio::time::timeout_at(deadline, open(&args, false))
        .await
        .map_err(|_| timed_out("could not log in and connect"))??;
    let mut chat = Chat::new(live, Screen::Plain { json: args.json }, true);
    let sent = tokio::time::timeout_at(deadline, async {
        let conv = chat.resolve(&target).await?;
        let content = json!({"type": "text", "text": text});
        let (out, _) = chat.session.compose(conv, content);
        let ack = chat.deliver(&out).await?;
        Ok::<_, anyhow::Error>((out, ack))
    })
    .await;
    let result = sent.unwrap_or_else(|_| Err(timed_out("no ack from the broker")));
    chat.live.close().await;
    let (out, ack) = result?;
    if args.json {
        println!(
            "{}",
            json!({"msgId": ack.msg_id, "seq": ack.seq, "serverTime": ack.server_time, "conv": out.conv, "clientMsgId": out.client_msg_id, "duplicate": ack.duplicate})
        );
    } else {
        println!("{}", ack.msg_id);
    }
    Ok(())
}

/// `--listen`: incoming messages, those missed first, one per line.
async fn listen(args: Args) -> anyhow::Result<()> {
    let (mut live, first) = open(&args, true).await?;
    let me = live.user_id().to_owned();
    let session = Session::new(&me);
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let want = args.count;
    let mut got = 0u64;
    let mut event = first;
    let result = 'outer: loop {
        let entries: Vec<InboxEntry> = match event {
            Event::Connected { entries, reset, .. } => {
                if reset {
                    eprintln!("the server's data was reset; listening from the start");
                }
                entries
            }
            Event::Push(frame) if frame["op"] == "msg" => {
                match serde_json::from_value::<InboxEntry>(frame.clone()) {
                    Ok(e) => vec![e],
                    Err(e) => {
                        eprintln!("unreadable message from the server: {e}");
                        // Still counts as seen, or it would hold the saved seq back for good.
                        live.seen(frame["seq"].as_i64()).await;
                        Vec::new()
                    }
                }
            }
            Event::Push(_) => Vec::new(),
            Event::Lost { reason, .. } => {
                eprintln!("connection lost ({reason}); reconnecting");
                Vec::new()
            }
            Event::RetryFailed { reason, retry_in } => {
                eprintln!("reconnect failed ({reason}); retrying in {retry_in:?}");
                Vec::new()
            }
        };
        for entry in entries {
            // Stop before entries past --count: they stay unseen for the next run.
            if want.is_some_and(|n| got >= n) {
                break;
            }
            let m = &entry.message;
            if m.from != me && (args.notifications || m.content["type"] != "notification") {
                print_listened(&session, &entry, args.json);
                got += 1;
            }
            live.seen([entry.seq]).await;
        }
        if want.is_some_and(|n| got >= n) {
            break Ok(());
        }
        let forever = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        event = tokio::select! {
            e = live.next() => match e {
                Ok(e) => e,
                Err(e) => break Err(e),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or(forever)) => {
                break 'outer match want {
                    Some(n) => Err(Failure::new(exit::TIMED_OUT, format!("timed out: {got} of {n} messages arrived")).into()),
                    None => Ok(()),
                };
            }
            // Ctrl-C: stop, saving how far we got.
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
    };
    live.close().await;
    result
}

fn print_listened(session: &Session, entry: &InboxEntry, json: bool) {
    let m = &entry.message;
    let conv = session.conv_of(m);
    if json {
        println!(
            "{}",
            json!({"seq": entry.seq, "msgId": m.msg_id, "conv": conv, "from": m.from, "content": m.content, "serverTime": m.server_time, "clientMsgId": m.client_msg_id})
        );
    } else {
        println!("{}", session.message_line(&conv, m).text);
    }
}

/// Commands from a non-terminal stdin, one per line; stops at the first failure.
async fn script(args: Args) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let (live, _) = open(&args, false).await?;
    let mut chat = Chat::new(live, Screen::Plain { json: args.json }, true);
    chat.prime().await;
    let timeout = args.timeout.unwrap_or(SEND_TIMEOUT);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let first = args.to.as_ref().map(|to| format!("/to {to}"));
    let mut result = Ok(());
    let mut next = first;
    loop {
        let line = match next.take() {
            Some(l) => l,
            None => match lines.next_line().await.context("cannot read stdin")? {
                Some(l) => l,
                None => break,
            },
        };
        let handled = tokio::time::timeout(timeout, chat.handle_line(&line))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::new(
                    exit::TIMED_OUT,
                    format!("no answer within {}", humantime::format_duration(timeout)),
                )
                .into())
            });
        match handled {
            Ok(Flow::Quit) => break,
            Ok(Flow::Continue) => {}
            Err(e) => {
                result = Err(e.context(format!("line {line:?}")));
                break;
            }
        }
    }
    chat.live.close().await;
    result
}

/// Where lines go: the terminal above the prompt, or plain stdout.
pub enum Screen {
    Term {
        printer: Box<dyn rustyline::ExternalPrinter + Send>,
        color: bool,
    },
    Plain {
        json: bool,
    },
}

impl Screen {
    fn show(&mut self, lines: impl IntoIterator<Item = Line>) {
        for line in lines {
            match self {
                Screen::Term { printer, color } => {
                    let text = if *color {
                        paint(&line)
                    } else {
                        line.text.clone()
                    };
                    if printer.print(format!("{text}\n")).is_err() {
                        println!("{}", line.text);
                    }
                }
                Screen::Plain { json: true } => {
                    let style = format!("{:?}", line.style).to_lowercase();
                    println!("{}", json!({"style": style, "text": line.text}));
                }
                Screen::Plain { json: false } => match line.style {
                    Style::Error => eprintln!("{}", line.text),
                    _ => println!("{}", line.text),
                },
            }
        }
    }
}

/// ANSI colours by style.
fn paint(line: &Line) -> String {
    let code = match line.style {
        Style::Incoming => return line.text.clone(),
        Style::Outgoing => "36",
        Style::Status => "2",
        Style::Notice => "33",
        Style::Error => "31",
    };
    format!("\x1b[{code}m{}\x1b[0m", line.text)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// A chat session wired to a live connection and a screen.
pub struct Chat {
    pub live: Live,
    pub session: Session,
    pub screen: Screen,
    /// Scripted: a send waits for its ack (reconnecting if need be) instead
    /// of staying queued, so a script's exit status means something.
    strict: bool,
}

fn refused(e: ChatError) -> anyhow::Error {
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

fn user_error(message: String) -> anyhow::Error {
    Failure::new(exit::ERROR, message).into()
}

impl Chat {
    pub fn new(live: Live, screen: Screen, strict: bool) -> Self {
        let session = Session::new(live.user_id());
        Self {
            live,
            session,
            screen,
            strict,
        }
    }

    /// Learns users and groups for completion and `#name` targets.
    pub async fn prime(&mut self) {
        if let Ok(users) = self.live.app().dev_users().await {
            self.session.add_users(users.into_iter().map(|u| u.user_id));
        }
        self.refresh_groups().await;
        if let Ok(friends) = self.live.request(json!({"op": "friend.list"})).await {
            self.session.add_users(
                friends["friends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["userId"].as_str().map(str::to_owned)),
            );
        }
    }

    async fn refresh_groups(&mut self) {
        if let Ok(list) = self.live.request(json!({"op": "group.list"})).await {
            self.session.set_groups(&list);
        }
    }

    /// A target as a conversation; asks the server for groups it does not know yet.
    async fn resolve(&mut self, target: &Target) -> anyhow::Result<Conversation> {
        if let Ok(c) = self.session.resolve(target) {
            return Ok(c);
        }
        self.refresh_groups().await;
        self.session.resolve(target).map_err(user_error)
    }

    /// Sends a composed message and waits for its ack, reconnecting and
    /// resending (same clientMsgId) if the link drops. A refusal is an error.
    async fn deliver(&mut self, out: &Outgoing) -> anyhow::Result<crate::wire::ws::Ack> {
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
    async fn send(&mut self, conv: Conversation, content: Value) -> anyhow::Result<()> {
        let (out, line) = self.session.compose(conv, content);
        self.screen.show([line]);
        let sent = if self.strict {
            self.deliver(&out).await.map(Some)
        } else {
            self.live.send(out.clone()).await.map_err(refused)
        };
        let shown = match sent {
            Ok(Some(ack)) => self.session.on_ack(&out.client_msg_id, &ack),
            Ok(None) => self.session.on_queued(&out),
            Err(e) => {
                self.session.forget(&out.client_msg_id);
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
                        Ok(Some(ack)) => self.session.on_ack(&out.client_msg_id, &ack),
                        Ok(None) => continue,
                        Err(e) => self.session.on_refused(&out.client_msg_id, &e.to_string()),
                    };
                    self.screen.show([line]);
                }
            }
            Event::Push(frame) => {
                if frame["op"] == "msg" {
                    match serde_json::from_value::<InboxEntry>(frame.clone()) {
                        Ok(entry) => self.show_entries(std::slice::from_ref(&entry), 0).await,
                        Err(e) => {
                            self.screen.show([Line::error(format!(
                                "unreadable message from the server: {e}"
                            ))]);
                            // Seen anyway, or it would hold the saved seq back for good.
                            self.live.seen(frame["seq"].as_i64()).await;
                        }
                    }
                    return;
                }
                let lines = self.session.on_push(&frame);
                self.screen.show(lines);
            }
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
                && !self.session.knows_group(&e.message.conv.target)
            {
                new_group = true;
            }
        }
        if new_group {
            self.refresh_groups().await;
        }
        for (i, e) in entries.iter().enumerate() {
            let line = self.session.on_message(&e.message);
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
                let conv = self.session.require_current().map_err(user_error)?;
                self.send(conv, json!({"type": "text", "text": text}))
                    .await?;
            }
            Input::Command(cmd) => return self.command(cmd).await,
        }
        Ok(Flow::Continue)
    }

    async fn request(&mut self, frame: Value) -> anyhow::Result<Value> {
        self.live.request(frame).await.map_err(refused)
    }

    async fn command(&mut self, cmd: Command) -> anyhow::Result<Flow> {
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
                let conv = self.session.require_current().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "history", "conv": conv, "limit": n}))
                    .await?;
                let lines = self
                    .session
                    .render_history(&conv, &reply, 0)
                    .map_err(user_error)?;
                self.screen.show(lines);
            }
            Command::Convs => {
                let reply = self
                    .request(json!({"op": "conversations", "limit": 50}))
                    .await?;
                let lines = self.session.render_convs(&reply);
                self.screen.show(lines);
            }
            Command::Read => {
                let conv = self.session.require_current().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "history", "conv": conv, "limit": 1}))
                    .await?;
                match reply["messages"][0]["msgId"].as_str() {
                    Some(last) => {
                        let last = last.to_owned();
                        self.mark_read(&conv, &last).await?;
                        let label = self.session.label(&conv);
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
                let lines = self.session.render_who(&friends, &presence);
                self.screen.show(lines);
            }
            Command::GroupCreate { name, members } => {
                let reply = self
                    .request(json!({"op": "group.create", "name": name, "members": members}))
                    .await?;
                let group = reply["group"].clone();
                self.session.set_groups(&json!({"groups": [group.clone()]}));
                let id = group["id"].as_str().unwrap_or_default().to_owned();
                let conv = Conversation {
                    kind: ConvType::Group,
                    target: id.clone(),
                };
                self.session.switch(conv);
                self.screen.show([Line::notice(format!(
                    "created #{name} ({id}); you are talking there now"
                ))]);
            }
            Command::GroupAdd(members) => {
                let conv = self.session.require_group().map_err(user_error)?;
                self.request(json!({"op": "group.add", "group": conv.target, "members": members}))
                    .await?;
                let label = self.session.label(&conv);
                self.screen.show([Line::notice(format!(
                    "added {} to {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupRemove(members) => {
                let conv = self.session.require_group().map_err(user_error)?;
                self.request(
                    json!({"op": "group.remove", "group": conv.target, "members": members}),
                )
                .await?;
                let label = self.session.label(&conv);
                self.screen.show([Line::notice(format!(
                    "removed {} from {label}",
                    members.join(", ")
                ))]);
            }
            Command::GroupLeave => {
                let conv = self.session.require_group().map_err(user_error)?;
                self.request(json!({"op": "group.leave", "group": conv.target}))
                    .await?;
                let label = self.session.label(&conv);
                self.session.left_group(&conv.target);
                self.screen.show([Line::notice(format!(
                    "you left {label}; /to picks the next conversation"
                ))]);
            }
            Command::GroupInfo => {
                let conv = self.session.require_group().map_err(user_error)?;
                let reply = self
                    .request(json!({"op": "group.info", "group": conv.target}))
                    .await?;
                let lines = self.session.render_group(&reply);
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
                let conv = self.session.require_current().map_err(user_error)?;
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
                    crate::client::session::one_line(u["displayName"].as_str().unwrap_or("")),
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
                let token = self.session.take_web_login().map_err(user_error)?;
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
        self.session.switch(conv.clone());
        let label = self.session.label(&conv);
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
            .session
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
        self.session.clear_unread(conv);
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

    /// Tells the current conversation that we are typing.
    pub async fn typing(&mut self) {
        if let Some(conv) = self.session.current().cloned() {
            self.live
                .notify(json!({"op": "typing", "conv": conv}))
                .await;
        }
    }
}

#[derive(Default)]
pub struct Shared {
    pub prompt: String,
    pub words: Vec<String>,
}

pub type SharedState = Arc<Mutex<Shared>>;
