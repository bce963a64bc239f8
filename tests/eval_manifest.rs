//! The shipped models' figures are reproducible: the held-out test set, written again with
//! `onfh-edge phantom`, evaluated with `onfh-edge eval`, gives exactly the table recorded in
//! the stager's manifest by `onfh-edge evaluate-models --write`.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_onfh-edge");

#[test]
fn eval_on_the_held_out_set_reproduces_the_manifest() {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/3d-muldensenet-small.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let m = &manifest["metrics"];
    assert!(
        m.is_object(),
        "the shipped stager manifest has no measured figures"
    );
    let studies = m["test_studies"].as_u64().unwrap();
    let seed = m["test_seed"].as_u64().unwrap();
    let style = m["test_style"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["phantom", "--out"])
        .arg(dir.path())
        .args([
            "--studies",
            &studies.to_string(),
            "--seed",
            &seed.to_string(),
            "--style",
            style,
        ])
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
    let recorded = &m["pipeline"];
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
