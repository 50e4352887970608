//! The terminal chat's view, with neither a terminal nor a socket: `input`
//! parses what the user types, `state` ([`ChatView`]) is what the chat
//! knows, `render` draws it as lines. `cmd::client` wires it to rustyline
//! and to `client::live`; the unit tests drive it directly.

pub mod input;
pub mod render;
pub mod state;

pub use input::{COMMANDS, Command, Input, Target, command_words, parse_input};
pub use render::{Line, Style, one_line, printable};
pub use state::{ChatView, Outgoing};

#[cfg(test)]
fn single(target: &str) -> crate::wire::ws::Conversation {
    crate::wire::ws::Conversation {
        kind: crate::wire::ws::ConvType::Single,
        target: target.into(),
    }
}
