//! imctl: a local development stack for instant-messaging apps.
//!
//! A tour of the crate:
//! - [`server`] starts the whole stack in one process; `imctl serve` and the
//!   tests both go through it.
//! - [`app_server`] is the Wildfire-compatible login API (SMS and web QR
//!   login), the dev API under `/_dev` and the built-in web client.
//! - [`broker`] carries the WebSocket chat.
//! - [`store`] owns the SQLite database; no SQL lives anywhere else.
//! - [`wire`] holds every type that crosses the network, and the ids and
//!   names every layer agrees on (`wire::ids`). It does no I/O.
//! - [`client`] speaks the HTTP and WebSocket APIs for the CLI and the tests.
//! - [`http`] is what both servers share: the Wildfire envelope, CORS, the
//!   accept loop and the host of the URLs handed to clients.
//! - [`telemetry`] is the metrics and the change signal, shared by both servers.
//! - [`config`] is `imctl serve`'s options and the `imctl.toml` file.
//! - [`cmd`] is the command line: one module per subcommand.
//! - [`pg_local`] starts a throwaway PostgreSQL server for tests and clusters.

pub mod activity;
pub mod app_server;
pub mod bench;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod fault;
pub mod files;
pub mod http;
pub mod metrics;
pub mod nats_local;
pub mod openapi;
pub mod pg_local;
pub mod port_owner;
pub mod qr_image;
pub mod rlimit;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod wire;
