//! The interactive terminal: rustyline reads lines on its own thread (it
//! blocks), while the async side handles them and the connection. Pushes
//! are printed above the prompt through rustyline's external printer, so a
//! half-typed line survives them.

use std::cell::Cell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{
    Cmd, CompletionType, Config, Editor, EventHandler, Helper, Highlighter, KeyCode, KeyEvent,
    Modifiers,
};
use tokio::sync::mpsc;

use super::{Args, Chat, Flow, Screen, open};
use crate::client::chat_view::{Line, command_words};
use crate::client::live::Wait;
use crate::client::profiles::default_state_dir;

/// From the line-reading thread to the async side.
enum Ui {
    Line(String),
    /// The user is typing a message (rate-limited).
    Typing,
    Eof,
    Failed(String),
}

/// What the line-reading thread shows: the prompt and the completion words.
#[derive(Default)]
struct Shared {
    prompt: String,
    words: Vec<String>,
}

type SharedState = Arc<Mutex<Shared>>;

/// How often "typing" is sent while the user types.
const TYPING_EVERY: Duration = Duration::from_secs(3);

#[derive(Helper, Highlighter)]
struct ChatHelper {
    shared: SharedState,
    ui: mpsc::Sender<Ui>,
    last_typing: Cell<Option<Instant>>,
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
        let word = &before[start..];
        let first = before.split_whitespace().next().unwrap_or("");
        let second_word = start > 0 && before[..start].split_whitespace().count() == 1;
        let pool: Vec<String> = if start == 0 && word.starts_with('/') {
            command_words().into_iter().map(str::to_owned).collect()
        } else if second_word && first == "/group" {
            ["create", "add", "remove", "leave", "info"]
                .map(str::to_owned)
                .to_vec()
        } else if second_word && first == "/friend" {
            ["add", "accept", "reject"].map(str::to_owned).to_vec()
        } else {
            self.shared.lock().expect("shared state lock").words.clone()
        };
        let lower = word.to_lowercase();
        let mut found: Vec<String> = pool
            .into_iter()
            .filter(|w| w.to_lowercase().starts_with(&lower))
            .map(|w| format!("{w} "))
            .collect();
        found.sort();
        found.dedup();
        Ok((start, found))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;

    /// Called as the line changes: a cheap place to notice typing.
    fn hint(&self, line: &str, _pos: usize, _ctx: &rustyline::Context<'_>) -> Option<String> {
        if !line.trim().is_empty()
            && !line.starts_with('/')
            && self
                .last_typing
                .get()
                .is_none_or(|t| t.elapsed() >= TYPING_EVERY)
        {
            self.last_typing.set(Some(Instant::now()));
            let _ = self.ui.try_send(Ui::Typing);
        }
        None
    }
}

impl Validator for ChatHelper {
    /// A trailing backslash continues the message on a new line.
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        if ctx.input().ends_with('\\') {
            Ok(ValidationResult::Incomplete)
        } else {
            Ok(ValidationResult::Valid(None))
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (live, first) = open(&args, true).await?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let history = state_dir.join(format!(
        "history-{}.txt",
        live.user_id()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let shared = SharedState::default();
    let (ui_tx, mut ui_rx) = mpsc::channel::<Ui>(64);
    let (done_tx, done_rx) = std_mpsc::channel::<()>();

    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .max_history_size(5000)?
        .build();
    let mut rl: Editor<ChatHelper, FileHistory> = Editor::with_config(config)?;
    rl.set_helper(Some(ChatHelper {
        shared: shared.clone(),
        ui: ui_tx.clone(),
        last_typing: Cell::new(None),
    }));
    rl.bind_sequence(
        KeyEvent(KeyCode::Enter, Modifiers::ALT),
        EventHandler::Simple(Cmd::Newline),
    );
    if history.exists() {
        let _ = rl.load_history(&history);
    } else {
        // Typed messages are private: create the file readable by its owner only.
        let _ = crate::client::profiles::create_private(&history);
    }
    let printer = rl.create_external_printer()?;
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut chat = Chat::new(
        live,
        Screen::Term {
            printer: Box::new(printer),
            color,
        },
        false,
    );
    chat.prime().await;
    let me = chat.live.user_id().to_owned();
    chat.screen.show([Line::notice(format!(
        "logged in as {me} on {} — /to USER starts a conversation, /help lists commands, Tab completes",
        chat.live.app().base()
    ))]);
    chat.on_event(first).await;
    if let Some(to) = &args.to
        && let Err(e) = chat.handle_line(&format!("/to {to}")).await
    {
        chat.screen.show([Line::error(format!("{e:#}"))]);
    }
    publish(&chat, &shared);

    let saved_termios = termios::save();
    let reader_shared = shared.clone();
    let reader = std::thread::spawn(move || read_lines(rl, reader_shared, ui_tx, done_rx, history));
    let outcome = loop {
        tokio::select! {
            ui = ui_rx.recv() => match ui {
                Some(Ui::Line(line)) => {
                    let flow = match chat.handle_line(&line).await {
                        Ok(f) => f,
                        Err(e) => {
                            chat.screen.show([Line::error(format!("{e:#}"))]);
                            Flow::Continue
                        }
                    };
                    publish(&chat, &shared);
                    if flow == Flow::Quit {
                        break Ok(());
                    }
                    let _ = done_tx.send(());
                }
                Some(Ui::Typing) => chat.typing().await,
                Some(Ui::Eof) | None => break Ok(()),
                Some(Ui::Failed(e)) => break Err(anyhow::anyhow!("the terminal failed: {e}")),
            },
            wait = chat.live.wait() => {
                // A reconnect runs to its end here, outside the select.
                let event = match wait {
                    Wait::Event(e) => Ok(e),
                    Wait::ReconnectDue => chat.live.reconnect().await,
                };
                match event {
                    Ok(event) => {
                        chat.on_event(event).await;
                        publish(&chat, &shared);
                    }
                    Err(e) => break Err(e),
                }
            },
        }
    };
    drop(done_tx);
    let queued = chat.live.queued();
    if queued > 0 {
        chat.screen.show([Line::error(format!(
            "{queued} queued message{} not sent: the connection never came back",
            if queued == 1 { " was" } else { "s were" }
        ))]);
    }
    chat.live.close().await;
    if reader.is_finished() {
        let _ = reader.join();
    } else {
        // Still inside readline (we are leaving because of the server): put
        // the terminal back the way we found it, bracketed paste off too.
        termios::restore(saved_termios);
        print!("\x1b[?2004l");
        println!();
    }
    outcome
}

/// Shares the prompt and completion words with the line-reading thread.
fn publish(chat: &Chat, shared: &SharedState) {
    let mut s = shared.lock().expect("shared state lock");
    *s = Shared {
        prompt: chat.view.prompt(),
        words: chat.view.completion_words(),
    };
}

/// The line-reading thread: one readline at a time; after each line, waits
/// until the async side has handled it so the next prompt is current.
fn read_lines(
    mut rl: Editor<ChatHelper, FileHistory>,
    shared: SharedState,
    ui: mpsc::Sender<Ui>,
    done: std_mpsc::Receiver<()>,
    history: PathBuf,
) {
    loop {
        let prompt = shared.lock().expect("shared state lock").prompt.clone();
        match rl.readline(&prompt) {
            Ok(line) => {
                let line = line.replace("\\\n", "\n");
                if !line.trim().is_empty() {
                    let _ = rl.add_history_entry(line.as_str());
                    let _ = rl.append_history(&history);
                }
                if ui.blocking_send(Ui::Line(line)).is_err() || done.recv().is_err() {
                    break;
                }
            }
            // Ctrl-C clears the line.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                let _ = ui.blocking_send(Ui::Eof);
                break;
            }
            Err(e) => {
                let _ = ui.blocking_send(Ui::Failed(e.to_string()));
                break;
            }
        }
    }
}

/// Saving and restoring the terminal's mode, for leaving while rustyline
/// still holds it in raw mode.
#[cfg(unix)]
mod termios {
    pub struct Saved(Option<libc::termios>);

    pub fn save() -> Saved {
        // SAFETY: tcgetattr writes into the zeroed struct we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            Saved((libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0).then_some(t))
        }
    }

    pub fn restore(saved: Saved) {
        if let Some(t) = saved.0 {
            // SAFETY: restores attributes read by tcgetattr on the same fd.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            }
        }
    }
}

#[cfg(not(unix))]
mod termios {
    pub struct Saved;
    pub fn save() -> Saved {
        Saved
    }
    pub fn restore(_: Saved) {}
}
