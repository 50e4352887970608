//! What the stack tells about itself: the Prometheus metrics and the change
//! signal live dev views wait on. Owned by the stack (`server::start`) and
//! handed to both servers, so each counts its own events.

use std::sync::Arc;

use crate::activity::Activity;
use crate::metrics::Metrics;

#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    /// Bumped when a connection comes or goes, or messages are stored.
    pub activity: Arc<Activity>,
}

impl Telemetry {
    /// Telemetry whose metrics carry `node="NAME"` (a cluster's node).
    pub fn for_node(node: &str) -> Self {
        Self {
            metrics: Arc::new(Metrics::for_node(node)),
            activity: Default::default(),
        }
    }
}
