//! `onfh-edge eval` on files an integrator would have: a truth CSV, `analyze --json`
//! output and a reader CSV → the table, McNemar and a ROC PNG, figures checked by hand.

use std::process::Command;

fn result(study: &str, heads: &[(&str, &str, [f64; 3])]) -> serde_json::Value {
    serde_json::json!({
        "study_instance_uid": study, "series_instance_uid": "9.9", "accession_number": "A",
        "status": "ok", "reason": null,
        "model": {"name": "m", "version": "0", "intended_use": "research demo",
                  "detector_sha256": "", "stager_sha256": ""},
        "heads": heads.iter().map(|(side, stage, p)| serde_json::json!({
            "side": side, "stage": stage, "early_onfh": *stage != "0",
            "probabilities": {"0": p[0], "I": p[1], "II": p[2]},
            "detection_score": 0.9, "center_lps_mm": [0.0, 0.0, 0.0],
            "bbox_lps_mm": [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], "heatmap": null
        })).collect::<Vec<_>>(),
        "series": [], "skipped_files": 0,
        "timings_ms": {"volume": 0, "detect": 0, "stage": 0, "gradcam": 0, "total": 0}
    })
}

#[test]
fn eval_computes_the_table_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.csv");
    std::fs::write(
        &truth,
        "study_instance_uid,side,stage\n1.1,R,0\n1.1,L,0\n1.2,R,I\n1.2,L,I\n1.3,R,II\n1.3,L,II\n1.4,R,II\n",
    )
    .unwrap();
    // Predicted: 0 I | I I | II 0; study 1.4 was not analysed.
    let results = [
        result(
            "1.1",
            &[("R", "0", [0.8, 0.1, 0.1]), ("L", "I", [0.3, 0.6, 0.1])],
        ),
        result(
            "1.2",
            &[("R", "I", [0.1, 0.7, 0.2]), ("L", "I", [0.2, 0.5, 0.3])],
        ),
        result(
            "1.3",
            &[
                ("R", "II", [0.1, 0.2, 0.7]),
                ("L", "indeterminate", [0.5, 0.1, 0.4]),
            ],
        ),
    ];
    let res = dir.path().join("results.json");
    std::fs::write(
        &res,
        results
            .iter()
            .map(|r| serde_json::to_string_pretty(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    // A reader right on all six heads: the model is right only where the reader is too.
    let readers = dir.path().join("readers.csv");
    std::fs::write(
        &readers,
        "study_instance_uid,side,reader,stage\n1.1,R,A,0\n1.1,L,A,0\n1.2,R,A,I\n1.2,L,A,I\n1.3,R,A,II\n1.3,L,A,II\n",
    )
    .unwrap();
    let roc = dir.path().join("roc.png");
    let out = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["eval", "--json", "--truth"])
        .arg(&truth)
        .arg("--results")
        .arg(&res)
        .arg("--readers")
        .arg(&readers)
        .arg("--roc")
        .arg(&roc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["heads_with_truth"], 7);
    assert_eq!(v["heads_not_analysed"], 1);
    assert_eq!(v["heads_indeterminate"], 1);
    let t = &v["table"];
    assert_eq!(t["heads"], 6);
    assert_eq!(
        t["confusion"],
        serde_json::json!([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    );
    let f = |x: &serde_json::Value| x.as_f64().unwrap();
    assert!((f(&t["overall_accuracy"]) - 4.0 / 6.0).abs() < 1e-9);
    assert!((f(&t["per_class"][0]["auc"]) - 7.0 / 8.0).abs() < 1e-9);
    assert!((f(&t["per_class"][1]["f1"]) - 0.8).abs() < 1e-9);
    // McNemar: b = 0 (model only right), c = 2 (reader only right): exact p = 2 · 1/4.
    let r = &v["readers"][0];
    assert_eq!(r["reader"], "A");
    assert_eq!(r["mcnemar"]["model_only_right"], 0);
    assert_eq!(r["mcnemar"]["reader_only_right"], 2);
    assert!((f(&r["mcnemar"]["p_value"]) - 0.5).abs() < 1e-9);
    assert!((f(&r["reader_accuracy"]) - 1.0).abs() < 1e-9);
    // The ROC plot is a real PNG of the expected size.
    let bytes = std::fs::read(&roc).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let info = dec.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (420, 440));

    // A malformed truth file is a clear error.
    std::fs::write(&truth, "study_instance_uid,side,stage\n1.1,R,IV\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["eval", "--truth"])
        .arg(&truth)
        .arg("--results")
        .arg(&res)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown stage"));
}
