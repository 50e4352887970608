//! `imctl client`: a terminal chat that runs the whole client flow (login,
//! route, connect, sync), interactively with rustyline, or scripted
//! (`--send`, `--listen`, commands on stdin) for CI.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::time::Instant;

use super::Failure;
use crate::client::AppClient;
use crate::client::app::exit;
use crate::client::chat_view::{ChatView, Target};
use crate::client::live::{Event, Live, Relogin};
use crate::client::login;
use crate::client::profiles::{ClientSession, ClientSessions, default_state_dir};
use crate::store::now_ms;
use crate::wire::ws::{Content, InboxEntry, Push};
use controller::{Chat, Flow};
use screen::Screen;

mod commands;
mod controller;
mod screen;
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
        let (out, _) = chat
            .view
            .compose(conv, Content::Text { text: text.clone() });
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
    let view = ChatView::new(&me);
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
            Event::Push(Push::Msg { seq, message }) => vec![InboxEntry { seq, message }],
            Event::Unreadable { op, seq, error } if op == "msg" => {
                eprintln!("unreadable message from the server: {error}");
                // Still counts as seen, or it would hold the saved seq back for good.
                live.seen(seq).await;
                Vec::new()
            }
            Event::Push(_) | Event::Error { .. } | Event::Unreadable { .. } => Vec::new(),
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
                print_listened(&view, &entry, args.json);
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

fn print_listened(view: &ChatView, entry: &InboxEntry, json: bool) {
    let m = &entry.message;
    let conv = view.conv_of(m);
    if json {
        println!(
            "{}",
            json!({"seq": entry.seq, "msgId": m.msg_id, "conv": conv, "from": m.from, "content": m.content, "serverTime": m.server_time, "clientMsgId": m.client_msg_id})
        );
    } else {
        println!("{}", view.message_line(&conv, m).text);
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
