//! The shipped models' figures are reproducible: the held-out test set and the external
//! family, written again with `onfh-edge phantom`, evaluated with `onfh-edge eval`, give
//! exactly the tables recorded in the stager's manifest by `onfh-edge evaluate-models
//! --write`.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onfh-edge");

fn stager_metrics() -> Value {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/3d-muldensenet-small.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let m = manifest["metrics"].clone();
    assert!(
        m.is_object(),
        "the shipped stager manifest has no measured figures"
    );
    m
}

#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn eval_on_the_held_out_set_reproduces_the_manifest() {
    let m = stager_metrics();
    let studies = m["test_studies"].as_u64().unwrap();
    let seed = m["test_seed"].as_u64().unwrap();
    let style = m["test_style"].as_str().unwrap();
    reproduce(&["--style", style], studies, seed, &m["pipeline"]);
}

/// The external family (the independent evaluation phantom) likewise: `phantom --family
/// external` writes the same studies `evaluate-models` measured, and `eval` gives the table
/// the manifest carries under `external`.
#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn eval_on_the_external_family_reproduces_the_manifest() {
    let m = stager_metrics();
    let e = &m["external"];
    assert!(
        e.is_object(),
        "the shipped stager manifest has no external figures"
    );
    let studies = e["studies"].as_u64().unwrap();
    assert!(studies >= 60, "the external test has {studies} studies");
    let seed = e["seed"].as_u64().unwrap();
    reproduce(&["--family", "external"], studies, seed, &e["pipeline"]);
}

fn reproduce(phantom_args: &[&str], studies: u64, seed: u64, recorded: &Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["phantom", "--out"])
        .arg(dir.path())
        .args([
            "--studies",
            &studies.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .args(phantom_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "--json", "--truth"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "studies",
        "heads_with_truth",
        "heads_not_analysed",
        "heads_indeterminate",
        "study_status",
    ] {
        assert_eq!(v[key], recorded[key], "{key}");
    }
    let (t, r) = (&v["table"], &recorded["table"]);
    assert_eq!(t["confusion"], r["confusion"]);
    let close = |a: &Value, b: &Value, what: &str| match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => assert!((x - y).abs() < 1e-6, "{what}: {x} vs {y}"),
        _ => assert_eq!(a, b, "{what}"),
    };
    close(&t["overall_accuracy"], &r["overall_accuracy"], "accuracy");
    for c in 0..3 {
        for k in ["sensitivity", "specificity", "f1", "auc"] {
            close(
                &t["per_class"][c][k],
                &r["per_class"][c][k],
                &format!("class {c} {k}"),
            );
        }
    }
}
