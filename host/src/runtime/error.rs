//! Why an event failed.

use std::time::Duration;

/// Why an event failed. Every variant discards the event's writes and the instance.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventError {
    #[error("the object exceeded its CPU limit ({0} ms)")]
    CpuLimit(u64),
    #[error("the object exceeded its memory limit ({0} MiB)")]
    MemoryLimit(usize),
    #[error("the object overflowed its stack")]
    StackOverflow,
    #[error("the object exceeded its time limit ({0:?} of wall-clock time)")]
    TimeLimit(Duration),
    #[error("the object returned a response body over the limit ({limit} bytes): {size} bytes")]
    ResponseTooLarge { size: usize, limit: usize },
    #[error("the object trapped: {0}")]
    Trap(String),
    #[error("the object failed: {0}")]
    Failed(String),
    #[error("the object could not be started: {0}")]
    Instantiate(String),
    #[error("the host is overloaded: {0}")]
    Overloaded(String),
}

impl EventError {
    /// Whether the event was stopped for exceeding one of the host's limits (as opposed to
    /// failing on its own, or trapping).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            EventError::CpuLimit(_)
                | EventError::MemoryLimit(_)
                | EventError::StackOverflow
                | EventError::TimeLimit(_)
                | EventError::ResponseTooLarge { .. }
        )
    }

    /// A stable, machine-readable name for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::CpuLimit(_) => "cpu_limit_exceeded",
            EventError::MemoryLimit(_) => "memory_limit_exceeded",
            EventError::StackOverflow => "stack_overflow",
            EventError::TimeLimit(_) => "time_limit_exceeded",
            EventError::ResponseTooLarge { .. } => "response_too_large",
            EventError::Trap(_) => "trap",
            EventError::Failed(_) => "object_error",
            EventError::Instantiate(_) => "instantiate_failed",
            EventError::Overloaded(_) => "overloaded",
        }
    }
}
