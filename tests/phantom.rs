//! The phantom command and its determinism.

use std::path::Path;

use onfh_edge::phantom;

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = onfh_edge::volume::collect_files(&[dir.to_owned()]).unwrap();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_same_bytes_and_the_cli_writes_truth() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["phantom", "--studies", "2", "--seed", "40", "--out"])
        .arg(a.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not patient data"), "{stdout}");
    phantom::generate(b.path(), 2, 40).unwrap();
    let (ta, tb) = (tree(a.path()), tree(b.path()));
    assert_eq!(ta.len(), tb.len());
    for ((na, da), (nb, db)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(da == db, "{na} differs between two runs of seed 40");
    }
    // Ground truth: two heads, sides R and L, stages from the three allowed, boxes around centres.
    for study in ["study_0000", "study_0001"] {
        let truth: phantom::StudyTruth = serde_json::from_slice(
            &std::fs::read(a.path().join(study).join("truth.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(truth.heads.len(), 2);
        assert_eq!(truth.heads[0].side, onfh_edge::result::Side::Right);
        assert_eq!(truth.heads[1].side, onfh_edge::result::Side::Left);
        for h in &truth.heads {
            for ax in 0..3 {
                assert!(
                    h.bbox_lps_mm[0][ax] < h.center_lps_mm[ax]
                        && h.center_lps_mm[ax] < h.bbox_lps_mm[1][ax]
                );
            }
            assert_eq!(h.early_onfh, h.stage != phantom::anatomy::Stage::S0);
        }
        assert!(truth.note.contains("not patient data"));
        assert!(truth.series.iter().any(|s| s.kind == "t2"));
    }
}
