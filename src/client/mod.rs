//! Client side of imctl's APIs, shared by the CLI and the tests.

pub mod app;
pub mod chat;
pub mod chat_view;
pub mod live;
pub mod login;
pub mod profiles;

pub use app::{AppClient, ClientError};
