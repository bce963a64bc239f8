//! Phantom studies through scan, selection and assembly: the right series wins, the
//! geometry puts each ground-truth head centre on the head, and bad series fail clearly.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use onfh_edge::phantom::anatomy::Stage;
use onfh_edge::phantom::{self, Options, Orientation, StudyTruth};
use onfh_edge::volume::{self, Rules, Verdict, Volume, VolumeError};

fn study(dir: &Path, seed: u64, t2: Orientation, reverse: bool) -> StudyTruth {
    phantom::generate_study(
        dir,
        seed,
        &Options {
            stages: Some([Stage::S0, Stage::S2]),
            t2_orientation: Some(t2),
            reverse_numbering: Some(reverse),
            enhanced_t2: Some(false),
            style: None,
        },
    )
    .unwrap()
}

fn series_files(dir: &Path, truth: &StudyTruth, kind: &str) -> Vec<PathBuf> {
    let s = truth.series.iter().find(|s| s.kind == kind).unwrap();
    volume::collect_files(&[dir.join(&s.folder)]).unwrap()
}

fn assemble(files: &[PathBuf]) -> Result<Volume, VolumeError> {
    let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    volume::assemble_files(&refs)
}

/// Mean of the voxels within `r_mm` of a patient point.
fn mean_near(v: &Volume, p: [f64; 3], r_mm: f64) -> f32 {
    let c = v.patient_to_voxel(p);
    let sp = v.spacing();
    let (mut sum, mut n) = (0.0f64, 0usize);
    let reach = [0, 1, 2].map(|a| (r_mm / sp[a]).ceil() as i64);
    for dk in -reach[2]..=reach[2] {
        for dj in -reach[1]..=reach[1] {
            for di in -reach[0]..=reach[0] {
                let (i, j, k) = (
                    c[0].round() as i64 + di,
                    c[1].round() as i64 + dj,
                    c[2].round() as i64 + dk,
                );
                if i < 0
                    || j < 0
                    || k < 0
                    || i >= v.dims[0] as i64
                    || j >= v.dims[1] as i64
                    || k >= v.dims[2] as i64
                {
                    continue;
                }
                let q = v.voxel_to_patient([i as f64, j as f64, k as f64]);
                let d =
                    ((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2) + (q[2] - p[2]).powi(2)).sqrt();
                if d <= r_mm {
                    sum += v.get(i as usize, j as usize, k as usize) as f64;
                    n += 1;
                }
            }
        }
    }
    assert!(n > 0, "point {p:?} outside the volume");
    (sum / n as f64) as f32
}

#[test]
fn coronal_study_round_trips_and_heads_land_on_the_heads() {
    let dir = tempfile::tempdir().unwrap();
    let truth = study(dir.path(), 11, Orientation::Coronal, true);
    let files = volume::collect_files(&[dir.path().to_owned()]).unwrap();
    let report = volume::scan_files(&files);
    assert_eq!(report.skipped, 1, "truth.json is the one non-DICOM file");
    let sel = volume::select(&report.series, &Rules::default());
    let chosen = &report.series[sel.chosen.expect("a T2 series is chosen")];
    let t2 = truth
        .series
        .iter()
        .find(|s| s.kind == "t2" && s.orientation == Orientation::Coronal)
        .unwrap();
    assert_eq!(chosen.series_uid, t2.series_uid);
    for v in &sel.verdicts {
        let kind = &truth
            .series
            .iter()
            .find(|s| s.series_uid == v.series_uid)
            .unwrap()
            .kind;
        match kind.as_str() {
            "localizer" => assert!(
                matches!(&v.verdict, Verdict::Rejected(r) if r.contains("localizer")),
                "{v:?}"
            ),
            "t1" => assert!(
                matches!(&v.verdict, Verdict::Rejected(r) if r.contains("t1") || r.contains("TR")),
                "{v:?}"
            ),
            _ => {}
        }
    }

    let t2v = volume::assemble(chosen).unwrap();
    let t1v = assemble(&series_files(dir.path(), &truth, "t1")).unwrap();
    assert_eq!(t2v.dims[2], 24);
    for head in &truth.heads {
        let c = head.center_lps_mm;
        // T1: fatty marrow is bright at the centre; T2 with fat suppression is dark there.
        let t1c = mean_near(&t1v, c, 4.0);
        let t2c = mean_near(&t2v, c, 4.0);
        assert!(
            t1c > 900.0,
            "{} head centre not on marrow in T1: {t1c}",
            head.side
        );
        assert!(
            t2c < 400.0,
            "{} head centre not on marrow in T2: {t2c}",
            head.side
        );
        // Just above the head: cartilage, fluid and the cortical cup — not marrow.
        let above = [c[0], c[1], c[2] + head.radius_mm + 2.0];
        assert!(
            mean_near(&t1v, above, 1.5) < 0.8 * t1c,
            "{} head edge not where expected",
            head.side
        );
    }
    // The model's tensor (resampled, cropped, resized, windowed): the centres still land on
    // the heads.
    let pre1 = volume::preprocess(&t1v, &volume::Preprocess::default());
    let pre2 = volume::preprocess(&t2v, &volume::Preprocess::default());
    assert_eq!(pre2.dims, [112, 64, 32]);
    for head in &truth.heads {
        let c = head.center_lps_mm;
        let at = pre2.patient_to_voxel(c);
        assert!(
            (0..3).all(|a| at[a] >= 0.0 && at[a] <= (pre2.dims[a] - 1) as f64),
            "{at:?}"
        );
        let (t1c, t2c) = (mean_near(&pre1, c, 3.0), mean_near(&pre2, c, 3.0));
        // Per-volume normalisation (1st..99th percentile onto the reference window) puts
        // fatty marrow high on T1 and low on fat-suppressed T2.
        assert!(t1c > 0.6, "{} tensor T1 centre {t1c}", head.side);
        assert!(t2c < 0.3, "{} tensor T2 centre {t2c}", head.side);
    }

    // Shuffled and reversed file order give the same volume.
    let mut files = series_files(dir.path(), &truth, "t2");
    files.reverse();
    files.swap(0, 7);
    files.swap(3, 19);
    let again = assemble(&files).unwrap();
    assert_eq!(again.data, t2v.data);
    assert_eq!(again.affine, t2v.affine);
}

#[test]
fn axial_t2_is_chosen_when_alone_and_agrees_with_the_coronal_t1() {
    let dir = tempfile::tempdir().unwrap();
    let truth = study(dir.path(), 12, Orientation::Axial, false);
    let report = volume::scan_files(&volume::collect_files(&[dir.path().to_owned()]).unwrap());
    let sel = volume::select(&report.series, &Rules::default());
    let chosen = &report.series[sel.chosen.unwrap()];
    assert_eq!(chosen.planes(), vec![volume::Plane::Axial]);
    let t2v = volume::assemble(chosen).unwrap();
    let t1v = assemble(&series_files(dir.path(), &truth, "t1")).unwrap();
    for head in &truth.heads {
        let c = head.center_lps_mm;
        assert!(
            mean_near(&t2v, c, 4.0) < 400.0,
            "{} axial T2 centre",
            head.side
        );
        assert!(
            mean_near(&t1v, c, 4.0) > 900.0,
            "{} coronal T1 centre",
            head.side
        );
    }
}

fn expect_err(files: &[PathBuf], check: impl Fn(&VolumeError) -> bool) {
    match assemble(files) {
        Ok(_) => panic!("a bad series assembled"),
        Err(e) => assert!(check(&e), "unexpected error: {e}"),
    }
}

fn rewrite(src: &Path, dst: &Path, f: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(src).unwrap();
    f(&mut obj);
    obj.write_to_file(dst).unwrap();
}

#[test]
fn bad_series_give_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let truth = study(dir.path(), 13, Orientation::Coronal, false);
    let good = series_files(dir.path(), &truth, "t2");
    let work = dir.path().join("bad");
    std::fs::create_dir_all(&work).unwrap();

    // A missing slice.
    let mut missing = good.clone();
    missing.remove(10);
    expect_err(&missing, |e| matches!(e, VolumeError::MissingSlice { .. }));

    // Duplicate positions: a copy of a slice under another UID.
    let dup = work.join("dup.dcm");
    rewrite(&good[5], &dup, |o| {
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3.4.5"),
        ));
    });
    let mut with_dup = good.clone();
    with_dup.push(dup);
    expect_err(&with_dup, |e| {
        matches!(e, VolumeError::DuplicatePosition { .. })
    });

    // Mixed orientations: an axial localizer plane in the coronal stack.
    let loc = series_files(dir.path(), &truth, "localizer");
    let axial_loc = loc
        .iter()
        .find(|p| {
            let o = dicom_object::open_file(p).unwrap();
            let v = o
                .element(tags::IMAGE_ORIENTATION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap();
            volume::Plane::of([v[0], v[1], v[2]], [v[3], v[4], v[5]]) == volume::Plane::Axial
        })
        .unwrap()
        .clone();
    let mut mixed = good.clone();
    mixed.push(axial_loc);
    expect_err(&mixed, |e| {
        matches!(e, VolumeError::MixedOrientation { .. })
    });

    // A non-image object.
    let noimg = work.join("noimg.dcm");
    rewrite(&good[0], &noimg, |o| {
        o.remove_element(tags::PIXEL_DATA);
    });
    let mut with_noimg = good.clone();
    with_noimg[0] = noimg;
    expect_err(&with_noimg, |e| matches!(e, VolumeError::NotAnImage { .. }));

    // Zero-size pixel data.
    let zero = work.join("zero.dcm");
    rewrite(&good[0], &zero, |o| {
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::Empty,
        ));
    });
    let mut with_zero = good.clone();
    with_zero[0] = zero;
    expect_err(&with_zero, |e| matches!(e, VolumeError::ZeroSize { .. }));

    // Empty.
    expect_err(&[], |e| matches!(e, VolumeError::Empty));
}

#[test]
fn mutated_headers_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let truth = study(dir.path(), 14, Orientation::Coronal, false);
    let good = series_files(dir.path(), &truth, "t2");
    let work = dir.path().join("mut");
    std::fs::create_dir_all(&work).unwrap();
    let mutations: Vec<(dicom_core::Tag, VR, &str)> = vec![
        (tags::IMAGE_POSITION_PATIENT, VR::DS, "1\\2"),
        (tags::IMAGE_POSITION_PATIENT, VR::DS, "a\\b\\c"),
        (tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0"),
        (tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "0\\0\\0\\0\\0\\0"),
        (tags::PIXEL_SPACING, VR::DS, "0\\0"),
        (tags::PIXEL_SPACING, VR::DS, "-1"),
        (tags::ROWS, VR::US, "0"),
        (tags::NUMBER_OF_FRAMES, VR::IS, "7"),
        (tags::BITS_ALLOCATED, VR::US, "3"),
        (tags::SAMPLES_PER_PIXEL, VR::US, "0"),
        (tags::IMAGE_POSITION_PATIENT, VR::DS, "NaN\\0\\0"),
        (tags::PIXEL_SPACING, VR::DS, "inf\\inf"),
        (
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\NaN\\0",
        ),
    ];
    for (n, (tag, vr, value)) in mutations.iter().enumerate() {
        let path = work.join(format!("m{n}.dcm"));
        rewrite(&good[3], &path, |o| {
            let v = if *vr == VR::US {
                PrimitiveValue::from(value.parse::<u16>().unwrap())
            } else {
                PrimitiveValue::from(*value)
            };
            o.put(DataElement::new(*tag, *vr, v));
        });
        let mut files = good.clone();
        files[3] = path;
        // Whatever the mutation, the answer is a value, not a panic.
        let r = std::panic::catch_unwind(|| assemble(&files));
        assert!(r.is_ok(), "mutation {n} ({tag:?} = {value:?}) panicked");
        assert!(
            r.unwrap().is_err(),
            "mutation {n} ({tag:?} = {value:?}) was accepted"
        );
    }
    // Truncated files.
    for cut in [10usize, 200, 1000, 5000] {
        let path = work.join(format!("t{cut}.dcm"));
        let bytes = std::fs::read(&good[3]).unwrap();
        std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
        let mut files = good.clone();
        files[3] = path;
        assert!(assemble(&files).is_err());
    }
}

#[test]
fn nifti_reads_back_in_nibabel_with_the_dicom_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let truth = study(dir.path(), 15, Orientation::Axial, true);
    let files = series_files(dir.path(), &truth, "t2");
    let v = assemble(&files).unwrap();
    let nii = dir.path().join("t2.nii");
    onfh_edge::volume::nifti::write(&v, &nii, onfh_edge::phantom::DISCLAIMER).unwrap();
    // An independent reader: nibabel (installed by .ci/run from PyPI).
    let script = r#"
import sys, json, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
ijk = [int(x) for x in sys.argv[2:5]]
print(json.dumps({
  "sform": img.get_sform().tolist(), "qform": img.get_qform().tolist(),
  "shape": list(img.shape), "value": float(np.asarray(img.dataobj)[tuple(ijk)]),
  "codes": [int(img.header["sform_code"]), int(img.header["qform_code"])],
}))
"#;
    let (i, j, k) = (37usize, 101usize, 13usize);
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&nii)
        .args([i.to_string(), j.to_string(), k.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "nibabel could not read the file (pip install nibabel): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["shape"], serde_json::json!(v.dims));
    assert_eq!(r["codes"], serde_json::json!([1, 1]));
    assert_eq!(r["value"].as_f64().unwrap() as f32, v.get(i, j, k));
    // The DICOM geometry of voxel (i, j, k), straight from the file's own tags.
    let floats = |p: &Path, tag| -> Vec<f64> {
        dicom_object::open_file(p)
            .unwrap()
            .element(tag)
            .unwrap()
            .to_multi_float64()
            .unwrap()
    };
    let mut sorted: Vec<(f64, PathBuf)> = files
        .iter()
        .map(|p| {
            let ipp = floats(p, tags::IMAGE_POSITION_PATIENT);
            let iop = floats(p, tags::IMAGE_ORIENTATION_PATIENT);
            let n = [
                iop[1] * iop[5] - iop[2] * iop[4],
                iop[2] * iop[3] - iop[0] * iop[5],
                iop[0] * iop[4] - iop[1] * iop[3],
            ];
            (ipp[0] * n[0] + ipp[1] * n[1] + ipp[2] * n[2], p.clone())
        })
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let slice = &sorted[k].1;
    let ipp = floats(slice, tags::IMAGE_POSITION_PATIENT);
    let iop = floats(slice, tags::IMAGE_ORIENTATION_PATIENT);
    let ps = floats(slice, tags::PIXEL_SPACING);
    let lps: Vec<f64> = (0..3)
        .map(|a| ipp[a] + iop[a] * ps[1] * i as f64 + iop[3 + a] * ps[0] * j as f64)
        .collect();
    let ras_expected = [-lps[0], -lps[1], lps[2]];
    // The sform is the exact affine. The qform is a unit quaternion whose first component
    // NIfTI does not store; for a rotation near 180 degrees (any axial or coronal LPS
    // stack seen from RAS) that component is recomputed from float32 values near 1 and
    // loses precision, so it is held to half a millimetre.
    for (form, tolerance) in [("sform", 0.05), ("qform", 0.5)] {
        let m = &r[form];
        let ras: Vec<f64> = (0..3)
            .map(|row| {
                let g = |c: usize| m[row][c].as_f64().unwrap();
                g(0) * i as f64 + g(1) * j as f64 + g(2) * k as f64 + g(3)
            })
            .collect();
        for a in 0..3 {
            assert!(
                (ras[a] - ras_expected[a]).abs() < tolerance,
                "{form}: voxel maps to {ras:?}, DICOM says {ras_expected:?}"
            );
        }
    }
}

#[test]
fn enhanced_mr_multi_frame_t2_is_selected_and_assembled_from_its_functional_groups() {
    let dir = tempfile::tempdir().unwrap();
    let truth = phantom::generate_study(
        dir.path(),
        16,
        &Options {
            stages: Some([Stage::S2, Stage::S1]),
            t2_orientation: Some(Orientation::Coronal),
            reverse_numbering: Some(true),
            enhanced_t2: Some(true),
            style: None,
        },
    )
    .unwrap();
    let t2 = truth.series.iter().find(|s| s.kind == "t2").unwrap();
    let files = series_files(dir.path(), &truth, "t2");
    assert_eq!(files.len(), 1, "one multi-frame instance");
    let report = volume::scan_files(&volume::collect_files(&[dir.path().to_owned()]).unwrap());
    let sel = volume::select(&report.series, &Rules::default());
    let chosen = &report.series[sel.chosen.unwrap()];
    assert_eq!(chosen.series_uid, t2.series_uid);
    assert_eq!(chosen.slices(), t2.instances);
    assert_eq!(
        chosen.sop_class_uid,
        dicom_dictionary_std::uids::ENHANCED_MR_IMAGE_STORAGE
    );
    let v = volume::assemble(chosen).unwrap();
    assert_eq!(v.dims[2], t2.instances);
    let t1v = assemble(&series_files(dir.path(), &truth, "t1")).unwrap();
    for head in &truth.heads {
        let c = head.center_lps_mm;
        assert!(
            mean_near(&v, c, 4.0) < 400.0,
            "{} enhanced T2 centre",
            head.side
        );
        assert!(mean_near(&t1v, c, 4.0) > 900.0, "{} T1 centre", head.side);
    }
}

#[test]
fn enhanced_mr_without_geometry_is_a_clear_error() {
    // pydicom-data's emri_small style: a multi-frame object whose functional groups were
    // stripped. Made here from a phantom file by removing them.
    let dir = tempfile::tempdir().unwrap();
    let truth = phantom::generate_study(
        dir.path(),
        17,
        &Options {
            enhanced_t2: Some(true),
            t2_orientation: Some(Orientation::Coronal),
            ..Options::default()
        },
    )
    .unwrap();
    let file = series_files(dir.path(), &truth, "t2").remove(0);
    let bare = dir.path().join("bare.dcm");
    rewrite(&file, &bare, |o| {
        o.remove_element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
        o.remove_element(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    });
    expect_err(&[bare], |e| {
        matches!(e, VolumeError::MissingGeometry { .. })
    });
}

/// The stage I focus of the left head, bright on fat-suppressed T2, must be where the
/// ground truth puts it — and not at the point mirrored through the head's centre, nor on
/// the normal right head. A left/right, front/back or up/down flip anywhere between the
/// phantom and the tensor fails here; the Philips-like style stores values under a rescale
/// slope of 2.5, so a missing rescale fails too.
#[test]
fn lesion_side_and_direction_survive_assembly_and_preprocessing() {
    for (t2_orientation, enhanced, style, reverse) in [
        (Orientation::Coronal, false, "philips-like 1.5T", true),
        (Orientation::Axial, false, "ge-like 1.5T", false),
        (Orientation::Coronal, true, "philips-like 1.5T", true),
        (Orientation::Axial, true, "siemens-like 3T", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let truth = phantom::generate_study(
            dir.path(),
            31,
            &Options {
                stages: Some([Stage::S0, Stage::S1]),
                t2_orientation: Some(t2_orientation),
                reverse_numbering: Some(reverse),
                enhanced_t2: Some(enhanced),
                style: Some(style),
            },
        )
        .unwrap();
        let case = format!("{t2_orientation:?} enhanced={enhanced} {style}");
        let report = volume::scan_files(&volume::collect_files(&[dir.path().to_owned()]).unwrap());
        let sel = volume::select(&report.series, &Rules::default());
        let v = volume::assemble(&report.series[sel.chosen.unwrap()]).unwrap();
        let pre = volume::preprocess(&v, &volume::Preprocess::default());
        let l = truth
            .heads
            .iter()
            .find(|h| h.side == onfh_edge::result::Side::Left)
            .unwrap();
        let r = truth
            .heads
            .iter()
            .find(|h| h.side == onfh_edge::result::Side::Right)
            .unwrap();
        let focus = l.lesion_center_lps_mm.unwrap();
        let off = [0, 1, 2].map(|a| focus[a] - l.center_lps_mm[a]);
        let antipode = [0, 1, 2].map(|a| l.center_lps_mm[a] - off[a]);
        let right_same = [
            r.center_lps_mm[0] - off[0],
            r.center_lps_mm[1] + off[1],
            r.center_lps_mm[2] + off[2],
        ];
        let bright = mean_near(&v, focus, 3.0);
        assert!(
            bright > 600.0,
            "{case}: focus not bright in the volume: {bright}"
        );
        for (name, p) in [("antipode", antipode), ("right head", right_same)] {
            let x = mean_near(&v, p, 3.0);
            assert!(x < 450.0, "{case}: {name} bright in the volume: {x}");
        }
        let t = mean_near(&pre, focus, 3.0);
        assert!(t > 0.3, "{case}: focus not bright in the tensor: {t}");
        for (name, p) in [("antipode", antipode), ("right head", right_same)] {
            let x = mean_near(&pre, p, 3.0);
            assert!(
                x < 0.5 * t,
                "{case}: {name} as bright as the focus in the tensor: {x} vs {t}"
            );
        }
    }
}
