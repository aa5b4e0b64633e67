//! dohost's own count of what stub calls between objects cost (`/_admin/stats`' `stub_calls`):
//! the caller's time in the call less the callee's event, from the callee's loop taking it up to
//! its release behind the output gate. Read before and after a scenario, it shows the call's own
//! cost, which timing requests from outside cannot separate from the caller's event.

use crate::Target;
use anyhow::{Context, Result};

/// The stub calls from objects dohost counted.
#[derive(Clone, Debug)]
pub struct StubCalls {
    pub calls: u64,
    /// The calls' overhead over their callees' events, summed.
    pub overhead_ns: u64,
    /// The callees' events, summed.
    pub callee_ns: u64,
    /// The part of the overhead from each callee's release until the answer was back with the
    /// caller (mostly waking the caller after the callee's commit), summed.
    pub handback_ns: u64,
    /// The overheads' histogram: each bucket's upper bound in µs (`None`: above every bound) and
    /// its calls.
    pub buckets: Vec<(Option<u64>, u64)>,
}

impl StubCalls {
    /// The calls from objects since the host started.
    pub async fn read(t: &Target) -> Result<StubCalls> {
        let stats = t.stats().await?;
        let counts = &stats["stub_calls"]["from_objects"];
        let number = |field: &str| {
            counts[field]
                .as_u64()
                .with_context(|| format!("no stub_calls.from_objects.{field} in {stats}"))
        };
        let buckets = counts["overhead_histogram"]
            .as_array()
            .with_context(|| format!("no overhead histogram in {stats}"))?
            .iter()
            .map(|b| {
                Ok((
                    b["le_us"].as_u64(),
                    b["calls"].as_u64().context("a bucket")?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(StubCalls {
            calls: number("calls")?,
            overhead_ns: number("overhead_ns_total")?,
            callee_ns: number("callee_ns_total")?,
            handback_ns: number("handback_ns_total")?,
            buckets,
        })
    }

    /// What was counted between `before` and this.
    pub fn since(&self, before: &StubCalls) -> StubCalls {
        StubCalls {
            calls: self.calls - before.calls,
            overhead_ns: self.overhead_ns - before.overhead_ns,
            callee_ns: self.callee_ns - before.callee_ns,
            handback_ns: self.handback_ns - before.handback_ns,
            buckets: self
                .buckets
                .iter()
                .zip(&before.buckets)
                .map(|(&(le, now), &(_, then))| (le, now - then))
                .collect(),
        }
    }

    /// The mean overhead, µs.
    pub fn mean_overhead_us(&self) -> f64 {
        self.overhead_ns as f64 / self.calls.max(1) as f64 / 1000.0
    }

    /// The callees' mean event, µs.
    pub fn mean_callee_us(&self) -> f64 {
        self.callee_ns as f64 / self.calls.max(1) as f64 / 1000.0
    }

    /// The mean hand-back, µs.
    pub fn mean_handback_us(&self) -> f64 {
        self.handback_ns as f64 / self.calls.max(1) as f64 / 1000.0
    }

    /// The mean overhead without the hand-back, µs: the call's own path there and back, without
    /// the wake-up after the callee's commit that any response behind the gate waits for.
    pub fn mean_without_handback_us(&self) -> f64 {
        self.mean_overhead_us() - self.mean_handback_us()
    }

    /// The median overhead, µs, from the histogram: interpolated within the median's bucket
    /// (the last bucket, unbounded, gives its lower bound). NaN without calls.
    pub fn median_overhead_us(&self) -> f64 {
        let half = self.calls as f64 / 2.0;
        let (mut below, mut lower) = (0.0, 0.0);
        for &(le, calls) in &self.buckets {
            let calls = calls as f64;
            if calls > 0.0 && below + calls >= half {
                return match le {
                    Some(upper) => lower + (upper as f64 - lower) * (half - below) / calls,
                    None => lower,
                };
            }
            below += calls;
            lower = le.map_or(lower, |le| le as f64);
        }
        f64::NAN
    }

    /// One line for the raw numbers.
    pub fn describe(&self) -> String {
        format!(
            "dohost counted {} stub calls between objects: overhead over the callee's event median {:.1} µs, mean {:.1} µs ({:.1} µs handing the answer back after the callee's release, {:.1} µs the rest); the callee's event mean {:.1} µs",
            self.calls,
            self.median_overhead_us(),
            self.mean_overhead_us(),
            self.mean_handback_us(),
            self.mean_without_handback_us(),
            self.mean_callee_us()
        )
    }
}

/// Runs `scenario` and gives what it returned, with the stub calls from objects dohost counted
/// meanwhile.
pub async fn around<T>(
    t: &Target,
    scenario: impl Future<Output = Result<T>>,
) -> Result<(T, StubCalls)> {
    let before = StubCalls::read(t).await?;
    let value = scenario.await?;
    let after = StubCalls::read(t).await?;
    Ok((value, after.since(&before)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_interpolated_within_its_bucket() {
        let calls = |buckets: Vec<(Option<u64>, u64)>| StubCalls {
            calls: buckets.iter().map(|b| b.1).sum(),
            overhead_ns: 0,
            callee_ns: 0,
            handback_ns: 0,
            buckets,
        };
        // 10 calls: the 5th falls in (10, 20], 3 of its 4 calls in: 10 + 10 × 3/4.
        let c = calls(vec![(Some(10), 2), (Some(20), 4), (None, 4)]);
        assert_eq!(c.median_overhead_us(), 17.5);
        let c = calls(vec![(Some(10), 0), (Some(20), 1), (None, 3)]);
        assert_eq!(
            c.median_overhead_us(),
            20.0,
            "past every bound: the last bound"
        );
        assert!(calls(vec![(Some(10), 0)]).median_overhead_us().is_nan());
    }
}
