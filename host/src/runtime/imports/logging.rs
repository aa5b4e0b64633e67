//! `dohost:object/logging`: guest log lines into the host's log, under the instance's bucket. The
//! same in 0.2.0 and 0.3.0.

use crate::runtime::limits::truncate_line;
use crate::runtime::state::HostState;
use std::time::Instant;

macro_rules! logging_host {
    ($version:ident) => {
        impl crate::runtime::bindings::$version::dohost::object::logging::Host for HostState {
            fn log(
                &mut self,
                level: crate::runtime::bindings::$version::dohost::object::logging::Level,
                message: String,
            ) {
                use crate::runtime::bindings::$version::dohost::object::logging;
                self.log_line(
                    match level {
                        logging::Level::Trace => tracing::Level::TRACE,
                        logging::Level::Debug => tracing::Level::DEBUG,
                        logging::Level::Info => tracing::Level::INFO,
                        logging::Level::Warn => tracing::Level::WARN,
                        logging::Level::Error => tracing::Level::ERROR,
                    },
                    message,
                )
            }
        }
    };
}

logging_host!(v0_2);
logging_host!(v0_3);

impl HostState {
    fn log_line(&mut self, level: tracing::Level, message: String) {
        use tracing::Level;
        // Lines the host's filter drops anyway cost nothing and spend no budget.
        let enabled = match level {
            Level::TRACE => tracing::enabled!(target: "dohost::guest", Level::TRACE),
            Level::DEBUG => tracing::enabled!(target: "dohost::guest", Level::DEBUG),
            Level::INFO => tracing::enabled!(target: "dohost::guest", Level::INFO),
            Level::WARN => tracing::enabled!(target: "dohost::guest", Level::WARN),
            _ => tracing::enabled!(target: "dohost::guest", Level::ERROR),
        };
        let tailed = self.log.tail.watched();
        if !(enabled || tailed) || !self.log.admit(Instant::now()) {
            return;
        }
        let message = truncate_line(message);
        let ns = self.identity.namespace.as_str();
        if tailed {
            let fields = serde_json::json!({ "level": level.as_str(), "message": message });
            self.log.tail.send("log", ns, &self.identity.name, fields);
        }
        if !enabled {
            return;
        }
        let id = self.identity.id.to_hex();
        let id = &id[..16];
        match level {
            Level::TRACE => tracing::trace!(target: "dohost::guest", ns, id, "{message}"),
            Level::DEBUG => tracing::debug!(target: "dohost::guest", ns, id, "{message}"),
            Level::INFO => tracing::info!(target: "dohost::guest", ns, id, "{message}"),
            Level::WARN => tracing::warn!(target: "dohost::guest", ns, id, "{message}"),
            _ => tracing::error!(target: "dohost::guest", ns, id, "{message}"),
        }
    }
}
