//! imctl: a local development stack for instant-messaging apps.
//!
//! A tour of the crate:
//! - [`server`] starts the whole stack in one process; `imctl serve` and the
//!   tests both go through it.
//! - [`app_server`] is the Wildfire-compatible login API (SMS and web QR
//!   login), the dev API under `/_dev` and the web page.
//! - [`broker`] will carry the WebSocket chat.
//! - [`store`] owns the SQLite database; no SQL lives anywhere else.
//! - [`wire`] holds every type that crosses the network. It does no I/O.
//! - [`client`] speaks the HTTP API for the CLI (`simulate`) and the tests.
//! - [`cmd`] is the command line: one module per subcommand.

pub mod app_server;
pub mod bench;
pub mod broker;
pub mod client;
pub mod cmd;
pub mod config;
pub mod metrics;
pub mod qr_image;
pub mod server;
pub mod store;
pub mod token;
pub mod wire;
