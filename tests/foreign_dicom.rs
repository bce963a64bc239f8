//! DICOM this project did not write: pydicom's bundled MR samples (installed from PyPI by
//! .ci/run) in several transfer syntaxes, and DCMTK transcodes of them, all read back into
//! the same volume.

use std::path::{Path, PathBuf};
use std::process::Command;

use onfh_edge::volume::{self, Rules, Verdict, VolumeError};

fn pydicom_test_files() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "pydicom is needed (pip install pydicom; .ci/run does it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn volume_of(path: &Path) -> Result<volume::Volume, VolumeError> {
    volume::assemble_files(&[path])
}

#[test]
fn pydicom_mr_samples_and_dcmtk_transcodes_read_alike() {
    let src = pydicom_test_files();
    let reference = volume_of(&src.join("MR_small.dcm")).unwrap();
    assert_eq!(reference.dims, [64, 64, 1]);
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
    ]
    .iter()
    .map(|f| src.join(f))
    .collect();
    for (tool, args, name) in [
        ("/usr/bin/dcmcrle", vec![], "dcmtk_rle.dcm"),
        ("/usr/bin/dcmcjpeg", vec!["+e1"], "dcmtk_jpeg_sv1.dcm"),
        ("/usr/bin/dcmcjpeg", vec!["+el"], "dcmtk_jpeg_p14.dcm"),
    ] {
        let out = work.path().join(name);
        let st = Command::new(tool)
            .args(args)
            .arg(src.join("MR_small.dcm"))
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "{tool} failed");
        files.push(out);
    }
    for f in &files {
        let v = volume_of(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(v.dims, reference.dims, "{}", f.display());
        assert_eq!(v.affine, reference.affine, "{}", f.display());
        assert_eq!(
            v.data,
            reference.data,
            "{} decodes to other pixels",
            f.display()
        );
    }
    // Independently of dicom-rs: pydicom's pixel values (rescaled) and the geometry tags.
    let script = r#"
import sys, json, pydicom
ds = pydicom.dcmread(sys.argv[1])
px = ds.pixel_array.astype(float) * float(getattr(ds, "RescaleSlope", 1)) + float(getattr(ds, "RescaleIntercept", 0))
print(json.dumps({"sum": float(px.sum()), "first": float(px[0, 0]), "last": float(px[-1, -1]),
  "ipp": [float(x) for x in ds.ImagePositionPatient], "iop": [float(x) for x in ds.ImageOrientationPatient],
  "ps": [float(x) for x in ds.PixelSpacing], "shape": list(px.shape)}))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(src.join("MR_small.dcm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum: f64 = reference.data.iter().map(|x| *x as f64).sum();
    assert!((sum - py["sum"].as_f64().unwrap()).abs() < 1e-3 * sum.abs().max(1.0));
    assert_eq!(reference.get(0, 0, 0) as f64, py["first"].as_f64().unwrap());
    assert_eq!(
        reference.get(63, 63, 0) as f64,
        py["last"].as_f64().unwrap()
    );
    let f = |k: &str, i: usize| py[k][i].as_f64().unwrap();
    // Voxel (i, j) = IPP + i * PixelSpacing[1] * row + j * PixelSpacing[0] * col.
    let p = reference.voxel_to_patient([5.0, 9.0, 0.0]);
    for (a, got) in p.iter().enumerate() {
        let expected =
            f("ipp", a) + 5.0 * f("ps", 1) * f("iop", a) + 9.0 * f("ps", 0) * f("iop", 3 + a);
        assert!(
            (got - expected).abs() < 1e-6,
            "axis {a}: {got} vs {expected}"
        );
    }

    // The scan groups them by series and the rules say why one slice is not a volume.
    let report = volume::scan_files(&[src.join("MR_small.dcm")]);
    assert_eq!(report.series.len(), 1);
    let sel = volume::select(&report.series, &Rules::default());
    assert_eq!(sel.chosen, None);
    assert!(matches!(&sel.verdicts[0].verdict, Verdict::Rejected(_)));
}

#[test]
fn truncated_foreign_file_is_an_error() {
    let src = pydicom_test_files();
    let e = volume_of(&src.join("MR_truncated.dcm")).unwrap_err();
    assert!(matches!(e, VolumeError::Decode { .. }), "{e}");
}
