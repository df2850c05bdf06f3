//! What a run found, in the three shapes the command prints: one JSON
//! object (`--json`), a small table for people, and the classic HdrHistogram
//! percentile-distribution text (`--hgrm FILE`) that plotting tools read.

use std::fmt::Write as _;
use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, send (or scheduled send) → outcome, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            p9999: histogram.value_at_quantile(0.9999),
            max: histogram.max(),
            mean: histogram.mean(),
        }
    }
}

/// The result of one `ringledger bench` run (the `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub engine: String,
    /// Requests in flight over all client threads (`--inflight`), the same
    /// for every engine: `gateways × window`.
    pub inflight: usize,
    /// Client threads: lmax gateways, or a baseline's synchronous callers
    /// (one per request in flight).
    pub gateways: usize,
    /// Requests one client thread keeps in flight (1 for a baseline).
    pub window: usize,
    /// Wallets set up (1 for the hot wallet, whatever `--accounts` says).
    pub accounts: u64,
    /// Operations measured (set-up excluded), every one answered.
    pub ops: u64,
    pub durability: String,
    /// `closed` (pipelined, as fast as answers come back) or `open` (`--rate`).
    pub load: String,
    /// Target rate of an open-loop run, ops/s over all gateways.
    pub rate: Option<u64>,
    /// How the lmax engine's idle threads waited (null for the baselines).
    pub wait: Option<String>,
    /// Which thread wrote the lmax engine's journal (null without one).
    pub journal_thread: Option<String>,
    pub pinned: bool,
    /// Settled: from the moment every client was released until every
    /// operation and everything it caused (its rebate) was applied.
    pub seconds: f64,
    /// Settled throughput, the headline: `ops / seconds`.
    pub ops_per_sec: f64,
    /// From the release to the last answer.
    pub acknowledged_seconds: f64,
    /// `ops / acknowledged_seconds`: what the clients saw answered, some of
    /// whose work (rebates) was still queued.
    pub acknowledged_ops_per_sec: f64,
    /// Settled throughput over lmax's at the same in-flight count (runs of
    /// `--compare` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_lmax: Option<f64>,
    pub latency_ns: Latency,
    /// How late the hiccup meter's 1 ms sleeps woke during the run: the
    /// machine's own stalls, which any program would have seen.
    pub hiccup_ns: Latency,
    /// Operations answered with success / with a rejection (a sold-out
    /// share sale rejects on purpose; rejections are answered work too).
    pub accepted: u64,
    pub rejected: u64,
    /// Rebates of the measured deposits credited by the settled clock (one
    /// per accepted deposit). A baseline counts its worker's credits; for
    /// lmax it is the accepted deposits less the Ledger's owed rebates.
    pub rebates_credited: u64,
    /// Rebates still owed at the end: always 0 in a run whose invariants hold.
    pub rebates_owed: u64,
    /// Operations run again after a conflict: compare-and-swap retries
    /// (optimistic), version-check, deadlock or serialization retries
    /// (postgres, postgres-optimistic); None for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
    /// Hex digest of the final state; see `digest_of`.
    pub digest: Option<String>,
    /// `ledger`: `Ledger::digest()` of the lmax engine (what `replay`
    /// prints); `balances`: an xxh3 of every baseline wallet's balance and
    /// hold and the instrument's counts. The two are not comparable.
    pub digest_of: String,
    pub invariants_ok: bool,
    /// What the invariant check found, when it failed.
    pub invariants_error: Option<String>,
    /// Shares listed / sold (the share sale only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supply: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sold: Option<u64>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// The human summary: a header line, then a small table.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} ops/s"),
            None => "closed loop".to_string(),
        };
        let threads = if self.window == 1 {
            format!("{} threads calling synchronously", self.gateways)
        } else {
            format!("{} gateways × {} pipelined", self.gateways, self.window)
        };
        let _ = writeln!(
            out,
            "ringledger bench: {} on {}, {} in flight ({threads}), {} ops, durability {}, {load}",
            self.scenario, self.engine, self.inflight, self.ops, self.durability
        );
        let _ = writeln!(
            out,
            "  settled      {:>12} ops/s   ({:.3} s, every rebate credited)",
            group_thousands(self.ops_per_sec.round() as u64),
            self.seconds
        );
        let _ = writeln!(
            out,
            "  acknowledged {:>12} ops/s   ({:.3} s, last answer)",
            group_thousands(self.acknowledged_ops_per_sec.round() as u64),
            self.acknowledged_seconds
        );
        let _ = writeln!(
            out,
            "  latency      {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, l) in [("", &self.latency_ns), ("  hiccups", &self.hiccup_ns)] {
            let _ = writeln!(
                out,
                "{name:<15}{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                duration(l.p50),
                duration(l.p90),
                duration(l.p99),
                duration(l.p999),
                duration(l.p9999),
                duration(l.max)
            );
        }
        let _ = writeln!(
            out,
            "  answers      {} accepted, {} rejected; {} rebates credited, {} owed",
            self.accepted, self.rejected, self.rebates_credited, self.rebates_owed
        );
        if let Some(retries) = self.retries {
            let _ = writeln!(out, "  retries      {retries}");
        }
        if let (Some(supply), Some(sold)) = (self.supply, self.sold) {
            let _ = writeln!(out, "  share sale   {sold} of {supply} shares sold");
        }
        let _ = writeln!(out, "  invariants   {}", self.invariants_text());
        let _ = writeln!(
            out,
            "  digest       {} ({})",
            self.digest.as_deref().unwrap_or("-"),
            self.digest_of
        );
        out
    }

    fn invariants_text(&self) -> String {
        match &self.invariants_error {
            None => "ok".to_string(),
            Some(why) => format!("BROKEN: {why}"),
        }
    }
}

/// Several runs (`--compare`, `--sweep-inflight`) as one table, one row per
/// run, in the order given: settled and acknowledged throughput, the ratio
/// to lmax at the same in-flight count, latency next to the hiccup meter's.
pub fn suite_table(reports: &[Report]) -> String {
    let mut out = String::new();
    let Some(first) = reports.first() else {
        return out;
    };
    let load = match first.rate {
        Some(rate) => format!("open loop at {rate} ops/s"),
        None => "closed loop".to_string(),
    };
    let _ = writeln!(
        out,
        "ringledger bench: {}, {} ops, durability {}, {load}",
        first.scenario, first.ops, first.durability
    );
    let _ = writeln!(
        out,
        "settled = every operation and its rebate applied (the headline); \
         acked = last answer; hiccup = the machine's own stalls"
    );
    let _ = writeln!(
        out,
        "{:>9} {:<19} {:>13} {:>7} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  invariants",
        "in flight",
        "engine",
        "settled/s",
        "vs lmax",
        "acked/s",
        "threads",
        "p50",
        "p99",
        "p99.9",
        "max",
        "hic p99.9",
        "hic max"
    );
    for r in reports {
        let shape = if r.window == 1 {
            format!("{}", r.gateways)
        } else {
            format!("{}×{}", r.gateways, r.window)
        };
        let ratio = r.vs_lmax.map_or("-".to_string(), |v| format!("{v:.2}×"));
        let _ = writeln!(
            out,
            "{:>9} {:<19} {:>13} {:>7} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}",
            r.inflight,
            r.engine,
            group_thousands(r.ops_per_sec.round() as u64),
            ratio,
            group_thousands(r.acknowledged_ops_per_sec.round() as u64),
            shape,
            duration(r.latency_ns.p50),
            duration(r.latency_ns.p99),
            duration(r.latency_ns.p999),
            duration(r.latency_ns.max),
            duration(r.hiccup_ns.p999),
            duration(r.hiccup_ns.max),
            r.invariants_text()
        );
    }
    out
}

/// Several runs as one JSON object: `{"runs": [report, …]}`.
pub fn suite_json(reports: &[Report]) -> String {
    serde_json::json!({ "runs": reports }).to_string()
}

/// `1234567` → `1,234,567`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Nanoseconds in the unit that keeps three significant digits readable.
pub(super) fn duration(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..=9_999_999 => format!("{:.2}ms", ns as f64 / 1e6),
        10_000_000..=9_999_999_999 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// Writes the classic `.hgrm` percentile distribution (the text
/// HdrHistogram's `outputPercentileDistribution` produces, which
/// HdrHistogram's plotter and wrk2 users read), values in microseconds.
pub fn write_hgrm(histogram: &Histogram<u64>, mut out: impl Write) -> io::Result<()> {
    const SCALE: f64 = 1_000.0; // ns recorded, µs printed
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total_count = 0u64;
    for v in histogram.iter_quantiles(5) {
        let quantile = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / SCALE;
        total_count += v.count_since_last_iteration();
        if quantile < 1.0 {
            writeln!(
                out,
                "{value:>12.3} {quantile:>14.12} {total_count:>10} {:>14.2}",
                1.0 / (1.0 - quantile)
            )?;
        } else {
            writeln!(out, "{value:>12.3} {quantile:>14.12} {total_count:>10}")?;
        }
    }
    writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        histogram.mean() / SCALE,
        histogram.stdev() / SCALE
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        histogram.max() as f64 / SCALE,
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        histogram.distinct_values()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1,000");
        assert_eq!(group_thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(850), "850ns");
        assert_eq!(duration(12_300), "12.3µs");
        assert_eq!(duration(2_345_678), "2.35ms");
        assert_eq!(duration(45_000_000), "45.0ms");
        assert_eq!(duration(12_000_000_000), "12.00s");
    }

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        let h = Histogram::<u64>::new(3).unwrap();
        assert_eq!(Latency::of(&h).p99, 0);
    }

    #[test]
    fn hgrm_lists_percentiles_up_to_the_total_count() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let mut text = Vec::new();
        write_hgrm(&h, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("       Value"));
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("Total count    =         1000"));
    }
}
