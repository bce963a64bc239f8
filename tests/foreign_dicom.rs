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
