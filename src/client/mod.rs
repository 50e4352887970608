//! Client side of imctl's APIs, shared by the CLI and the tests.

pub mod app;
pub mod chat;
pub mod live;
pub mod login;
pub mod profiles;
pub mod session;

pub use app::{AppClient, ClientError};
