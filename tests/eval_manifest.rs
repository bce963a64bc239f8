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
    by_style_adds_up(e);
    reproduce(&["--family", "external"], studies, seed, &e["pipeline"]);
}

/// A set's figures by style cover every style of the family and add up to the set's own.
fn by_style_adds_up(set: &Value) {
    let styles = set["by_style"].as_array().expect("figures by style");
    let names: Vec<&str> = styles
        .iter()
        .map(|s| s["style"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["oasis12t", "umr3t", "vantage3t"], "{set}");
    let sum = |k: &str| styles.iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("studies"), set["studies"].as_u64().unwrap());
    assert_eq!(
        sum("both_heads_found"),
        set["detector"]["both_heads_found"].as_u64().unwrap()
    );
    let stager = &set["stager_at_true_centers"];
    let heads = stager["heads"].as_u64().unwrap();
    assert_eq!(sum("heads"), heads);
    let right = (stager["accuracy"].as_f64().unwrap() * heads as f64).round() as u64;
    assert_eq!(sum("staged_right_at_true_centers"), right, "{set}");
    // The pipeline's calls are the heads it staged, less those it left indeterminate.
    let p = &set["pipeline"];
    let n = |k: &str| p[k].as_u64().unwrap();
    let called = n("heads_with_truth") - n("heads_not_analysed") - n("heads_indeterminate");
    assert_eq!(sum("calls_right") + sum("calls_wrong"), called, "{set}");
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

/// The shipped models and manifests copied into a fresh folder, and a reader of them.
fn copied_models() -> (tempfile::TempDir, impl Fn(&str) -> Value) {
    let dir = tempfile::tempdir().unwrap();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    for f in std::fs::read_dir(&models).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let path = dir.path().to_owned();
    let read = move |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(path.join(name)).unwrap()).unwrap()
    };
    (dir, read)
}

/// `onfh-edge evaluate-models ARGS` on the models in `dir`.
fn evaluate_models(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("evaluate-models")
        .args(args)
        .arg("--detector")
        .arg(dir.join("3dc-yolox-small.json"))
        .arg("--stager")
        .arg(dir.join("3d-muldensenet-small.json"))
        .output()
        .unwrap()
}

/// `--randomised` measures the networks on the randomised development studies; they are
/// never written into the manifests.
#[test]
fn development_studies_are_measured_and_never_written() {
    let (dir, _) = copied_models();
    let only = [
        "--studies",
        "0",
        "--external-studies",
        "0",
        "--randomised",
        "3",
    ];
    let out = evaluate_models(dir.path(), &[&only[..], &["--json"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let e: Value = serde_json::from_str(&text[..text.rfind('}').unwrap() + 1]).unwrap();
    let d = &e["development"];
    assert_eq!(d["studies"], 3, "{e}");
    assert_eq!(d["seed"], 50001000);
    assert_eq!(d["stager_at_true_centers"]["heads"], 6);
    for k in ["detector", "detector_network_alone"] {
        assert!(d[k]["both_heads_found"].as_u64().unwrap() <= 3, "{k}");
        assert!(d[k]["mean_center_error_mm"].as_f64().unwrap().is_finite());
        // A head without a candidate is counted, not an infinite (null) maximum.
        assert!(
            d[k]["max_center_error_over_radius"].as_f64().is_some(),
            "{k}"
        );
        assert!(
            d[k]["heads_without_candidate"].as_u64().unwrap() <= 6,
            "{k}"
        );
    }
    assert!(e["in_distribution"].is_null() && e["external"].is_null());
    assert!(e["fp16_vs_f32"].is_null());
    // `--write` with nothing but development studies is refused, the manifests untouched.
    let before = std::fs::read(dir.path().join("3d-muldensenet-small.json")).unwrap();
    let out = evaluate_models(dir.path(), &[&only[..], &["--write"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--write needs a test set"), "{err}");
    let after = std::fs::read(dir.path().join("3d-muldensenet-small.json")).unwrap();
    assert_eq!(before, after);
}

/// `--write` without reference checkpoints writes the test figures measured, each with the
/// command that made it, and keeps the rest — each network's fp16 comparison with its
/// command too.
#[test]
fn write_without_references_keeps_the_fp16_comparison_and_its_command() {
    let (dir, read) = copied_models();
    // The stager's manifest as written before the comparison had its own command key.
    let path = dir.path().join("3d-muldensenet-small.json");
    let mut older = read("3d-muldensenet-small.json");
    let made_by = older["metrics"]["command"].clone();
    older["metrics"]
        .as_object_mut()
        .unwrap()
        .remove("fp16_vs_f32_command");
    // Both manifests as written when one row covered both networks.
    let dpath = dir.path().join("3dc-yolox-small.json");
    let mut detector_before = read("3dc-yolox-small.json");
    let mut combined = older["metrics"]["fp16_vs_f32"].clone();
    for (k, v) in detector_before["metrics"]["fp16_vs_f32"]
        .as_object()
        .unwrap()
    {
        combined[k] = v.clone();
    }
    assert_eq!(combined.as_object().unwrap().len(), 4, "{combined}");
    older["metrics"]["fp16_vs_f32"] = combined.clone();
    detector_before["metrics"]["fp16_vs_f32"] = combined.clone();
    std::fs::write(&path, serde_json::to_vec_pretty(&older).unwrap()).unwrap();
    std::fs::write(&dpath, serde_json::to_vec_pretty(&detector_before).unwrap()).unwrap();
    let out = evaluate_models(
        dir.path(),
        &["--studies", "0", "--external-studies", "1", "--write"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = &read("3d-muldensenet-small.json")["metrics"];
    assert_eq!(s["external"]["studies"], 1, "{s}");
    // The first external study is of the first style, and its figures by style are its own.
    let styles = s["external"]["by_style"].as_array().unwrap();
    assert_eq!(styles.len(), 1, "{s}");
    assert_eq!(styles[0]["style"], "vantage3t");
    assert_eq!(
        (styles[0]["studies"].clone(), styles[0]["heads"].clone()),
        (1.into(), 2.into())
    );
    assert_eq!(
        styles[0]["both_heads_found"],
        s["external"]["detector"]["both_heads_found"]
    );
    let command = s["external"]["command"].as_str().unwrap();
    assert!(command.contains("--external-studies 1"), "{command}");
    // The top-level figures are the in-distribution ones, not measured this time: their
    // command stays.
    assert_eq!(s["command"], older["metrics"]["command"]);
    assert_eq!(s["fp16_vs_f32_command"], made_by);
    let d = &read("3dc-yolox-small.json")["metrics"];
    let b = &detector_before["metrics"];
    assert_eq!(d["fp16_vs_f32_command"], b["fp16_vs_f32_command"]);
    // Each manifest keeps the comparison of its own network's weights, and only that.
    for (row, own) in [
        (
            &s["fp16_vs_f32"],
            ["max_probability_difference", "stage_disagreements"],
        ),
        (
            &d["fp16_vs_f32"],
            ["max_detection_score_difference", "max_center_difference_mm"],
        ),
    ] {
        assert_eq!(row.as_object().unwrap().len(), 2, "{row}");
        for k in own {
            assert_eq!(row[k], combined[k], "{k}");
        }
    }
    assert_eq!(d["command"], b["command"]);
    assert_eq!(d["external"]["command"], s["external"]["command"]);
}
