//! `ringledger bench` through the real binary: every scenario on every
//! engine under equal rules (--inflight), settled and acknowledged
//! throughput, --compare, --sweep-inflight, the hiccup meter, --plot,
//! open loop, `--hgrm`, journaling, and refused flags. Tiny runs; nothing
//! here asserts on timing.

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

const REQUIRED: [&str; 20] = [
    "scenario",
    "engine",
    "inflight",
    "gateways",
    "window",
    "ops",
    "durability",
    "seconds",
    "ops_per_sec",
    "acknowledged_seconds",
    "acknowledged_ops_per_sec",
    "latency_ns",
    "hiccup_ns",
    "rebates_credited",
    "rebates_owed",
    "accepted",
    "rejected",
    "digest",
    "digest_of",
    "invariants_ok",
];

const ENGINES: [&str; 3] = ["lmax", "mutex", "optimistic"];

/// The checks every report must pass, whatever the run.
fn assert_sound(report: &Value) {
    for field in REQUIRED {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    for p in ["p50", "p90", "p99", "p999", "p9999", "max"] {
        assert!(report["latency_ns"][p].is_u64(), "latency {p}: {report}");
        assert!(report["hiccup_ns"][p].is_u64(), "hiccup {p}: {report}");
    }
    assert_eq!(report["invariants_ok"], true, "{report}");
    assert_eq!(report["rebates_owed"], 0, "{report}");
    let (settled, acked) = (
        report["seconds"].as_f64().unwrap(),
        report["acknowledged_seconds"].as_f64().unwrap(),
    );
    assert!(
        settled >= acked,
        "settled {settled} < acknowledged {acked}: {report}"
    );
    let (inflight, gateways, window) = (
        report["inflight"].as_u64().unwrap(),
        report["gateways"].as_u64().unwrap(),
        report["window"].as_u64().unwrap(),
    );
    assert_eq!(gateways * window, inflight, "{report}");
    if report["engine"] != "lmax" {
        assert_eq!(
            (gateways, window),
            (inflight, 1),
            "one thread per request: {report}"
        );
    }
}

#[test]
fn every_scenario_on_every_engine_reports_all_fields_and_keeps_invariants() {
    for scenario in ["deposit", "mixed", "hot-wallet", "share-sale"] {
        for engine in ENGINES {
            let report = bench_json(&[
                "--scenario",
                scenario,
                "--engine",
                engine,
                "--ops",
                "2000",
                "--inflight",
                "4",
                "--accounts",
                "100",
            ]);
            let what = format!("{scenario} on {engine}: {report}");
            assert_sound(&report);
            assert_eq!(report["scenario"], scenario, "{what}");
            assert_eq!(report["engine"], engine, "{what}");
            assert_eq!(report["ops"], 2000, "{what}");
            assert_eq!(report["inflight"], 4, "{what}");
            let shape = if engine == "lmax" { (2, 2) } else { (4, 1) };
            assert_eq!(
                (
                    report["gateways"].as_u64().unwrap(),
                    report["window"].as_u64().unwrap()
                ),
                shape,
                "{what}"
            );
            assert_eq!(report["durability"], "none", "{what}");
            assert!(report["journal_thread"].is_null(), "{what}");
            assert!(report["digest"].is_string(), "{what}");
            assert_eq!(report["retries"].is_u64(), engine == "optimistic", "{what}");
            assert!(report.get("vs_lmax").is_none(), "{what}");
            if scenario == "deposit" {
                // Every deposit is accepted and its rebate credited.
                assert_eq!(report["rebates_credited"], 2000, "{what}");
            }
            if scenario == "share-sale" {
                let sold = report["sold"].as_u64().unwrap();
                assert!(sold <= report["supply"].as_u64().unwrap(), "{what}");
            }
        }
    }
}

#[test]
fn lmax_splits_the_requests_in_flight_over_its_gateways() {
    let report = bench_json(&["--ops", "2000", "--inflight", "12", "--gateways", "3"]);
    assert_eq!(
        (report["gateways"].as_u64(), report["window"].as_u64()),
        (Some(3), Some(4))
    );
    let report = bench_json(&["--ops", "2000", "--inflight", "1"]);
    assert_eq!(
        (report["gateways"].as_u64(), report["window"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn compare_runs_every_engine_with_the_same_settings_and_prints_ratios() {
    let report = bench_json(&[
        "--compare",
        "--scenario",
        "hot-wallet",
        "--ops",
        "2000",
        "--inflight",
        "8",
    ]);
    let runs = report["runs"].as_array().expect("a list of runs");
    let engines: Vec<&str> = runs.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, ENGINES);
    let lmax = runs[0]["ops_per_sec"].as_f64().unwrap();
    for run in runs {
        assert_sound(run);
        assert_eq!(run["inflight"], 8, "{run}");
        assert_eq!(run["scenario"], "hot-wallet", "{run}");
        assert_eq!(run["ops"], 2000, "{run}");
        let ratio = run["vs_lmax"].as_f64().unwrap();
        let expected = run["ops_per_sec"].as_f64().unwrap() / lmax;
        assert!((ratio - expected).abs() < 1e-9, "{run}");
    }
    let out = bench(&["--compare", "--ops", "2000", "--inflight", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for word in ["settled/s", "vs lmax", "acked/s", "hic p99.9", "1.00×"] {
        assert!(table.contains(word), "{word}: {table}");
    }
    for engine in ENGINES {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(engine))
            .unwrap_or_else(|| panic!("no row for {engine}: {table}"));
        assert!(row.contains('×') && row.ends_with("ok"), "{row}");
    }
}

#[test]
fn a_sweep_runs_each_in_flight_count_on_each_engine() {
    let report = bench_json(&["--sweep-inflight", "1,2,8", "--ops", "1000"]);
    let points: Vec<u64> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_sound(r);
            r["inflight"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(points, [1, 2, 8]);
    let report = bench_json(&["--sweep-inflight", "2,4", "--compare", "--ops", "1000"]);
    let runs: Vec<(u64, &str)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["inflight"].as_u64().unwrap(),
                r["engine"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, &str)> = [2, 4]
        .into_iter()
        .flat_map(|n| ENGINES.map(|e| (n, e)))
        .collect();
    assert_eq!(runs, expected);
}

#[test]
fn the_table_shows_the_hiccup_meter_beside_the_latency() {
    let out = bench(&["--ops", "3000", "--engine", "optimistic"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "settled",
        "acknowledged",
        "hiccups",
        "p99.9",
        "rebates credited, 0 owed",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
}

#[test]
fn plot_draws_one_line_per_engine_and_the_hiccup_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.svg");
    let out = bench(&[
        "--compare",
        "--ops",
        "2000",
        "--inflight",
        "4",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    for label in ENGINES
        .into_iter()
        .chain(["hiccup meter (the machine)", "99.9%"])
    {
        let text = format!(">\n{label}\n</text>");
        assert!(
            svg.contains(&text) || svg.contains(&format!(">{label}</text>")),
            "no {label:?} text in the plot"
        );
    }
    // Each engine's line is drawn in its own colour, 3 px wide (its legend
    // sample too); the hiccup line is grey and thinner.
    let mut colours: Vec<&str> = svg
        .lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"3\""))
        .filter_map(|l| l.split("stroke=\"").nth(1)?.split('"').next())
        .collect();
    colours.sort();
    colours.dedup();
    assert_eq!(colours.len(), ENGINES.len(), "{colours:?}");
}

#[test]
fn open_loop_run_answers_every_scheduled_request() {
    let report = bench_json(&["--rate", "50000", "--ops", "2000", "--inflight", "4"]);
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
        "--inflight",
        "4",
    ]);
    assert_eq!(baseline["ops"], 2000);
    assert_eq!(baseline["gateways"], 4);
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
    let cases: [(&[&str], &str); 16] = [
        (&["--scenario", "lottery"], "unknown scenario"),
        (&["--engine", "postgress"], "unknown engine"),
        (&["--gateways", "0"], "--gateways must be"),
        (&["--ops", "0"], "--ops must be"),
        (&["--durability", "maybe"], "unknown durability"),
        (&["--inflight", "0"], "--inflight must be 1 to"),
        (&["--inflight", "5000"], "--inflight must be 1 to"),
        (
            &["--inflight", "5", "--gateways", "2"],
            "--inflight 5 cannot be split",
        ),
        (
            &["--inflight", "2", "--gateways", "4"],
            "--inflight 2 cannot be split",
        ),
        (
            &["--sweep-inflight", "1,8", "--inflight", "8"],
            "cannot be used with",
        ),
        (&["--sweep-inflight", ""], "empty list"),
        (&["--sweep-inflight", "0,8"], "must be 1 to"),
        (&["--sweep-inflight", "1,x"], "not a whole number"),
        (&["--compare", "--engine", "mutex"], "cannot be used with"),
        (&["--compare", "--hgrm", "x.hgrm"], "cannot be used with"),
        (&["--plot", "latency.png"], "name the file *.svg"),
    ];
    for (args, message) in cases {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed a result");
    }
    // The old per-gateway window is gone: --inflight says it for every engine.
    let out = bench(&["--window", "8"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--window'"));
}

#[test]
fn help_lists_every_engine() {
    for flag in ["-h", "--help"] {
        let out = bench(&[flag]);
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        for word in
            ENGINES
                .into_iter()
                .chain(["--inflight", "--compare", "--sweep-inflight", "--plot"])
        {
            assert!(help.contains(word), "{flag}: no {word}: {help}");
        }
    }
}

#[test]
fn help_lists_every_engine_and_what_the_external_ones_need() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for engine in [
        "lmax",
        "mutex",
        "optimistic",
        "postgres",
        "postgres-optimistic",
        "redis",
    ] {
        assert!(help.contains(&format!("  {engine} ")), "{engine}: {help}");
    }
    for needs in [
        "feature external-engines",
        "RINGLEDGER_POSTGRES_URL",
        "RINGLEDGER_REDIS_URL",
    ] {
        assert!(help.contains(needs), "{needs}: {help}");
    }
}

/// In a build without the feature, the external engines are known but
/// refused, saying how to build them (and no server is contacted).
#[cfg(not(feature = "external-engines"))]
#[test]
fn external_engines_need_the_feature() {
    for engine in ["postgres", "postgres-optimistic", "redis"] {
        for args in [
            &["--engine", engine][..],
            &["--engine", engine, "--compare"][..],
        ] {
            let out = bench(args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                stderr.contains("--features external-engines"),
                "{args:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
}

/// `--accounts` for an order-book scenario in these tiny runs: a seller per
/// book for orderbook-multi.
fn book_accounts(scenario: &str) -> &'static str {
    if scenario == "orderbook-multi" {
        "5000"
    } else {
        "100"
    }
}

#[test]
fn order_book_scenarios_run_on_lmax_and_mutex_and_keep_their_invariants() {
    for scenario in ["orderbook", "orderbook-multi"] {
        for engine in ["lmax", "mutex"] {
            let report = bench_json(&[
                "--scenario",
                scenario,
                "--engine",
                engine,
                "--ops",
                "3000",
                "--inflight",
                "4",
                "--accounts",
                book_accounts(scenario),
            ]);
            let what = format!("{scenario} on {engine}: {report}");
            assert_sound(&report);
            assert_eq!(report["scenario"], scenario, "{what}");
            assert_eq!(report["engine"], engine, "{what}");
            assert_eq!(report["ops"], 3000, "{what}");
            // Moves and cancels of orders an IOC took are refused, the
            // rest accepted.
            assert!(report["accepted"].as_u64().unwrap() > 2500, "{what}");
        }
    }
}

#[test]
fn order_book_scenarios_journal_and_run_open_loop_on_both_engines() {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().to_str().unwrap();
    for engine in ["lmax", "mutex"] {
        for durability in ["async", "sync"] {
            let report = bench_json(&[
                "--scenario",
                "orderbook",
                "--engine",
                engine,
                "--durability",
                durability,
                "--journal-dir",
                parent,
                "--ops",
                "2000",
                "--inflight",
                "4",
                "--accounts",
                "100",
            ]);
            assert_sound(&report);
            assert_eq!(report["durability"], durability, "{report}");
        }
        let report = bench_json(&[
            "--scenario",
            "orderbook",
            "--engine",
            engine,
            "--rate",
            "20000",
            "--ops",
            "2000",
            "--inflight",
            "4",
            "--accounts",
            "100",
        ]);
        assert_sound(&report);
        assert_eq!(report["load"], "open", "{report}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_engine_without_order_books_is_refused_for_the_order_book_scenarios() {
    for scenario in ["orderbook", "orderbook-multi"] {
        let out = bench(&[
            "--scenario",
            scenario,
            "--engine",
            "optimistic",
            "--accounts",
            "5000",
        ]);
        assert!(!out.status.success(), "{scenario} ran on optimistic");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--engine optimistic does not implement the order book"),
            "{stderr}"
        );
    }
    let out = bench(&["--scenario", "orderbook-multi", "--accounts", "10"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--accounts must be at least 1000"),
        "{stderr}"
    );
}

#[test]
fn compare_on_an_order_book_leaves_out_the_engines_without_books_and_says_so() {
    let out = bench(&[
        "--scenario",
        "orderbook",
        "--compare",
        "--ops",
        "2000",
        "--inflight",
        "4",
        "--accounts",
        "100",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("optimistic left out: it does not implement the order book"),
        "{stderr}"
    );
    let suite: Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = suite["runs"].as_array().expect("one object per run");
    let engines: Vec<&str> = runs.iter().map(|r| r["engine"].as_str().unwrap()).collect();
    assert_eq!(engines, ["lmax", "mutex"]);
    for report in runs {
        assert_sound(report);
        assert!(report["vs_lmax"].is_f64(), "{report}");
    }
}

#[test]
fn help_lists_the_order_book_scenarios() {
    let out = bench(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for scenario in ["orderbook", "orderbook-multi", "Pareto"] {
        assert!(help.contains(scenario), "no {scenario}: {help}");
    }
}
