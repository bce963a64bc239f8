//! `onfh-edge train stager`: a tiny run end to end — phantom studies and domain-randomised
//! ones, crops, epochs, checkpoints, resume.

use std::process::Command;

#[test]
#[ignore = "slow tier: cargo test -- --include-ignored"]
fn train_stager_command_runs_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = |epochs: &str, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
            .args([
                "train",
                "stager",
                "--train-studies",
                "3",
                "--val-studies",
                "2",
                "--randomised",
                "3",
                "--val-randomised",
                "2",
                "--batch",
                "4",
                "--epochs",
                epochs,
                "--out",
            ])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    let text = run("2", &[]);
    assert_eq!(text.matches("epoch ").count(), 2, "{text}");
    // Both validation sets are measured: the classic phantom's and the randomised one.
    assert!(text.contains("randomised"), "{text}");
    assert!(text.contains("not patient data"), "{text}");
    assert!(dir.path().join("stager.best.safetensors").is_file());
    let last = dir.path().join("stager.last.safetensors");
    let before = std::fs::read(&last).unwrap();
    run("1", &["--resume"]);
    assert_ne!(
        std::fs::read(&last).unwrap(),
        before,
        "resumed training changed nothing"
    );
    assert!(
        !dir.path().join("scratch").exists(),
        "scratch studies are cleaned up"
    );
    // A wrong preset is a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["train", "stager", "--preset", "huge", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset"));
}
