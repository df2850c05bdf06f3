//! `ringledger bench` through the real binary: every scenario on every
//! engine, open loop, `--hgrm`, journaling, and refused flags. Tiny runs;
//! nothing here asserts on timing.

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs a bench with `--json` and returns its one object, failing loudly
/// with stderr when the run did not succeed.
fn bench_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = bench(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench {args:?} printed no JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const REQUIRED: [&str; 11] = [
    "scenario",
    "engine",
    "gateways",
    "ops",
    "durability",
    "seconds",
    "ops_per_sec",
    "latency_ns",
    "digest",
    "digest_of",
    "invariants_ok",
];

#[test]
fn every_scenario_on_every_engine_reports_all_fields_and_keeps_invariants() {
    for scenario in ["deposit", "mixed", "hot-wallet", "share-sale"] {
        for engine in ["lmax", "mutex", "optimistic"] {
            let report = bench_json(&[
                "--scenario",
                scenario,
                "--engine",
                engine,
                "--ops",
                "2000",
                "--gateways",
                "2",
                "--accounts",
                "100",
            ]);
            let what = format!("{scenario} on {engine}: {report}");
            for field in REQUIRED {
                assert!(report.get(field).is_some(), "missing {field}: {what}");
            }
            for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
                assert!(report["latency_ns"][p].is_u64(), "latency {p}: {what}");
            }
            assert_eq!(report["scenario"], scenario, "{what}");
            assert_eq!(report["engine"], engine, "{what}");
            assert_eq!(report["ops"], 2000, "{what}");
            assert_eq!(report["gateways"], 2, "{what}");
            assert_eq!(report["durability"], "none", "{what}");
            assert!(report["journal_thread"].is_null(), "{what}");
            assert_eq!(report["invariants_ok"], true, "{what}");
            assert!(report["digest"].is_string(), "{what}");
            assert_eq!(report["retries"].is_u64(), engine == "optimistic", "{what}");
            if scenario == "share-sale" {
                let sold = report["sold"].as_u64().unwrap();
                assert!(sold <= report["supply"].as_u64().unwrap(), "{what}");
            }
        }
    }
}

#[test]
fn open_loop_run_answers_every_scheduled_request() {
    let report = bench_json(&["--rate", "50000", "--ops", "2000", "--gateways", "2"]);
    assert_eq!(report["load"], "open");
    assert_eq!(report["rate"], 50000);
    assert_eq!(report["ops"], 2000);
    assert_eq!(report["invariants_ok"], true);
    let baseline = bench_json(&[
        "--engine",
        "mutex",
        "--rate",
        "50000",
        "--ops",
        "2000",
        "--gateways",
        "2",
    ]);
    assert_eq!(baseline["ops"], 2000);
}

#[test]
fn hgrm_file_holds_the_percentile_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.hgrm");
    let out = bench(&["--ops", "3000", "--hgrm", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<_> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let rows: Vec<Vec<f64>> = lines
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert!(rows.len() > 10);
    let last = rows.last().unwrap();
    assert_eq!(last[1], 1.0, "the distribution ends at percentile 1");
    assert_eq!(last[2], 3000.0, "the total count is every request");
    assert!(rows
        .windows(2)
        .all(|w| w[0][0] <= w[1][0] && w[0][2] <= w[1][2]));
    assert!(text.contains("#[Max     ="));
}

#[test]
fn journaled_runs_work_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["lmax", "mutex", "optimistic"] {
        let report = bench_json(&[
            "--engine",
            engine,
            "--scenario",
            "share-sale",
            "--durability",
            "async",
            "--journal-dir",
            dir.path().to_str().unwrap(),
            "--ops",
            "2000",
        ]);
        assert_eq!(report["durability"], "async");
        assert_eq!(report["invariants_ok"], true);
        let journal_thread = (engine == "lmax").then_some("business");
        assert_eq!(
            report["journal_thread"].as_str(),
            journal_thread,
            "{report}"
        );
    }
    // The lmax engine's journal on the flusher thread, in both modes.
    for durability in ["async", "sync"] {
        let report = bench_json(&[
            "--durability",
            durability,
            "--journal-thread",
            "flusher",
            "--journal-dir",
            dir.path().to_str().unwrap(),
            "--ops",
            "2000",
        ]);
        assert_eq!(report["journal_thread"], "flusher", "{report}");
        assert_eq!(report["invariants_ok"], true, "{report}");
    }
}

#[test]
fn plain_table_names_the_run_and_its_invariants() {
    let out = bench(&["--ops", "5000", "--scenario", "mixed"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("mixed on lmax"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
    assert!(text.contains("invariants   ok"), "{text}");
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    let cases: [(&[&str], &str); 5] = [
        (&["--scenario", "lottery"], "unknown scenario"),
        (&["--engine", "postgres"], "unknown engine"),
        (&["--gateways", "0"], "--gateways must be"),
        (&["--ops", "0"], "--ops must be"),
        (&["--durability", "maybe"], "unknown durability"),
    ];
    for (args, message) in cases {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
}
