//! Prometheus metrics without an exporter crate: counters and fixed-bucket histograms keyed by
//! route templates (a bounded set), rendered in the text exposition format. Nothing here
//! grows with traffic.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::inference::stats::{Histogram, SECONDS};
use crate::inference::Snapshot;

#[derive(Debug, Default)]
struct Inner {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency.
    latency: BTreeMap<String, Histogram>,
    /// inference kind → latency.
    inference: BTreeMap<&'static str, Histogram>,
}

/// The server's metrics. Owned by the HTTP state; updated by the request middleware and the
/// inference runner.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub jobs: Vec<(&'static str, u64)>,
    pub training_examples_per_second: f64,
    /// Jobs ended by a panic caught at the worker boundary.
    pub job_panics: u64,
    pub models: usize,
    pub inference: Snapshot,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut inner = self.lock();
        *inner
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        inner
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(SECONDS))
            .observe(seconds);
    }

    pub fn observe_inference(&self, kind: &'static str, seconds: f64) {
        self.lock()
            .inference
            .entry(kind)
            .or_insert_with(|| Histogram::new(SECONDS))
            .observe(seconds);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let inner = self.lock();
        let mut out = String::new();
        out.push_str("# HELP dbn_http_requests_total HTTP requests by route, method and status.\n");
        out.push_str("# TYPE dbn_http_requests_total counter\n");
        for ((route, method, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "dbn_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP dbn_http_request_duration_seconds Latency of HTTP requests by route.\n",
        );
        out.push_str("# TYPE dbn_http_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            h.render(
                &mut out,
                "dbn_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str(
            "# HELP dbn_inference_duration_seconds Computation time of unmerged inference calls (sampling, Gibbs classification, features).\n",
        );
        out.push_str("# TYPE dbn_inference_duration_seconds histogram\n");
        for (kind, h) in &inner.inference {
            h.render(
                &mut out,
                "dbn_inference_duration_seconds",
                &format!("kind=\"{kind}\""),
            );
        }
        out.push_str("# HELP dbn_jobs Training jobs by status.\n# TYPE dbn_jobs gauge\n");
        for (status, n) in &gauges.jobs {
            let _ = writeln!(out, "dbn_jobs{{status=\"{status}\"}} {n}");
        }
        let queued = gauges
            .jobs
            .iter()
            .find(|j| j.0 == "queued")
            .map_or(0, |j| j.1);
        let _ = writeln!(
            out,
            "# HELP dbn_queue_depth Jobs waiting for a worker.\n# TYPE dbn_queue_depth gauge\ndbn_queue_depth {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP dbn_training_examples_per_second Pace of the latest training progress.\n# TYPE dbn_training_examples_per_second gauge\ndbn_training_examples_per_second {}",
            gauges.training_examples_per_second
        );
        let _ = writeln!(
            out,
            "# HELP dbn_job_panics_total Jobs that ended failed on a panic caught at the worker boundary.\n# TYPE dbn_job_panics_total counter\ndbn_job_panics_total {}",
            gauges.job_panics
        );
        let _ = writeln!(
            out,
            "# HELP dbn_models Models in the store.\n# TYPE dbn_models gauge\ndbn_models {}",
            gauges.models
        );
        let inference = &gauges.inference;
        let _ = writeln!(
            out,
            "# HELP dbn_inference_in_flight Inference computations running now (batches and single calls).\n# TYPE dbn_inference_in_flight gauge\ndbn_inference_in_flight {}",
            inference.computing
        );
        let _ = writeln!(
            out,
            "# HELP dbn_inference_queue_depth Inference calls waiting for a computation slot.\n# TYPE dbn_inference_queue_depth gauge\ndbn_inference_queue_depth {}",
            inference.waiting
        );
        let _ = writeln!(
            out,
            "# HELP dbn_inference_admitted_work Multiply-adds of work admitted and not finished (bounded by DBN_MAX_INFLIGHT_WORK).\n# TYPE dbn_inference_admitted_work gauge\ndbn_inference_admitted_work {}",
            inference.admitted_work
        );
        out.push_str("# HELP dbn_inference_batch_rows Rows (images) per merged classification batch.\n# TYPE dbn_inference_batch_rows histogram\n");
        inference
            .stats
            .batch_rows
            .render(&mut out, "dbn_inference_batch_rows", "");
        out.push_str("# HELP dbn_inference_queue_wait_seconds Time from a call's arrival to the start of its computation.\n# TYPE dbn_inference_queue_wait_seconds histogram\n");
        inference
            .stats
            .queue_wait
            .render(&mut out, "dbn_inference_queue_wait_seconds", "");
        out.push_str("# HELP dbn_inference_batch_duration_seconds Computation time of merged classification batches.\n# TYPE dbn_inference_batch_duration_seconds histogram\n");
        inference
            .stats
            .batch_seconds
            .render(&mut out, "dbn_inference_batch_duration_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let m = Metrics::default();
        for s in [0.0001, 0.003, 0.003, 20.0] {
            m.observe_request("/v1/jobs", "GET", 200, s);
        }
        let text = m.render(&Gauges {
            jobs: vec![("queued", 2)],
            training_examples_per_second: 0.0,
            job_panics: 0,
            models: 1,
            inference: Snapshot {
                waiting: 3,
                computing: 1,
                admitted_work: 12_345,
                stats: Default::default(),
            },
        });
        assert!(text.contains(
            "dbn_http_requests_total{route=\"/v1/jobs\",method=\"GET\",status=\"200\"} 4"
        ));
        assert!(text.contains("le=\"0.0005\"} 1"));
        assert!(text.contains("le=\"0.005\"} 3"));
        assert!(text.contains("le=\"10\"} 3"));
        assert!(text.contains("le=\"+Inf\"} 4"));
        assert!(text.contains("dbn_queue_depth 2"));
        assert!(text.contains("dbn_inference_queue_depth 3\n"));
        assert!(text.contains("dbn_inference_in_flight 1\n"));
        assert!(text.contains("dbn_inference_admitted_work 12345\n"));
        assert!(text.contains("dbn_inference_batch_rows_count 0\n"));
    }
}
