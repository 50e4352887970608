//! What both HTTP servers (app-server and broker) share: the Wildfire
//! envelope (`{code, message, result}` answers, errors, the JSON extractor),
//! the CORS and Origin policy, the accept loop, and the absolute URLs handed
//! to clients. It knows neither server.

pub mod advertise;
pub mod chat;
pub mod cors;
pub mod error;
pub mod extract;
pub mod listen;
pub mod reply;

pub use advertise::{Advertise, PublicUrls};
pub use error::{ApiError, ApiResult};
pub use extract::{ApiJson, ClientAddr};
pub use listen::{ConnLimits, serve};
pub use reply::Reply;
