//! Prometheus metrics, rendered by hand in the text exposition format (`GET /metrics`).
//!
//! Labels are route templates (`/api/v1/nodes/{name}`), methods, statuses, enrollment
//! statuses and resource statuses (the fixed [`ResourceStatus::ALL`]): never a node name, a path with values, a token or anything from a request body,
//! so the endpoint reveals the fleet's size and health but nothing about a host.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use steward_protocol::{EnrollmentStatus, ResourceStatus, Totals};

/// Upper bounds (seconds) of the compile duration histogram buckets.
const COMPILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Every counter the server keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    compile_buckets: [AtomicU64; COMPILE_BUCKETS.len()],
    compile_count: AtomicU64,
    compile_micros: AtomicU64,
    /// Compiles that failed.
    pub compile_failures: AtomicU64,
    /// Catalog requests refused with 429 because every compile slot was busy.
    pub compile_rejected: AtomicU64,
    /// Catalog requests answered from the cached envelope without compiling.
    pub catalog_cache_hits: AtomicU64,
    /// Catalog requests that compiled.
    pub catalog_cache_misses: AtomicU64,
    /// New serials issued.
    pub serials_issued: AtomicU64,
    /// Last good catalogs served because a compile failed.
    pub stale_served: AtomicU64,
    /// Envelopes rebuilt (same serial, same bytes) because the envelope cache had evicted them.
    pub envelope_rebuilds: AtomicU64,
    /// Reports stored.
    pub reports_received: AtomicU64,
    /// Reports that were resubmissions.
    pub reports_duplicate: AtomicU64,
    /// Enrollment requests refused (bad token, rate limit, bad input).
    pub enroll_refused: AtomicU64,
    /// Resource events of stored reports, per status in [`ResourceStatus::ALL`] order.
    resource_events: [AtomicU64; ResourceStatus::ALL.len()],
    /// Resource events of stored reports that carried a drift notice.
    drift_events: AtomicU64,
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// Records one compile's duration.
    pub fn record_compile(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        for (bucket, bound) in self.compile_buckets.iter().zip(COMPILE_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.compile_count.fetch_add(1, Ordering::Relaxed);
        self.compile_micros.fetch_add(
            u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a stored report's events by status, and its drift notices apart: kept and
    /// deferred are their own series, never added to failures.
    pub fn record_report(&self, totals: &Totals) {
        for (counter, status) in self.resource_events.iter().zip(ResourceStatus::ALL) {
            counter.fetch_add(u64::from(totals.count(status)), Ordering::Relaxed);
        }
        self.drift_events
            .fetch_add(u64::from(totals.drift), Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition, with the node counts read from the database by the caller.
    pub fn render(&self, nodes: &[(EnrollmentStatus, u64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        let _ = writeln!(
            out,
            "# HELP steward_http_requests_total HTTP requests by route template, method and status.\n\
             # TYPE steward_http_requests_total counter"
        );
        for ((route, method, status), count) in self
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "steward_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {count}",
                escape(route),
                escape(method)
            );
        }
        let _ = writeln!(
            out,
            "# HELP steward_compile_duration_seconds Catalog compile time.\n\
             # TYPE steward_compile_duration_seconds histogram"
        );
        for (bucket, bound) in self.compile_buckets.iter().zip(COMPILE_BUCKETS) {
            let _ = writeln!(
                out,
                "steward_compile_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.compile_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "steward_compile_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             steward_compile_duration_seconds_sum {}\n\
             steward_compile_duration_seconds_count {count}",
            self.compile_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        counter(
            &mut out,
            "steward_compile_failures_total",
            "Catalog compiles that failed (the last good catalog was served, or 503).",
            &self.compile_failures,
        );
        counter(
            &mut out,
            "steward_compile_rejected_total",
            "Catalog requests refused with 429 because every compile slot was busy.",
            &self.compile_rejected,
        );
        counter(
            &mut out,
            "steward_catalog_cache_hits_total",
            "Catalog requests answered without compiling.",
            &self.catalog_cache_hits,
        );
        counter(
            &mut out,
            "steward_catalog_cache_misses_total",
            "Catalog requests that compiled.",
            &self.catalog_cache_misses,
        );
        counter(
            &mut out,
            "steward_catalog_serials_issued_total",
            "New catalog serials signed.",
            &self.serials_issued,
        );
        counter(
            &mut out,
            "steward_catalog_stale_served_total",
            "Last good catalogs served after a failed compile.",
            &self.stale_served,
        );
        counter(
            &mut out,
            "steward_catalog_envelope_rebuilds_total",
            "Envelopes rebuilt under their serial after the envelope cache evicted them.",
            &self.envelope_rebuilds,
        );
        counter(
            &mut out,
            "steward_reports_received_total",
            "Run reports stored.",
            &self.reports_received,
        );
        counter(
            &mut out,
            "steward_reports_duplicate_total",
            "Run reports resubmitted (already stored).",
            &self.reports_duplicate,
        );
        counter(
            &mut out,
            "steward_enroll_refused_total",
            "Enrollment requests refused.",
            &self.enroll_refused,
        );
        let _ = writeln!(
            out,
            "# HELP steward_resource_events_total Resource events of stored run reports by status \
             (kept and deferred are notices, not failures).\n\
             # TYPE steward_resource_events_total counter"
        );
        for (counter, status) in self.resource_events.iter().zip(ResourceStatus::ALL) {
            let _ = writeln!(
                out,
                "steward_resource_events_total{{status=\"{}\"}} {}",
                status.as_str(),
                counter.load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "steward_resource_drift_total",
            "Resource events of stored run reports that carried a drift notice.",
            &self.drift_events,
        );
        let _ = writeln!(
            out,
            "# HELP steward_nodes Nodes by enrollment status.\n# TYPE steward_nodes gauge"
        );
        for status in [
            EnrollmentStatus::Pending,
            EnrollmentStatus::Approved,
            EnrollmentStatus::Revoked,
            EnrollmentStatus::Quarantined,
        ] {
            let count = nodes
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, count)| *count);
            let _ = writeln!(
                out,
                "steward_nodes{{status=\"{}\"}} {count}",
                status_name(status)
            );
        }
        out
    }
}

/// The wire name of an enrollment status.
pub fn status_name(status: EnrollmentStatus) -> &'static str {
    match status {
        EnrollmentStatus::Pending => "pending",
        EnrollmentStatus::Approved => "approved",
        EnrollmentStatus::Revoked => "revoked",
        EnrollmentStatus::Quarantined => "quarantined",
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_node_gauges() {
        let metrics = Metrics::default();
        metrics.record_request("/v1/catalog", "POST", 200);
        metrics.record_request("/v1/catalog", "POST", 200);
        metrics.record_compile(Duration::from_millis(30));
        Metrics::inc(&metrics.compile_failures);
        let text = metrics.render(&[(EnrollmentStatus::Approved, 3)]);
        assert!(text.contains(
            "steward_http_requests_total{route=\"/v1/catalog\",method=\"POST\",status=\"200\"} 2"
        ));
        assert!(text.contains("steward_compile_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("steward_compile_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(text.contains("steward_compile_failures_total 1"));
        assert!(text.contains("steward_nodes{status=\"approved\"} 3"));
        assert!(text.contains("steward_nodes{status=\"pending\"} 0"));
    }

    #[test]
    fn kept_deferred_and_drift_are_counted_apart_from_failures() {
        let metrics = Metrics::default();
        metrics.record_report(&Totals {
            resources: 6,
            unchanged: 1,
            failed: 1,
            kept: 2,
            deferred: 2,
            drift: 1,
            ..Totals::default()
        });
        metrics.record_report(&Totals {
            resources: 1,
            deferred: 1,
            ..Totals::default()
        });
        let text = metrics.render(&[]);
        assert!(text.contains("steward_resource_events_total{status=\"kept\"} 2"));
        assert!(text.contains("steward_resource_events_total{status=\"deferred\"} 3"));
        assert!(text.contains("steward_resource_events_total{status=\"failed\"} 1"));
        assert!(text.contains("steward_resource_events_total{status=\"unchanged\"} 1"));
        assert!(text.contains("steward_resource_drift_total 1"));
        // One series per status, whatever the reports said.
        let series = text
            .lines()
            .filter(|line| line.starts_with("steward_resource_events_total{"))
            .count();
        assert_eq!(series, ResourceStatus::ALL.len());
    }
}
