//! Prometheus metrics, rendered in the text exposition format at `/metrics`.
//!
//! A handful of counters and one latency histogram per route: small enough to keep by
//! hand (atomics and one mutex-guarded map), so no metrics framework is pulled in. Gauges
//! that live in the database (transfer backlog, dead letters, open upload sessions) are
//! read when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

#[derive(Default)]
struct RouteStats {
    /// Requests by status code.
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<(String, String), RouteStats>>,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dedup_hits: AtomicU64,
    pub dedup_bytes_saved: AtomicU64,
    pub uploads: AtomicU64,
    pub credential_cache_hits: AtomicU64,
    pub credential_cache_misses: AtomicU64,
    pub sqlite_commits: AtomicU64,
    pub sqlite_committed_txs: AtomicU64,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::default)
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Records one finished request. `route` is the matched route pattern (never the raw
    /// path, which would make one series per file).
    pub fn request(&self, method: &str, route: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry((method.to_string(), route.to_string())).or_default();
        *s.by_status.entry(status).or_default() += 1;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
        s.count += 1;
        s.sum += secs;
    }

    /// The exposition text, followed by `extra` gauges (name, help, value).
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        let map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP filestore_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE filestore_http_requests_total counter\n");
        for ((method, route), s) in map.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "filestore_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP filestore_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE filestore_http_request_duration_seconds histogram\n");
        for ((method, route), s) in map.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "filestore_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "filestore_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "filestore_http_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(
                out,
                "filestore_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        drop(map);
        let counters: [(&str, &str, &AtomicU64); 9] = [
            (
                "filestore_bytes_in_total",
                "Content bytes received (uploads, chunks, WebDAV PUT).",
                &self.bytes_in,
            ),
            (
                "filestore_bytes_out_total",
                "Content bytes sent (downloads).",
                &self.bytes_out,
            ),
            ("filestore_uploads_total", "Files committed.", &self.uploads),
            (
                "filestore_dedup_hits_total",
                "Uploads and links whose content was already stored.",
                &self.dedup_hits,
            ),
            (
                "filestore_dedup_bytes_saved_total",
                "Bytes not stored again thanks to dedup.",
                &self.dedup_bytes_saved,
            ),
            (
                "filestore_credential_cache_hits_total",
                "Basic-auth verifications answered from the cache.",
                &self.credential_cache_hits,
            ),
            (
                "filestore_credential_cache_misses_total",
                "Basic-auth verifications that ran argon2.",
                &self.credential_cache_misses,
            ),
            (
                "filestore_sqlite_commits_total",
                "COMMITs of the SQLite writer (one per batch of write transactions).",
                &self.sqlite_commits,
            ),
            (
                "filestore_sqlite_committed_transactions_total",
                "Write transactions those COMMITs held (over commits: the mean batch).",
                &self.sqlite_committed_txs,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let hits = self.credential_cache_hits.load(Ordering::Relaxed) as f64;
        let total = hits + self.credential_cache_misses.load(Ordering::Relaxed) as f64;
        let ratio = if total > 0.0 { hits / total } else { 0.0 };
        let _ = writeln!(
            out,
            "# HELP filestore_credential_cache_hit_ratio Share of Basic-auth checks served by the cache.\n\
             # TYPE filestore_credential_cache_hit_ratio gauge\nfilestore_credential_cache_hit_ratio {ratio}"
        );
        for (name, help, v) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_and_counters() {
        let m = Metrics::default();
        m.request("GET", "/api/v1/files/{*path}", 200, Duration::from_millis(3));
        m.request("GET", "/api/v1/files/{*path}", 404, Duration::from_millis(40));
        add(&m.dedup_hits, 2);
        let text = m.render(&[("filestore_transfer_backlog", "Jobs not yet transferred.", 5.0)]);
        assert!(text.contains(
            "filestore_http_requests_total{method=\"GET\",route=\"/api/v1/files/{*path}\",status=\"404\"} 1"
        ));
        assert!(text.contains("le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        assert!(text.contains("filestore_dedup_hits_total 2"));
        assert!(text.contains("filestore_transfer_backlog 5"));
    }
}
