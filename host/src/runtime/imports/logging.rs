//! `dohost:object/logging`: guest log lines into the host's log, under the instance's bucket.

use crate::runtime::bindings::dohost::object::logging;
use crate::runtime::limits::truncate_line;
use crate::runtime::state::HostState;
use std::time::Instant;

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) {
        use tracing::Level;
        // Lines the host's filter drops anyway cost nothing and spend no budget.
        let enabled = match level {
            logging::Level::Trace => tracing::enabled!(target: "dohost::guest", Level::TRACE),
            logging::Level::Debug => tracing::enabled!(target: "dohost::guest", Level::DEBUG),
            logging::Level::Info => tracing::enabled!(target: "dohost::guest", Level::INFO),
            logging::Level::Warn => tracing::enabled!(target: "dohost::guest", Level::WARN),
            logging::Level::Error => tracing::enabled!(target: "dohost::guest", Level::ERROR),
        };
        if !enabled || !self.log.admit(Instant::now()) {
            return;
        }
        let message = truncate_line(message);
        let ns = self.identity.namespace.as_str();
        let id = self.identity.id.to_hex();
        let id = &id[..16];
        match level {
            logging::Level::Trace => tracing::trace!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Debug => tracing::debug!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Info => tracing::info!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Warn => tracing::warn!(target: "dohost::guest", ns, id, "{message}"),
            logging::Level::Error => tracing::error!(target: "dohost::guest", ns, id, "{message}"),
        }
    }
}
