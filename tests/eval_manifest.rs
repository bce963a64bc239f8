//! The shipped models' figures are reproducible: the held-out test set and the external
//! family, written again with `onfh-edge phantom`, evaluated with `onfh-edge eval`, give
//! exactly the tables recorded in the stager's manifest by `onfh-edge evaluate-models
//! --write`; and the development figures (`--randomised`) stay out of the manifests.

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

/// Run `cmd`, which must succeed; its output.
fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn reproduce(phantom_args: &[&str], studies: u64, seed: u64, recorded: &Value) {
    let dir = tempfile::tempdir().unwrap();
    succeeds(
        Command::new(BIN)
            .args(["phantom", "--out"])
            .arg(dir.path())
            .args([
                "--studies",
                &studies.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .args(phantom_args),
    );
    let out = succeeds(
        Command::new(BIN)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["eval", "--json", "--truth"])
            .arg(dir.path()),
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

/// `--randomised` measures the networks on the randomised development studies, and
/// `--write` keeps them (and, without reference checkpoints, the fp16 comparison the
/// manifests already have) out of the manifests' test figures.
#[test]
fn development_studies_are_measured_and_kept_out_of_the_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in std::fs::read_dir(&models).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let manifest = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
    };
    let before = manifest("3d-muldensenet-small.json");
    let out = succeeds(
        Command::new(BIN)
            .args([
                "evaluate-models",
                "--studies",
                "0",
                "--external-studies",
                "0",
            ])
            .args(["--randomised", "3", "--randomised-seed", "50001000"])
            .args(["--json", "--write", "--detector"])
            .arg(dir.path().join("3dc-yolox-small.json"))
            .arg("--stager")
            .arg(dir.path().join("3d-muldensenet-small.json")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let json = &text[..text.rfind('}').unwrap() + 1];
    let e: Value = serde_json::from_str(json).unwrap();
    let d = &e["development"];
    assert_eq!(d["studies"], 3, "{e}");
    assert_eq!(d["seed"], 50001000);
    assert_eq!(d["stager_at_true_centers"]["heads"], 6);
    for k in ["detector", "detector_network_alone"] {
        let found = d[k]["both_heads_found"].as_u64().unwrap();
        assert!(found <= 3, "{k}: {found}");
        assert!(d[k]["mean_center_error_mm"].as_f64().unwrap().is_finite());
    }
    assert!(e["in_distribution"].is_null() && e["external"].is_null());
    // The manifests: no development figures; the test figures and the fp16 comparison
    // they had, with the command that made it.
    let after = manifest("3d-muldensenet-small.json");
    let (b, a) = (&before["metrics"], &after["metrics"]);
    assert!(a.get("development").is_none(), "{a}");
    for k in ["pipeline", "external", "fp16_vs_f32", "test_seed"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    let made_by = b.get("fp16_vs_f32_command").unwrap_or(&b["command"]);
    assert_eq!(a["fp16_vs_f32_command"], *made_by);
    assert!(a["command"].as_str().unwrap().contains("--randomised"));
}
