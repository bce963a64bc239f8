//! `onfh-edge analyze` end to end with the shipped models: a phantom study on disk → JSON
//! result with both heads on the right sides and the phantom's stages, heatmap files whose
//! NIfTI affine is the T2's and whose mass lies in the stage II lesion; and the failure
//! paths (no T2, one hip out of the field of view, pure noise, an empty folder, non-DICOM
//! files) give the right status and exit code.

use std::path::Path;
use std::process::{Command, Output};

use onfh_edge::phantom::{self, Options, Orientation, anatomy::Stage};
use serde_json::Value;

fn analyze(args: &[&Path], out: Option<&Path>) -> (Output, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_onfh-edge"));
    cmd.arg("analyze").arg("--json");
    if let Some(o) = out {
        cmd.arg("--out").arg(o);
    }
    let output = cmd.args(args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, v)
}

/// NIfTI-1 header fields we check: dims and the sform rows; data as f32.
fn read_nifti(path: &Path) -> ([usize; 3], [[f32; 4]; 3], Vec<f32>) {
    use std::io::Read;
    let mut b = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut b)
        .unwrap();
    let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let f32_at = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let dims = [i16_at(42), i16_at(44), i16_at(46)];
    let srow = [0, 1, 2].map(|r| [0, 1, 2, 3].map(|c| f32_at(280 + 16 * r + 4 * c)));
    let off = f32_at(108) as usize;
    let data = b[off..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (dims, srow, data)
}

#[test]
fn a_bilateral_study_is_found_staged_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let out = dir.path().join("out");
    // Held-out seed and scanner style; the right head normal, the left at stage II.
    let truth = phantom::generate_study(
        &study,
        9_000_101,
        &Options {
            stages: Some([Stage::S0, Stage::S2]),
            style: Some("philips-like 1.5T"),
            ..Default::default()
        },
    )
    .unwrap();
    let (output, v) = analyze(&[&study], Some(&out));
    assert!(output.status.success(), "{v:#}");
    assert_eq!(v["status"], "ok", "{v:#}");
    assert_eq!(v["study_instance_uid"], truth.study_uid);
    assert_eq!(v["accession_number"], truth.accession_number);
    assert!(
        v["model"]["intended_use"]
            .as_str()
            .unwrap()
            .contains("not for clinical use")
    );
    let heads = v["heads"].as_array().unwrap();
    assert_eq!(heads.len(), 2);
    for h in heads {
        let side = h["side"].as_str().unwrap();
        let t = truth
            .heads
            .iter()
            .find(|t| t.side.as_str() == side)
            .unwrap();
        assert_eq!(h["stage"], t.stage.label(), "{side}: {h:#}");
        assert_eq!(h["early_onfh"], t.early_onfh);
        let c: Vec<f64> = serde_json::from_value(h["center_lps_mm"].clone()).unwrap();
        let err = (0..3)
            .map(|a| (c[a] - t.center_lps_mm[a]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err < t.radius_mm / 2.0, "{side} centre off by {err:.1} mm");
        let p = &h["probabilities"];
        let sum: f64 = ["0", "I", "II"]
            .iter()
            .map(|k| p[k].as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4);
        for k in ["png", "nifti", "volume_nifti"] {
            assert!(
                Path::new(h["heatmap"][k].as_str().unwrap()).is_file(),
                "{k}"
            );
        }
    }
    // The heatmap NIfTI lies on the T2's grid (same dims, same affine as the T2 NIfTI).
    let (hd, hs, heat) = read_nifti(&out.join("heatmap.nii.gz"));
    let (td, ts, _) = read_nifti(&out.join("t2.nii.gz"));
    assert_eq!(hd, td);
    assert_eq!(hs, ts);
    // Where the stage II head's heatmap lies. The written map keeps values of at least
    // `analysis.heatmap_floor` (0.5) of its maximum. Measured with the shipped stager on
    // eight held-out studies: 73-86 % of its mass inside the lesion (+4 mm), 94-99 % within
    // 8 mm of it, the peak near the segment's border. Asserted: most of the mass inside
    // the necrotic segment (the lesion sphere within the head, +4 mm for the double line at
    // its border), the rest on the head, and the centre of mass toward the superior lesion.
    let left = truth
        .heads
        .iter()
        .find(|t| t.side == onfh_edge::result::Side::Left)
        .unwrap();
    let lesion = left.lesion_sphere.unwrap();
    let (mut in_head, mut in_lesion, mut total) = (0f64, 0f64, 0f64);
    let mut centroid = [0f64; 3];
    let [nx, ny, nz] = hd;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let w = heat[(k * ny + j) * nx + i] as f64;
                if w <= 0.0 {
                    continue;
                }
                // sform maps to RAS; back to LPS.
                let ras = [0, 1, 2].map(|r| {
                    hs[r][0] as f64 * i as f64
                        + hs[r][1] as f64 * j as f64
                        + hs[r][2] as f64 * k as f64
                        + hs[r][3] as f64
                });
                let p = [-ras[0], -ras[1], ras[2]];
                let d = |c: [f64; 3]| {
                    ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)).sqrt()
                };
                // Only the left head's map counts (the right one is explained separately).
                if d(left.center_lps_mm) > 2.0 * left.radius_mm {
                    continue;
                }
                total += w;
                for a in 0..3 {
                    centroid[a] += w * p[a];
                }
                if d(left.center_lps_mm) < left.radius_mm + 4.0 {
                    in_head += w;
                    if d(lesion.center_lps_mm) < lesion.radius_mm + 4.0 {
                        in_lesion += w;
                    }
                }
            }
        }
    }
    assert!(total > 0.0);
    let superior = centroid[2] / total - left.center_lps_mm[2];
    eprintln!(
        "stage II heatmap: {:.0} % in the head, {:.0} % in the segment, centre of mass {superior:.1} mm superior",
        100.0 * in_head / total,
        100.0 * in_lesion / total
    );
    assert!(
        in_lesion / total > 0.5,
        "heatmap mass not mostly inside the lesion"
    );
    assert!(in_head / total > 0.8, "heatmap not on the head");
    assert!(superior > 3.0, "heatmap not toward the superior lesion");
}

#[test]
fn failure_paths_have_the_right_status_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();

    // An empty folder: an error, exit 1.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (o, v) = analyze(&[&empty], None);
    assert_eq!(o.status.code(), Some(1), "{v:#}");
    assert_eq!(v["status"], "error");
    assert!(v["reason"].as_str().unwrap().contains("no DICOM"), "{v:#}");

    // Files that are not DICOM: the same, and they are counted.
    let junk = dir.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("notes.txt"), "not an image").unwrap();
    std::fs::write(junk.join("x.dcm"), vec![0u8; 300]).unwrap();
    let (o, v) = analyze(&[&junk], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(v["skipped_files"], 2, "{v:#}");

    // A study without a T2: no usable series, exit 4.
    let no_t2 = dir.path().join("no_t2");
    let truth = phantom::generate_study(&no_t2, 9_000_202, &Options::default()).unwrap();
    for s in &truth.series {
        if s.kind.starts_with("t2") {
            std::fs::remove_dir_all(no_t2.join(&s.folder)).unwrap();
        }
    }
    let (o, v) = analyze(&[&no_t2], None);
    assert_eq!(o.status.code(), Some(4), "{v:#}");
    assert_eq!(v["status"], "no_usable_series");
    assert!(
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["verdict"] == "rejected")
    );

    // One hip cropped out of the field of view: the T2 only covers the right half.
    let half = dir.path().join("half");
    phantom::generate_study(
        &half,
        9_000_303,
        &Options {
            t2_orientation: Some(Orientation::Coronal),
            ..Default::default()
        },
    )
    .unwrap();
    let t2 = truth_t2_folder(&half);
    crop_right_half(&t2);
    let (o, v) = analyze(&[&half], None);
    assert_eq!(o.status.code(), Some(3), "{v:#}");
    assert_eq!(v["status"], "indeterminate");
    assert!(v["reason"].as_str().unwrap().contains("found"), "{v:#}");

    // Pure noise in place of the anatomy: indeterminate, never a call.
    let noise = dir.path().join("noise");
    phantom::generate_study(&noise, 9_000_404, &Options::default()).unwrap();
    fill_with_noise(&truth_t2_folder(&noise));
    let (o, v) = analyze(&[&noise], None);
    assert_eq!(o.status.code(), Some(3), "{v:#}");
    assert_eq!(v["status"], "indeterminate");
    assert!(v["heads"].as_array().unwrap().is_empty());
}

/// Studies the models cannot read are indeterminate with a reason — never a normal call:
/// another body part (a head, drawn slice by slice), a uniform gel phantom, and a T2 whose
/// every slice is the same constant.
#[test]
fn out_of_distribution_studies_are_indeterminate_never_normal() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u64, &dyn Fn(usize, &mut [u16])); 3] = [
        ("brain", 9_000_505, &|cols, px| draw_head(cols, px)),
        ("gel", 9_000_606, &|cols, px| draw_gel(cols, px)),
        ("flat", 9_000_707, &|_, px| px.fill(800)),
    ];
    for (name, seed, edit) in cases {
        let study = dir.path().join(name);
        let classic = Options {
            enhanced_t2: Some(false),
            ..Default::default()
        };
        phantom::generate_study(&study, seed, &classic).unwrap();
        edit_images(&truth_t2_folder(&study), edit);
        let (o, v) = analyze(&[&study], None);
        assert_eq!(o.status.code(), Some(3), "{name}: {v:#}");
        assert_eq!(v["status"], "indeterminate", "{name}");
        assert!(
            !v["reason"].as_str().unwrap_or_default().is_empty(),
            "{name}: {v:#}"
        );
        for h in v["heads"].as_array().unwrap() {
            assert_ne!(h["stage"], "0", "{name}: a normal call on {h:#}");
        }
    }
}

/// An axial-looking head: skull ring, brain, ventricles, the same on every slice.
fn draw_head(cols: usize, px: &mut [u16]) {
    let rows = px.len() / cols;
    let (cx, cy) = (cols as f64 / 2.0, rows as f64 / 2.0);
    let r = cols.min(rows) as f64 * 0.4;
    for (i, x) in px.iter_mut().enumerate() {
        let (dx, dy) = ((i % cols) as f64 - cx, (i / cols) as f64 - cy);
        let d = (dx * dx / (r * r) + dy * dy / (1.25 * r * 1.25 * r)).sqrt();
        let vent = ((dx.abs() - r * 0.12).powi(2) + (dy * 0.6).powi(2)).sqrt() < r * 0.12;
        *x = if d > 1.0 {
            5
        } else if d > 0.9 {
            900 // scalp
        } else if d > 0.82 {
            40 // skull
        } else if vent {
            1600 // CSF
        } else {
            650 // brain
        };
    }
}

/// A cylindrical gel phantom of uniform signal.
fn draw_gel(cols: usize, px: &mut [u16]) {
    let rows = px.len() / cols;
    let r = cols.min(rows) as f64 * 0.35;
    for (i, x) in px.iter_mut().enumerate() {
        let (dx, dy) = (
            (i % cols) as f64 - cols as f64 / 2.0,
            (i / cols) as f64 - rows as f64 / 2.0,
        );
        *x = if (dx * dx + dy * dy).sqrt() < r {
            1000
        } else {
            3
        };
    }
}

fn truth_t2_folder(study: &Path) -> std::path::PathBuf {
    let t: phantom::StudyTruth =
        serde_json::from_slice(&std::fs::read(study.join("truth.json")).unwrap()).unwrap();
    let s = t
        .series
        .iter()
        .find(|s| s.kind == "t2")
        .expect("a main T2 series");
    study.join(&s.folder)
}

/// Rewrite every image of a folder with `edit(columns, pixels)`.
fn edit_images(folder: &Path, edit: impl Fn(usize, &mut [u16])) {
    use dicom_dictionary_std::tags;
    for e in std::fs::read_dir(folder).unwrap() {
        let path = e.unwrap().path();
        let mut obj = dicom_object::open_file(&path).unwrap();
        let cols = obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap() as usize;
        let mut px: Vec<u16> = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_multi_int::<u16>()
            .unwrap();
        edit(cols, &mut px);
        obj.put(dicom_core::DataElement::new(
            tags::PIXEL_DATA,
            dicom_core::VR::OW,
            dicom_core::PrimitiveValue::U16(px.into()),
        ));
        obj.write_to_file(&path).unwrap();
    }
}

/// Blank the image columns on the patient's left (the left hip leaves the field of view).
fn crop_right_half(folder: &Path) {
    edit_images(folder, |cols, px| {
        for row in px.chunks_mut(cols) {
            for x in row[cols / 2..].iter_mut() {
                *x = 0;
            }
        }
    });
}

/// Replace the anatomy with uniform noise.
fn fill_with_noise(folder: &Path) {
    edit_images(folder, |_, px| {
        let mut s = 12345u64;
        for x in px.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *x = ((s >> 33) % 900) as u16;
        }
    });
}

/// Validate the DICOM result objects `analyze --out` wrote under `out/dicom/` for the
/// analysis `v` of `study`: exactly `names`, each passing dicom3tools' `dciodvfy`, the SR
/// passing DCMTK's `dsrdump` (no error), and every object read back by highdicom and
/// checked against the analysis (tests/fixtures/pacs_check.py).
/// `dciodvfy` (dicom3tools) passes the object: exit 0 and no line starting "Error".
fn dciodvfy(file: &Path) {
    let o = Command::new("dciodvfy")
        .arg(file)
        .output()
        .expect("run dciodvfy (install dicom3tools)");
    let text = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    let name = file.display();
    assert!(o.status.success(), "{name}: dciodvfy failed:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("Error")),
        "{name}: dciodvfy errors:\n{text}"
    );
}

/// DCMTK's `dsrdump` reads the SR without error; returns its dump.
fn dsrdump(file: &Path) -> String {
    let o = Command::new("/usr/bin/dsrdump").arg(file).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("E:"), "dsrdump:\n{err}");
    let dump = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(dump.contains("Imaging Measurement Report"));
    dump
}

fn check_result_objects(out: &Path, study: &Path, v: &Value, names: &[&str]) {
    let dicom = out.join("dicom");
    let mut written: Vec<String> = std::fs::read_dir(&dicom)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    written.sort();
    let mut want: Vec<String> = names.iter().map(|n| format!("{n}.dcm")).collect();
    want.sort();
    assert_eq!(written, want);
    for name in &want {
        dciodvfy(&dicom.join(name));
    }
    dsrdump(&dicom.join("sr.dcm"));
    let json = out.join("analysis.json");
    std::fs::write(&json, v.to_string()).unwrap();
    let o = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pacs_check.py"
        ))
        .args([
            &dicom,
            &json,
            &study.to_path_buf(),
            &out.join("heatmap.nii.gz"),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "highdicom read-back:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The objects for PACS (SEG, Parametric Map, TID 1500 SR, two Secondary Captures) of a
/// bilateral study: valid per the validators, and what they say is the analysis.
#[test]
fn result_objects_for_pacs_pass_the_validators_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let opts = Options {
        stages: Some([Stage::S2, Stage::S0]),
        ..Default::default()
    };
    phantom::generate_study(&study, 9_000_808, &opts).unwrap();
    let out = dir.path().join("out");
    let (_, v) = analyze(&[&study], Some(&out));
    assert_eq!(v["heads"].as_array().map(Vec::len), Some(2), "{v:#}");
    check_result_objects(&out, &study, &v, &["seg", "pm", "sr", "sc-R", "sc-L"]);

    // Analysed again (as the worker does after a late series): the new SR names the first
    // as its predecessor and still passes the validators.
    let first = onfh_edge::pacs::SrRef::read(&out.join("dicom/sr.dcm")).expect("first SR");
    let settings = onfh_edge::config::Settings::defaults().unwrap();
    let models =
        onfh_edge::pipeline::Models::load(&settings.analysis, &settings.preprocess).unwrap();
    let again = dir.path().join("again");
    let a = onfh_edge::pipeline::analyze_replacing(
        std::slice::from_ref(&study),
        &models,
        &settings.analysis,
        &settings.selection,
        Some(&again),
        Some(first.clone()),
    );
    assert_eq!(a.heads.len(), 2, "{a:?}");
    let sr = again.join("dicom/sr.dcm");
    dciodvfy(&sr);
    let dump = dsrdump(&sr);
    let second = onfh_edge::pacs::SrRef::read(&sr).unwrap();
    assert_ne!(second.sop_instance_uid, first.sop_instance_uid);
    let o = Command::new("/usr/bin/dcmdump")
        .args([
            "+P",
            "PredecessorDocumentsSequence",
            "+P",
            "ReferencedSOPInstanceUID",
        ])
        .arg(&sr)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("PredecessorDocumentsSequence"), "{text}");
    assert!(text.contains(&first.sop_instance_uid), "{text}\n{dump}");
}

/// A study whose heads are not found gets only an SR, which says so for each side.
#[test]
fn a_study_without_heads_gets_an_sr_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let classic = Options {
        enhanced_t2: Some(false),
        ..Default::default()
    };
    phantom::generate_study(&study, 9_000_909, &classic).unwrap();
    edit_images(&truth_t2_folder(&study), |_, px| px.fill(800));
    let out = dir.path().join("out");
    let (_, v) = analyze(&[&study], Some(&out));
    assert_eq!(v["status"], "indeterminate", "{v:#}");
    assert_eq!(v["heads"].as_array().map(Vec::len), Some(0), "{v:#}");
    check_result_objects(&out, &study, &v, &["sr"]);
}

/// Rewrite every file of a folder's header with `edit`.
fn edit_headers(folder: &Path, edit: impl Fn(&mut dicom_object::DefaultDicomObject)) {
    for e in std::fs::read_dir(folder).unwrap() {
        let path = e.unwrap().path();
        let mut obj = dicom_object::open_file(&path).unwrap();
        edit(&mut obj);
        obj.write_to_file(&path).unwrap();
    }
}

#[test]
fn a_normal_head_is_not_called_on_a_series_without_fat_suppression() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("plain");
    let opts = Options {
        stages: Some([Stage::S0, Stage::S2]),
        enhanced_t2: Some(false),
        style: Some("siemens-like 3T"),
        ..Default::default()
    };
    phantom::generate_study(&study, 9_000_808, &opts).unwrap();
    // As written (fat-suppressed T2): the normal head is called normal.
    let (_, v) = analyze(&[&study], None);
    assert_eq!(v["status"], "ok", "{v:#}");
    assert_eq!(v["heads"][0]["stage"], "0", "{v:#}");
    assert_eq!(v["heads"][1]["stage"], "II", "{v:#}");
    // The same images named and flagged as a plain T2: no normal call, with the reason;
    // the stage II head keeps its stage.
    edit_headers(&truth_t2_folder(&study), |obj| {
        for tag in [tags::SERIES_DESCRIPTION, tags::PROTOCOL_NAME] {
            obj.put(DataElement::new(
                tag,
                VR::LO,
                PrimitiveValue::from("t2_tse_cor"),
            ));
        }
        obj.put(DataElement::new(
            tags::SCAN_OPTIONS,
            VR::CS,
            PrimitiveValue::from(""),
        ));
    });
    let (o, v) = analyze(&[&study], None);
    assert_eq!(o.status.code(), Some(3), "{v:#}");
    assert_eq!(v["status"], "indeterminate", "{v:#}");
    let right = &v["heads"][0];
    assert_eq!(right["stage"], "indeterminate", "{v:#}");
    assert!(
        right["reason"]
            .as_str()
            .unwrap()
            .contains("not fat-suppressed"),
        "{right:#}"
    );
    assert!(
        right["probabilities"]["0"].as_f64().unwrap() > 0.6,
        "{right:#}"
    );
    assert_eq!(v["heads"][1]["stage"], "II", "{v:#}");
}

/// A stager with a T1 channel (made here from the shipped one: its stem widened, the T1's
/// weights set) reads the study's T1 companion: the result names it and records the T1
/// verdicts; without the T1 the study is still staged, on the T2 alone, and says so by
/// naming none. The shipped T2-only stager records neither.
#[test]
fn a_stager_with_a_t1_channel_reads_the_t1_companion() {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};
    use onfh_edge::model::crop::Channel;
    use onfh_edge::model::stager::Stager;
    use onfh_edge::model::weights::{self, Architecture};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    for f in ["3dc-yolox-small.json", "3dc-yolox-small.safetensors"] {
        std::fs::copy(root.join(f), models.join(f)).unwrap();
    }
    let shipped = weights::read_manifest(&root.join("3d-muldensenet-small.json")).unwrap();
    let Architecture::Stager { config, crop } = shipped.architecture.clone() else {
        panic!("not a stager");
    };
    let config = onfh_edge::model::stager::StagerConfig {
        in_channels: 2,
        ..config
    };
    let crop = onfh_edge::model::crop::CropConfig {
        channels: vec![Channel::T2, Channel::T1],
        ..crop
    };
    let map = VarMap::new();
    Stager::new(
        &config,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    weights::init_from_widening(
        &map,
        &root.join("3d-muldensenet-small.json"),
        &["stem.conv.weight"],
    )
    .unwrap();
    {
        let vars = map.data().lock().unwrap();
        let stem = vars.get("stem.conv.weight").unwrap();
        let (co, _, k0, k1, k2) = stem.dims5().unwrap();
        let t2 = stem.narrow(1, 0, 1).unwrap();
        let t1 = Tensor::randn(0f32, 0.05, (co, 1, k0, k1, k2), &Device::Cpu).unwrap();
        stem.set(&Tensor::cat(&[&t2, &t1], 1).unwrap()).unwrap();
    }
    let ckpt = dir.path().join("t1.safetensors");
    map.save(&ckpt).unwrap();
    let mut m = shipped.clone();
    m.name = "3d-muldensenet-small-t1".into();
    m.architecture = Architecture::Stager { config, crop };
    m.metrics = None;
    weights::export(&ckpt, m, &models).unwrap();
    let cfg = dir.path().join("t1.toml");
    std::fs::write(
        &cfg,
        format!(
            "[analysis]\nmodels_dir = {:?}\nstager = \"3d-muldensenet-small-t1.json\"\n",
            models.display().to_string()
        ),
    )
    .unwrap();

    let study = dir.path().join("study");
    let truth = phantom::generate_study(
        &study,
        9_000_202,
        &Options {
            stages: Some([Stage::S0, Stage::S2]),
            ..Default::default()
        },
    )
    .unwrap();
    let t1 = truth.series.iter().find(|s| s.kind == "t1").unwrap();
    let run = |config: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onfh-edge"));
        cmd.arg("analyze").arg("--json").arg(&study);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let o = cmd.output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stderr)));
        v
    };
    let t1_verdicts = |v: &Value| -> Vec<(String, String)> {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["t1"].is_null())
            .map(|s| {
                (
                    s["series_uid"].as_str().unwrap().to_owned(),
                    s["t1"]["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let v = run(Some(&cfg));
    assert_eq!(v["heads"].as_array().map(Vec::len), Some(2), "{v:#}");
    assert_eq!(v["t1_series_instance_uid"], t1.series_uid.as_str(), "{v:#}");
    assert_eq!(
        v["model"]["name"],
        "3dc-yolox-small + 3d-muldensenet-small-t1"
    );
    assert_eq!(
        t1_verdicts(&v),
        [(t1.series_uid.clone(), "chosen".to_owned())],
        "{v:#}"
    );
    // The T2's own selection is as before.
    let t2_uid = v["series_instance_uid"].as_str().unwrap().to_owned();
    assert_ne!(t2_uid, t1.series_uid);

    // The shipped stager neither reads nor records a T1.
    let v0 = run(None);
    assert!(v0.get("t1_series_instance_uid").is_none(), "{v0:#}");
    assert!(t1_verdicts(&v0).is_empty(), "{v0:#}");
    assert_eq!(v0["series_instance_uid"], t2_uid.as_str());

    // Without its T1 the study is staged on the T2 alone, and names no T1.
    std::fs::remove_dir_all(study.join(&t1.folder)).unwrap();
    let v = run(Some(&cfg));
    assert_eq!(v["heads"].as_array().map(Vec::len), Some(2), "{v:#}");
    assert!(v.get("t1_series_instance_uid").is_none(), "{v:#}");
    assert!(t1_verdicts(&v).is_empty(), "{v:#}");
}
