//! Wire types shared by the servers, the CLI and the tests. No I/O here.

pub mod cluster;
pub mod fault;
pub mod http;
pub mod ids;
pub mod json;
pub mod limits;
pub mod snapshot;
pub mod ws;
