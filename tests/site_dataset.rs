//! Training and evaluating on a site's own labelled studies, end to end: a dataset written
//! by an independent script (`fixtures/site_dataset.py`: pydicom DICOM, nibabel label maps,
//! a CSV) trains both networks for a few steps (`train --dataset`, fine-tuned from the
//! shipped models), is evaluated (`evaluate-models --dataset`), exported, and the exported
//! models are loaded by the daemon, which analyses a study of the dataset's test split.
//! Bad datasets give errors that name the row.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BIN, Daemon, storescu, wait_until};
use serde_json::Value;
use sha2::Digest;

fn write_dataset(dir: &Path) -> PathBuf {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/site_dataset.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "site_dataset.py (needs pydicom and nibabel): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("dataset.csv")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn manifest(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn a_site_dataset_trains_evaluates_exports_and_loads_in_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path());
    let csv_s = csv.to_str().unwrap();
    let models = dir.path().join("models");
    let models_s = models.to_str().unwrap();
    let train = dir.path().join("train");
    for (what, init, extra) in [
        (
            "detector",
            "models/3dc-yolox-small.json",
            &["--batch", "2"][..],
        ),
        (
            "stager",
            "models/3d-muldensenet-small.json",
            &["--batch", "4", "--jitter-copies", "1"][..],
        ),
    ] {
        let out = train.join(what);
        let mut args = vec![
            "train",
            what,
            "--dataset",
            csv_s,
            "--init",
            init,
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--randomised",
            "0",
            "--val-randomised",
            "0",
            "--export",
            models_s,
        ];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = run(&args);
        assert!(ok, "train {what}: {stdout}\n{stderr}");
    }
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&csv).unwrap()));
    for name in ["3dc-yolox-small.json", "3d-muldensenet-small.json"] {
        let m = manifest(&models.join(name));
        let d = &m["training"]["dataset"];
        assert_eq!(d["sha256"], sha.as_str(), "{name}: {m:#}");
        assert_eq!(d["studies"]["train"], 4, "{name}");
        assert_eq!(d["studies"]["val"], 1, "{name}");
        assert_eq!(d["studies"]["test"], 1, "{name}");
        assert_eq!(d["heads"]["train"]["II"], 3, "{name}");
        assert!(
            m["training"]["command"]
                .as_str()
                .unwrap()
                .contains("--dataset"),
            "{name}"
        );
        assert!(
            m["training"]["data"]
                .as_str()
                .unwrap()
                .contains("fine-tuned")
        );
    }

    // The paper's table on the dataset's test split (one study, two heads).
    let (ok, stdout, stderr) = run(&[
        "evaluate-models",
        "--detector",
        &format!("{models_s}/3dc-yolox-small.json"),
        "--stager",
        &format!("{models_s}/3d-muldensenet-small.json"),
        "--studies",
        "0",
        "--external-studies",
        "0",
        "--dataset",
        csv_s,
        "--json",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let e: Value = serde_json::from_str(&stdout).unwrap();
    assert!(e["in_distribution"].is_null() && e["external"].is_null());
    let d = &e["dataset"];
    assert_eq!(d["family"], "dataset");
    assert_eq!(d["studies"], 1);
    assert_eq!(d["pipeline"]["heads_with_truth"], 2, "{d:#}");
    assert!(d["test_set"].as_str().unwrap().contains(&sha));

    // The exported models run in the daemon: a test-split study goes through a real C-STORE
    // association and is analysed with them.
    let mut daemon = Daemon::start(&format!("[analysis]\nmodels_dir = \"{models_s}\"\n"));
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("studies/p005"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (log, ok) = storescu(daemon.port, &[], &files);
    assert!(ok, "{log}");
    assert!(
        wait_until(Duration::from_secs(90), || daemon
            .count("SELECT COUNT(*) FROM analyses")
            == 1),
        "not analysed:\n{}",
        daemon.log()
    );
    let text = daemon.cli("results", &["--json"]);
    let detector_sha = manifest(&models.join("3dc-yolox-small.json"))["weights"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.contains(&format!("\"detector_sha256\": \"{detector_sha}\""))
            || text.contains(&format!("\"detector_sha256\":\"{detector_sha}\"")),
        "the daemon did not analyse with the exported detector: {text}"
    );
    daemon.sigterm();
}

#[test]
fn bad_datasets_are_refused_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path());
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |name: &str, body: String, needle: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let out = dir.path().join(format!("out_{name}"));
        let (ok, stdout, stderr) = run(&[
            "train",
            "stager",
            "--dataset",
            path.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "1",
            "--randomised",
            "0",
            "--val-randomised",
            "0",
        ]);
        assert!(!ok, "{name}: accepted\n{stdout}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
    };
    // An unknown stage.
    let mut l = lines.clone();
    let bad = l[3].replace(",II,", ",III,");
    l[3] = &bad;
    check("stage.csv", l.join("\n"), "row 4: stage \"III\"");
    // A study folder that is not there.
    let mut l = lines.clone();
    let bad = l[5].replace("studies/p002", "studies/p999");
    l[5] = &bad;
    check("missing.csv", l.join("\n"), "row 6: study folder");
    // A label map drawn on another grid: the left head's map moved 40 mm.
    let map = onfh_edge::volume::nifti::read(&dir.path().join("labels/p000.nii.gz")).unwrap();
    let mut affine = map.affine;
    affine[0][3] += 40.0;
    let moved = onfh_edge::volume::Volume {
        data: map.data.clone(),
        dims: map.dims,
        affine,
        series_uid: String::new(),
        study_uid: String::new(),
    };
    onfh_edge::volume::nifti::write(&moved, &dir.path().join("labels/moved.nii"), "moved").unwrap();
    let mut l = lines.clone();
    let bad = l[2].replace("labels/p000.nii.gz", "labels/moved.nii");
    l[2] = &bad;
    check("aligned.csv", l.join("\n"), "row 3: label map");
    // No stage II head to train on.
    let l: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|r| !r.contains(",II,") || r.contains(",test"))
        .collect();
    check(
        "classes.csv",
        l.join("\n"),
        "no stage II head in the train split",
    );
}
