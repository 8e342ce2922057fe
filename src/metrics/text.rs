//! The Prometheus text format 0.0.4, written by hand: the `prometheus-client`
//! crate forces `_total` and OpenMetrics, so it cannot emit tyk-pump's
//! `tyk_http_status` (OPS.md §2). Label values are api ids, methods,
//! codes and fixed words: never a key, an address or a path.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::{
    ApiStats, Flag, Histogram, METHODS, Metrics, OTEL_BUCKETS_MS, PUMP_BUCKETS_MS, process,
};

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the rest of the gateway reports at scrape time.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Paths refused with 400, by reason.
    pub path_rejects: Vec<(&'static str, u64)>,
    pub store_write_errors: u64,
    pub session_hits: u64,
    pub session_misses: u64,
    pub apis_loaded: usize,
    pub policies_loaded: usize,
}

/// The whole `/metrics` body.
pub fn encode(m: &Metrics, g: &Gauges) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let blocks = m.blocks();
    if m.enabled {
        tyk_families(&mut out, &blocks);
        request_families(&mut out, &blocks);
    }
    gateway_families(&mut out, m, g);
    process::encode(&mut out, m.start_time());
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// tyk-pump's names, so Tyk dashboards work.
fn tyk_families(out: &mut String, blocks: &[std::sync::Arc<ApiStats>]) {
    header(
        out,
        "tyk_http_status",
        "counter",
        "Responses by status code and API (tyk-pump).",
    );
    for api in blocks {
        let mut by_code: Vec<(u16, u64)> = Vec::new();
        for (code, _, n) in api.codes.snapshot() {
            match by_code.last_mut() {
                Some((c, total)) if *c == code => *total += n,
                _ => by_code.push((code, n)),
            }
        }
        for (code, n) in by_code {
            let _ = writeln!(
                out,
                "tyk_http_status{{code=\"{code}\",api=\"{}\"}} {n}",
                esc(&api.id)
            );
        }
    }
    header(
        out,
        "tyk_latency",
        "histogram",
        "Latency in milliseconds by type and API (tyk-pump).",
    );
    for api in blocks {
        let id = esc(&api.id);
        for (kind, h) in [
            ("total", &api.total),
            ("upstream", &api.upstream),
            ("gateway", &api.gateway),
        ] {
            let labels = format!("type=\"{kind}\",api=\"{id}\"");
            histogram(out, "tyk_latency", &labels, h, &PUMP_BUCKETS_MS, 1000.0);
        }
    }
}

/// One histogram's series; `per_unit`: microseconds per exported unit.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    h: &Histogram,
    bounds_ms: &[u64],
    per_unit: f64,
) {
    let (cumulative, count, sum_us) = h.snapshot(bounds_ms);
    for (ms, n) in bounds_ms.iter().zip(cumulative) {
        let le = *ms as f64 * 1000.0 / per_unit;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / per_unit);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// `gatehouse_*` per-API families, in base units.
fn request_families(out: &mut String, blocks: &[std::sync::Arc<ApiStats>]) {
    header(
        out,
        "gatehouse_http_requests_total",
        "counter",
        "Requests by API, method and status code.",
    );
    for api in blocks {
        for (code, method, n) in api.codes.snapshot() {
            let method = METHODS.get(usize::from(method)).unwrap_or(&"OTHER");
            let _ = writeln!(
                out,
                "gatehouse_http_requests_total{{api_id=\"{}\",method=\"{method}\",code=\"{code}\"}} {n}",
                esc(&api.id)
            );
        }
    }
    for (name, help, pick) in [
        (
            "gatehouse_http_request_duration_seconds",
            "Time from the request head to the response head.",
            0,
        ),
        (
            "gatehouse_upstream_duration_seconds",
            "Time the upstream took to answer (proxied requests).",
            1,
        ),
        (
            "gatehouse_gateway_duration_seconds",
            "Time spent in the gateway itself (proxied requests).",
            2,
        ),
    ] {
        header(out, name, "histogram", help);
        for api in blocks {
            let h = [&api.total, &api.upstream, &api.gateway][pick];
            let labels = format!("api_id=\"{}\"", esc(&api.id));
            histogram(out, name, &labels, h, &OTEL_BUCKETS_MS, 1_000_000.0);
        }
    }
    header(
        out,
        "gatehouse_upstream_errors_total",
        "counter",
        "Upstream failures by API and kind (Tyk's response flags).",
    );
    for api in blocks {
        for &flag in Flag::UPSTREAM {
            let _ = writeln!(
                out,
                "gatehouse_upstream_errors_total{{api_id=\"{}\",kind=\"{}\"}} {}",
                esc(&api.id),
                flag.name(),
                api.flag_count(flag)
            );
        }
    }
    for (name, help, flag) in [
        (
            "gatehouse_rate_limited_total",
            "Requests refused by a rate limit (429).",
            Flag::Rlt,
        ),
        (
            "gatehouse_quota_exceeded_total",
            "Requests refused by an exhausted quota (403).",
            Flag::Qex,
        ),
        (
            "gatehouse_circuit_open_total",
            "Requests refused by an open circuit breaker (503).",
            Flag::Cbo,
        ),
    ] {
        header(out, name, "counter", help);
        for api in blocks.iter().filter(|a| !a.id.is_empty()) {
            let _ = writeln!(
                out,
                "{name}{{api_id=\"{}\"}} {}",
                esc(&api.id),
                api.flag_count(flag)
            );
        }
    }
    header(
        out,
        "gatehouse_metrics_overflow_total",
        "counter",
        "Requests not counted by code: too many distinct (code, method) pairs.",
    );
    let overflow: u64 = blocks
        .iter()
        .map(|a| a.codes.overflow.load(Ordering::Relaxed))
        .sum();
    let _ = writeln!(out, "gatehouse_metrics_overflow_total {overflow}");
}

/// Gateway-wide families.
fn gateway_families(out: &mut String, m: &Metrics, g: &Gauges) {
    header(
        out,
        "gatehouse_path_rejected_total",
        "counter",
        "Request paths refused with 400, by reason.",
    );
    for (reason, n) in &g.path_rejects {
        let _ = writeln!(
            out,
            "gatehouse_path_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let open = m.open.load(Ordering::Relaxed);
    let counters: [(&str, &str, &str, f64); 10] = [
        (
            "gatehouse_connections_open",
            "gauge",
            "Client connections open now.",
            open as f64,
        ),
        (
            "gatehouse_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            m.accepted.load(Ordering::Relaxed) as f64,
        ),
        (
            "gatehouse_connections_refused_total",
            "counter",
            "Client connections refused at the connection cap.",
            m.refused.load(Ordering::Relaxed) as f64,
        ),
        (
            "gatehouse_store_write_errors_total",
            "counter",
            "Store writes that failed.",
            g.store_write_errors as f64,
        ),
        (
            "gatehouse_session_cache_hits_total",
            "counter",
            "Session lookups answered from memory.",
            g.session_hits as f64,
        ),
        (
            "gatehouse_session_cache_misses_total",
            "counter",
            "Session lookups that read the store.",
            g.session_misses as f64,
        ),
        (
            "gatehouse_apis_loaded",
            "gauge",
            "API definitions loaded.",
            g.apis_loaded as f64,
        ),
        (
            "gatehouse_policies_loaded",
            "gauge",
            "Policies loaded.",
            g.policies_loaded as f64,
        ),
        (
            "gatehouse_access_log_dropped_total",
            "counter",
            "Access-log lines dropped because the writer fell behind.",
            m.access_log.as_ref().map_or(0, |l| l.dropped()) as f64,
        ),
        (
            "gatehouse_access_log_written_total",
            "counter",
            "Access-log lines written.",
            m.access_log.as_ref().map_or(0, |l| l.written()) as f64,
        ),
    ];
    for (name, kind, help, value) in counters {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        out,
        "gatehouse_build_info",
        "gauge",
        "Build information; always 1.",
    );
    let _ = writeln!(
        out,
        "gatehouse_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Arrival, Tally};
    use std::time::{Duration, Instant};

    #[test]
    fn counts_show_under_tyk_and_gatehouse_names() {
        let m = Metrics::new(true, None);
        let api = m.api("a\"1");
        let start = Instant::now();
        let arrival = Arrival {
            started: start,
            method: 0,
            sent: Some(start + Duration::from_millis(1)),
        };
        let mut t = Tally {
            api: Some(api),
            ..Tally::default()
        };
        m.finish(&mut t, 200, &arrival, start + Duration::from_millis(3));
        let text = encode(&m, &Gauges::default());
        assert!(text.contains("tyk_http_status{code=\"200\",api=\"a\\\"1\"} 1\n"));
        assert!(text.contains(
            "gatehouse_http_requests_total{api_id=\"a\\\"1\",method=\"GET\",code=\"200\"} 1\n"
        ));
        assert!(text.contains("tyk_latency_bucket{type=\"total\",api=\"a\\\"1\",le=\"5\"} 1\n"));
        assert!(text.contains("tyk_latency_sum{type=\"upstream\",api=\"a\\\"1\"} 2\n"));
        assert!(text.contains(
            "gatehouse_http_request_duration_seconds_bucket{api_id=\"a\\\"1\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains("gatehouse_build_info{version="));
    }
}
