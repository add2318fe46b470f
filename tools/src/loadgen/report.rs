//! The result of one load run, in ghz's shape: the same summary text and the same JSON keys
//! (`count`, `total`, `average`, `fastest`, `slowest`, `rps` in nanoseconds and requests per
//! second, `histogram`, `latencyDistribution`, `statusCodeDistribution`,
//! `errorDistribution`), plus the health-check baseline and the ratios against it.

use std::{collections::BTreeMap, fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of the latency distribution, as ghz prints them.
pub const PERCENTILES: [u32; 7] = [10, 25, 50, 75, 90, 95, 99];
/// Buckets of the response time histogram (ghz: 10 intervals, 11 marks).
const HISTOGRAM_BUCKETS: u64 = 10;
/// Width of the longest histogram bar, in characters.
const BAR_WIDTH: u64 = 40;

/// One mark of the response time histogram: requests whose latency is at most `mark` (and
/// above the previous mark).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Bucket {
    /// Seconds.
    pub mark: f64,
    pub count: u64,
    pub frequency: f64,
}

/// One percentile.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LatencyPoint {
    pub percentage: u32,
    /// Nanoseconds.
    pub latency: u64,
}

/// The options a run had, echoed into the report.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    pub call: String,
    pub host: String,
    pub concurrency: usize,
    pub connections: usize,
    /// Requests asked for (0: until the duration ends).
    pub total: u64,
    /// Seconds (0: until `total` requests).
    pub duration: f64,
    /// Requests per second asked for (0: as fast as possible).
    pub rps: f64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub name: String,
    pub date: String,
    /// `normal` (all requests sent) or `timeout` (the duration ended first).
    pub end_reason: String,
    pub options: RunOptions,
    pub count: u64,
    /// Nanoseconds, start of the run to the last answer.
    pub total: u64,
    pub average: u64,
    pub fastest: u64,
    pub slowest: u64,
    pub rps: f64,
    pub histogram: Vec<Bucket>,
    pub latency_distribution: Vec<LatencyPoint>,
    pub status_code_distribution: BTreeMap<String, u64>,
    pub error_distribution: BTreeMap<String, u64>,
}

impl Report {
    /// Builds the report from the merged latency histogram (microseconds).
    pub fn new(
        name: String,
        options: RunOptions,
        elapsed: Duration,
        timed_out: bool,
        latencies: &Histogram<u64>,
        status_codes: BTreeMap<String, u64>,
        errors: BTreeMap<String, u64>,
    ) -> Self {
        let count = latencies.len();
        let us = |v: u64| v.saturating_mul(1_000);
        let total = elapsed.as_nanos() as u64;
        let (fastest, slowest) = if count == 0 { (0, 0) } else { (latencies.min(), latencies.max()) };
        let mut histogram = Vec::new();
        if count > 0 {
            let step = (slowest - fastest) as f64 / HISTOGRAM_BUCKETS as f64;
            let marks: Vec<f64> = (0..=HISTOGRAM_BUCKETS).map(|i| fastest as f64 + step * i as f64).collect();
            let mut counts = vec![0u64; marks.len()];
            for value in latencies.iter_recorded() {
                let v = latencies.highest_equivalent(value.value_iterated_to()).min(slowest) as f64;
                let index = marks.iter().position(|m| v <= *m + 1e-9).unwrap_or(marks.len() - 1);
                counts[index] += value.count_at_value();
            }
            histogram = marks
                .iter()
                .zip(&counts)
                .map(|(mark, n)| Bucket { mark: mark / 1e6, count: *n, frequency: *n as f64 / count as f64 })
                .collect();
        }
        Self {
            name,
            date: chrono::Utc::now().to_rfc3339(),
            end_reason: if timed_out { "timeout".into() } else { "normal".into() },
            options,
            count,
            total,
            average: if count == 0 { 0 } else { us(latencies.mean().round() as u64) },
            fastest: us(fastest),
            slowest: us(slowest),
            rps: if total == 0 { 0.0 } else { count as f64 / elapsed.as_secs_f64() },
            histogram,
            latency_distribution: PERCENTILES
                .iter()
                .map(|p| LatencyPoint {
                    percentage: *p,
                    latency: if count == 0 {
                        0
                    } else {
                        us(latencies.value_at_quantile(f64::from(*p) / 100.0))
                    },
                })
                .collect(),
            status_code_distribution: status_codes,
            error_distribution: errors,
        }
    }

    /// The latency at a percentile of [`PERCENTILES`], in milliseconds.
    pub fn percentile_ms(&self, percentage: u32) -> f64 {
        self.latency_distribution
            .iter()
            .find(|p| p.percentage == percentage)
            .map_or(0.0, |p| p.latency as f64 / 1e6)
    }

    /// Answers with status OK.
    pub fn ok(&self) -> u64 {
        self.status_code_distribution.get("OK").copied().unwrap_or(0)
    }
}

fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

fn total(nanos: u64) -> String {
    if nanos >= 1_000_000_000 { format!("{:.2} s", nanos as f64 / 1e9) } else { ms(nanos) }
}

impl fmt::Display for Report {
    /// ghz's summary format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "Summary:")?;
        if !self.name.is_empty() {
            writeln!(f, "  Name:\t{}", self.name)?;
        }
        writeln!(f, "  Count:\t{}", self.count)?;
        writeln!(f, "  Total:\t{}", total(self.total))?;
        writeln!(f, "  Slowest:\t{}", ms(self.slowest))?;
        writeln!(f, "  Fastest:\t{}", ms(self.fastest))?;
        writeln!(f, "  Average:\t{}", ms(self.average))?;
        writeln!(f, "  Requests/sec:\t{:.2}", self.rps)?;
        writeln!(f)?;
        writeln!(f, "Response time histogram:")?;
        let max = self.histogram.iter().map(|b| b.count).max().unwrap_or(0).max(1);
        for bucket in &self.histogram {
            let bar = "∎".repeat((bucket.count * BAR_WIDTH / max) as usize);
            writeln!(f, "  {:.3} [{}]\t|{bar}", bucket.mark * 1e3, bucket.count)?;
        }
        writeln!(f)?;
        writeln!(f, "Latency distribution:")?;
        for point in &self.latency_distribution {
            writeln!(f, "  {} % in {} ", point.percentage, ms(point.latency))?;
        }
        writeln!(f)?;
        writeln!(f, "Status code distribution:")?;
        for (code, n) in &self.status_code_distribution {
            writeln!(f, "  [{code}]\t{n} responses")?;
        }
        if !self.error_distribution.is_empty() {
            writeln!(f)?;
            writeln!(f, "Error distribution:")?;
            for (error, n) in &self.error_distribution {
                writeln!(f, "  [{n}]\t{error}")?;
            }
        }
        Ok(())
    }
}

/// A run and its `grpc.health.v1.Health/Check` baseline against the same server with the same
/// concurrency and connections.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    #[serde(flatten)]
    pub main: Report,
    pub baseline: Option<Report>,
    /// main rps / baseline rps.
    pub rps_ratio: Option<f64>,
    /// main p99 / baseline p99.
    pub p99_ratio: Option<f64>,
}

impl Comparison {
    /// Pairs a run with its baseline and computes the ratios.
    pub fn new(main: Report, baseline: Option<Report>) -> Self {
        let (rps_ratio, p99_ratio) = match &baseline {
            Some(base) if base.rps > 0.0 && base.percentile_ms(99) > 0.0 => {
                (Some(main.rps / base.rps), Some(main.percentile_ms(99) / base.percentile_ms(99)))
            }
            _ => (None, None),
        };
        Self { main, baseline, rps_ratio, p99_ratio }
    }

    /// `0.42× rps, 3.1× p99 of Health/Check`, or `no baseline`.
    pub fn ratio_text(&self) -> String {
        match (self.rps_ratio, self.p99_ratio, &self.baseline) {
            (Some(r), Some(p), Some(base)) => format!(
                "{r:.2}× rps, {p:.2}× p99 of Health/Check ({:.0} rps, p99 {:.1} ms)",
                base.rps,
                base.percentile_ms(99)
            ),
            _ => "no baseline".into(),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(base) = &self.baseline {
            writeln!(
                f,
                "\nBaseline (grpc.health.v1.Health/Check, same server, concurrency and connections):"
            )?;
            writeln!(
                f,
                "  Count:\t{}\n  Requests/sec:\t{:.2}\n  p50:\t{:.2} ms\n  p99:\t{:.2} ms",
                base.count,
                base.rps,
                base.percentile_ms(50),
                base.percentile_ms(99)
            )?;
        }
        write!(f, "{}", self.main)?;
        if let (Some(r), Some(p)) = (self.rps_ratio, self.p99_ratio) {
            writeln!(f)?;
            writeln!(f, "Against the baseline:")?;
            writeln!(f, "  rps ratio (main / Health/Check):\t{r:.3}")?;
            writeln!(f, "  p99 ratio (main / Health/Check):\t{p:.3}")?;
        }
        Ok(())
    }
}
