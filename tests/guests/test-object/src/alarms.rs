//! The alarm endpoints and the alarm handler of the test object.

use dohost_sdk::{AlarmInfo, Request, Response, Result, Storage, now_ms};
use serde_json::json;

use crate::{append, number_param, stored_list};

/// How many deliveries fail before one succeeds (a number; absent means 0).
const FAIL_TIMES: &str = "alarm-fail-times";

/// Every successful delivery, a JSON list: it commits with the delivery, so a successful alarm
/// delivered twice shows as two entries with the same due time.
const LOG: &str = "alarm-log";

/// Milliseconds after a successful delivery to set the next alarm at, once.
const REARM_IN: &str = "alarm-rearm-in";

/// `POST /alarm/set?in=MS` (from now) or `?at=MS` (absolute): sets the alarm, answers
/// `{"alarm": at}`.
pub fn set(storage: Storage, req: &Request) -> Result<Response> {
    let at = match (
        number_param::<u64>(req, "in")?,
        number_param::<u64>(req, "at")?,
    ) {
        (Some(delay), None) => now_ms() + delay,
        (None, Some(at)) => at,
        _ => return Err("give exactly one of the query parameters `in` and `at`".into()),
    };
    storage.set_alarm(at)?;
    Response::from_json(&json!({ "alarm": at }))
}

/// `GET /alarm`: `{"alarm": ms}`, or `{"alarm": null}` when none is set.
pub fn get(storage: Storage) -> Result<Response> {
    Response::from_json(&json!({ "alarm": storage.get_alarm()? }))
}

/// `POST /alarm/fail-times?n=N`: the next deliveries with a retry count below N fail.
pub fn fail_times(storage: Storage, req: &Request) -> Result<Response> {
    let n: u32 = number_param(req, "n")?.ok_or("the query parameter `n` is missing")?;
    storage.put(FAIL_TIMES, &n)?;
    Ok(Response::empty())
}

/// `POST /alarm/rearm?in=MS`: the next successful delivery sets a new alarm MS later.
pub fn rearm(storage: Storage, req: &Request) -> Result<Response> {
    let delay: u64 = number_param(req, "in")?.ok_or("the query parameter `in` is missing")?;
    storage.put(REARM_IN, &delay)?;
    Ok(Response::empty())
}

/// `GET /alarm/log`: every successful delivery, `{"retry_count","is_retry","due","at"}`.
pub fn log(storage: Storage) -> Result<Response> {
    stored_list(storage, LOG)
}

/// The alarm: fails while the retry count is below `alarm-fail-times` (its writes are then
/// discarded), else logs the delivery and re-arms if asked to.
pub fn on_alarm(storage: Storage, info: AlarmInfo) -> Result<()> {
    let fail_times: u32 = storage.get(FAIL_TIMES)?.unwrap_or(0);
    if info.retry_count < fail_times {
        return Err("deliberate alarm failure".into());
    }
    // The alarm stays set until its delivery succeeds, so it is the one being delivered.
    let due = storage.get_alarm()?;
    append(
        storage,
        LOG,
        json!({ "retry_count": info.retry_count, "is_retry": info.is_retry, "due": due, "at": now_ms() }),
    )?;
    if let Some(delay) = storage.get::<u64>(REARM_IN)? {
        storage.set_alarm(now_ms() + delay)?;
        storage.delete(REARM_IN)?;
    }
    Ok(())
}
