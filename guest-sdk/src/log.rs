//! Writing to the host's log.
//!
//! Lines are tagged by the host with the object's namespace and id. Standard output and standard
//! error of an object are discarded, so these functions are the way to say something.

use crate::__private::shared::logging::{Level, log};

/// Writes `message` at level trace: detail normally filtered out.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message.as_ref());
}

/// Writes `message` at level debug.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}

/// Writes `message` at level info.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}

/// Writes `message` at level warn: something unexpected that the object handled.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message.as_ref());
}

/// Writes `message` at level error: something that failed. The SDK also logs panics here.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
