//! Where the chat's lines go: the terminal above the prompt (coloured by
//! style), or plain stdout for scripts, as text or JSON.

use serde_json::json;

use crate::client::chat_view::{Line, Style};

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
    pub(super) fn show(&mut self, lines: impl IntoIterator<Item = Line>) {
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
