//! Fixed-bucket histograms (Prometheus style) and the batcher's own: rows per engine batch
//! and the time calls wait for a computation slot.

use std::fmt::Write;

/// Upper bounds of latency buckets, in seconds.
pub const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds of batch-size buckets, in rows.
pub const ROWS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Cumulative counts of observations at or below each bound, their number and their sum.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// The series of the text exposition format; `labels` is `key="value",…` or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// What the batcher has done since the start.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Rows per merged engine batch.
    pub batch_rows: Histogram,
    /// Seconds from a call's arrival to the start of its computation.
    pub queue_wait: Histogram,
    /// Seconds each merged batch computed.
    pub batch_seconds: Histogram,
}

impl Default for BatchStats {
    fn default() -> Self {
        BatchStats {
            batch_rows: Histogram::new(ROWS),
            queue_wait: Histogram::new(SECONDS),
            batch_seconds: Histogram::new(SECONDS),
        }
    }
}

impl BatchStats {
    pub fn observe_batch(&mut self, rows: usize) {
        self.batch_rows.observe(rows as f64);
    }

    pub fn observe_wait(&mut self, seconds: f64) {
        self.queue_wait.observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_unlabelled_series_have_no_braces() {
        let mut h = Histogram::new(ROWS);
        for rows in [1.0, 3.0, 3.0, 5000.0] {
            h.observe(rows);
        }
        let mut text = String::new();
        h.render(&mut text, "rows", "");
        assert!(text.contains("rows_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("rows_bucket{le=\"4\"} 3\n"), "{text}");
        assert!(text.contains("rows_bucket{le=\"4096\"} 3\n"), "{text}");
        assert!(text.contains("rows_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("rows_sum 5007\n"), "{text}");
        assert!(text.contains("rows_count 4\n"), "{text}");
        let mut labelled = String::new();
        h.render(&mut labelled, "rows", "kind=\"x\"");
        assert!(
            labelled.contains("rows_bucket{kind=\"x\",le=\"2\"} 1\n"),
            "{labelled}"
        );
        assert!(
            labelled.contains("rows_count{kind=\"x\"} 4\n"),
            "{labelled}"
        );
    }
}
