//! The alarm event, and the clock alarms are set against.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::__private::exports::dohost::object::alarm_handler::AlarmInfo as WitAlarmInfo;

/// About one delivery of the object's alarm, passed to
/// [`DurableObject::alarm`](crate::DurableObject::alarm).
///
/// Alarms are delivered at least once: if the handler fails, the host retries with exponential
/// backoff (2 s, 4 s, 8 s, ...) at most 6 times. These fields let the handler tell a retry from
/// a first delivery, e.g. to give up on work that keeps failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmInfo {
    /// 0 for the first delivery, then 1 to 6 for the retries after failures.
    pub retry_count: u32,
    /// Whether an earlier delivery of this alarm failed.
    pub is_retry: bool,
}

impl From<WitAlarmInfo> for AlarmInfo {
    fn from(info: WitAlarmInfo) -> Self {
        AlarmInfo {
            retry_count: info.retry_count,
            is_retry: info.is_retry,
        }
    }
}

/// The wall-clock time in milliseconds since the Unix epoch: the unit of
/// [`Storage::set_alarm`](crate::Storage::set_alarm), so that an alarm in a minute is
/// `set_alarm(now_ms() + 60_000)`.
///
/// Reads the host's clock through WASI. A clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2024_in_milliseconds() {
        // 2024-01-01T00:00:00Z: a clock in seconds, or a broken one, would read far less.
        assert!(now_ms() > 1_704_067_200_000);
    }

    #[test]
    fn alarm_info_converts_from_the_wit_record() {
        let info = AlarmInfo::from(WitAlarmInfo {
            retry_count: 2,
            is_retry: true,
        });
        assert_eq!(
            info,
            AlarmInfo {
                retry_count: 2,
                is_retry: true
            }
        );
    }
}
