//! `frontier lut` on a temporary SQLite store with tiny shapes and settings, so each test runs
//! in seconds.

use crate::helpers::{fails, ok};

const SETTING: &str = "batch=1,prompt=4,gen=4";

struct Db {
    _dir: tempfile::TempDir,
    url: String,
    dir: std::path::PathBuf,
}

fn db() -> Db {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("frontier.db").display());
    Db { dir: dir.path().to_owned(), _dir: dir, url }
}

/// `lut profile` of the tiny test table, after the global options in `before`.
fn profile_with(db: &Db, before: &[&str]) -> String {
    let mut args = before.to_vec();
    args.extend([
        "lut",
        "profile",
        "--database-url",
        &db.url,
        "--setting",
        SETTING,
        "--hidden",
        "64",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--steps",
        "1",
    ]);
    ok(&args)
}

fn profile(db: &Db) -> String {
    profile_with(db, &[])
}

/// The entry lines of `lut show --setting`: operator and repeats.
fn entry_lines(db: &Db) -> Vec<String> {
    let out = ok(&["lut", "show", "--database-url", &db.url, "--setting", SETTING]);
    out.lines().filter(|l| l.contains(":hidden=")).map(str::to_owned).collect()
}

#[test]
fn profile_stores_every_shape_of_the_space_and_show_lists_them() {
    let db = db();
    let out = profile(&db);
    // Paper space mixers (deltanet, attention, mamba2) + FFN, attention at the 4 distinct contexts
    // of 5 grid points over 9..=12 (4 meta tokens + prompt 4, then 4 steps), and the embedding/head.
    assert!(
        out.starts_with("profiled 8 operator shapes at hidden 64 under batch=1,prompt=4,gen=4,dtype=f32"),
        "{out}"
    );
    let tables = ok(&["lut", "show", "--database-url", &db.url]);
    assert!(tables.contains("batch=1,prompt=4,gen=4,dtype=f32"), "{tables}");
    let lines = entry_lines(&db);
    assert_eq!(lines.len(), 8, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("attention:hidden=64,heads=4,kv_heads=2,head_dim=16,context=9 "))
    );
    assert!(lines.iter().any(|l| l.starts_with("embed_head:hidden=64,vocab=256,tied=1 ")));
}

#[test]
fn a_table_exported_as_json_or_csv_imports_unchanged_elsewhere() {
    let source = db();
    profile(&source);
    for format in ["json", "csv"] {
        let file = source.dir.join(format!("lut.{format}"));
        ok(&[
            "lut",
            "export",
            "--database-url",
            &source.url,
            "--setting",
            SETTING,
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ]);
        let target = db();
        let out = ok(&["lut", "import", "--database-url", &target.url, file.to_str().unwrap()]);
        assert!(out.starts_with("imported 8 entries"), "{out}");
        assert_eq!(entry_lines(&target), entry_lines(&source), "{format}");
    }
}

#[test]
fn import_names_the_line_and_field_of_a_malformed_entry() {
    let d = db();
    let csv = d.dir.join("bad.csv");
    let header = "device,setting,op_key,median_ms,p10_ms,p90_ms,repeats";
    let good = "cpu-x,\"batch=1,prompt=4,gen=4,dtype=f32\",\"ffn:hidden=64,intermediate=192\",0.1,0.1,0.1,3";
    let bad_op = "cpu-x,\"batch=1,prompt=4,gen=4,dtype=f32\",\"ffn:hidden=64\",0.1,0.1,0.1,3";
    std::fs::write(&csv, format!("{header}\n{good}\n{bad_op}\n")).unwrap();
    let err = fails(&["lut", "import", "--database-url", &d.url, csv.to_str().unwrap()]);
    assert!(err.contains("line 3, field op_key"), "{err}");
    assert!(err.contains("intermediate: missing"), "{err}");

    let bad_ms = good.replace(",0.1,0.1,0.1,", ",fast,0.1,0.1,");
    std::fs::write(&csv, format!("{header}\n{bad_ms}\n")).unwrap();
    let err = fails(&["lut", "import", "--database-url", &d.url, csv.to_str().unwrap()]);
    assert!(err.contains("line 2, field median_ms: `fast` is not a number"), "{err}");

    let json = d.dir.join("bad.json");
    std::fs::write(&json, "{\n  \"format\": \"frontier/lut\",\n  \"version\": 1,\n  \"device\": 7\n}\n")
        .unwrap();
    let err = fails(&["lut", "import", "--database-url", &d.url, json.to_str().unwrap()]);
    assert!(err.contains("line 4, column"), "{err}");

    // Nothing was written by the failed imports.
    let tables = ok(&["lut", "show", "--database-url", &d.url]);
    assert!(tables.starts_with("no latency tables"), "{tables}");
}

#[test]
fn validate_reports_fidelity_before_and_after_calibration_and_the_worst_cases() {
    let d = db();
    // No table yet: validate profiles what the sampled models need first.
    let out = ok(&[
        "lut",
        "validate",
        "--database-url",
        &d.url,
        "--setting",
        SETTING,
        "--hidden",
        "64",
        "--samples",
        "4",
        "--repeats",
        "1",
    ]);
    assert!(out.contains("4 sampled architectures"), "{out}");
    for label in ["uncalibrated:", "calibrated (fit on these samples):", "calibrated (leave-one-out):"] {
        let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}: {out}"));
        assert!(line.contains("Spearman ") && line.contains("within ±10 % "), "{line}");
    }
    assert_eq!(out.lines().skip_while(|l| !l.starts_with("worst 5")).count(), 5, "header + 4 cases: {out}");
    // The calibration is stored and shown with the table.
    let shown = ok(&["lut", "show", "--database-url", &d.url, "--setting", SETTING]);
    assert!(shown.contains("calibration: measured ≈"), "{shown}");
}

#[test]
fn depth_sweep_prints_one_row_per_depth_at_about_the_same_parameter_count() {
    let d = db();
    let out = ok(&[
        "lut",
        "depth-sweep",
        "--database-url",
        &d.url,
        "--setting",
        SETTING,
        "--depths",
        "1,2",
        "--params",
        "300000",
        "--repeats",
        "1",
    ]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 6 && w[0].parse::<u32>().is_ok())
        .collect();
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), ["1", "2"], "{out}");
    for r in &rows {
        let params: f64 = r[2].parse().unwrap();
        assert!((params - 300_000.0).abs() / 300_000.0 < 0.2, "{r:?}");
    }
    assert!(rows[0][1].parse::<u32>().unwrap() > rows[1][1].parse::<u32>().unwrap(), "deeper is narrower");
}

#[test]
fn a_bf16_setting_is_refused_on_the_cpu() {
    let d = db();
    let err = fails(&[
        "lut",
        "profile",
        "--database-url",
        &d.url,
        "--setting",
        "batch=1,prompt=4,gen=4,dtype=bf16",
    ]);
    assert!(err.contains("computes in f32"), "{err}");
}

#[test]
fn threads_size_the_compute_pool_and_name_the_device() {
    let db = db();
    let out = profile_with(&db, &["--threads", "1"]);
    // The device fingerprint names the threads the backend computed with, so a table profiled
    // with one thread is never used for a run on all cores.
    assert!(out.trim_end().ends_with("/1 threads"), "{out}");
    let err = fails(&["--threads", "0", "lut", "show", "--database-url", &db.url]);
    assert!(err.contains("--threads"), "{err}");
}
