//! Reading the host's Prometheus metrics: a scrape, parsed, and one series' value.

use super::{TOKEN, client};
use prometheus_parse::{Scrape, Value};
use std::collections::HashMap;

/// Scrapes `url` (the host's `/_admin/metrics`) with the admin token, and parses it as
/// Prometheus text.
pub async fn scrape(url: &str) -> Scrape {
    let r = client().get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the series `name` with exactly `labels` (a histogram: its count), 0 if absent.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: HashMap<&str, &str> = labels.iter().copied().collect();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| {
            s.labels.len() == wanted.len()
                && wanted.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("no summaries here"),
        })
        .sum()
}
