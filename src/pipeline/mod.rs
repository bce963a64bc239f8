//! The analysis pipeline: one study's files → the chosen T2 → 3DC-YOLOX → for each
//! femoral head a crop through the affine → 3D-MulDenseNet → stage probabilities → 3D
//! Grad-CAM → a finding per head, in the JSON contract (`Analysis`).
//!
//! Steps, each timed: collect and scan the files (non-DICOM skipped and counted); select
//! the series (`volume::select`, every series gets a verdict); assemble it; preprocess it
//! exactly as the detector's manifest says; detect; pair the two candidates that lie as
//! two femoral heads do and give them sides by geometry (`model::sphere::locate_heads`
//! over `detector::pair_heads`: the one further to patient left, +x in LPS, is the left
//! head; where the image refutes the detector's pair, a pair it confirms is taken, and a
//! confident head may take a weak partner, or a head the image alone shows, where the
//! other head must lie), each moved onto the sphere its edges make in the T2 (the score
//! unchanged); crop
//! each head around the detected centre on the canonical grid (`model::crop::crop_channels`
//! — patient millimetres, not array indices; for a stager with a T1 channel the T1
//! companion, `volume::select_t1`, on the same grid), right heads mirrored as in training;
//! stage and
//! explain; place the heatmaps back into the T2's grid; write NIfTI (T2 and heatmap, the
//! T2's affine) and one PNG montage per head when an output folder is given.
//!
//! Never silent: no usable T2 → `no_usable_series`; fewer than two heads, no pair that lies
//! as two heads do, or a detection score under the floor (unless beside a confident head,
//! as above) →
//! `indeterminate` with the reason;
//! a head whose top probability is under the floor is staged `indeterminate`. A normal call
//! is made only when every step is confident. Errors (unreadable files, several studies,
//! assembly failures) become status `error` with the reason; nothing here panics on input.
//!
//! Owns no state but the loaded models; does no networking and no SQL.

pub mod heatmap;

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::crop::{self, CropConfig};
use crate::model::detector::{self, Detector};
use crate::model::gradcam::{self, CamMethod};
use crate::model::sphere;
use crate::model::stager::Stager;
use crate::model::weights::{self, Manifest, ModelError, ModelSource};
use crate::volume::{self, Preprocess};

pub use crate::result::{
    Analysis, HeadFinding, HeatmapFiles, ModelInfo, Probabilities, Side, StageCall, Status, Timings,
};

/// Pipeline settings (`[analysis]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisSettings {
    /// Folder of the model manifests and weights; empty = the models built into the binary
    /// (`model::weights::EMBEDDED`).
    pub models_dir: PathBuf,
    /// Detector manifest, in `models_dir`.
    pub detector: String,
    /// Stager manifest, in `models_dir`.
    pub stager: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// A head detected with a lower score makes the study indeterminate, unless the image
    /// shows it where a confident head's partner must lie (`model::sphere::locate_heads`).
    pub min_detection_score: f32,
    /// A head whose top stage probability is lower is staged indeterminate.
    pub min_stage_probability: f32,
    /// `grad-cam` or `grad-cam-plus-plus`.
    pub heatmap: CamMethod,
    /// Heatmap values (scaled to a maximum of 1) below this are written as 0, so the PNG
    /// and NIfTI show the region that drove the stage rather than a low haze over the
    /// whole head; 0 keeps the whole map.
    pub heatmap_floor: f32,
    /// Call a head normal (stage 0) only on a fat-suppressed series: on a plain T2, fatty
    /// marrow is about as bright as oedema, so stage I may not show. Such a head is
    /// staged indeterminate with the reason instead; stage I and II calls stand.
    pub normal_needs_fat_suppression: bool,
}

impl AnalysisSettings {
    /// Check `[analysis]`; the error names its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(self.min_detection_score > 0.0 && self.min_detection_score < 1.0) {
            return Err((
                "analysis.min_detection_score",
                "must be between 0 and 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_stage_probability) {
            return Err((
                "analysis.min_stage_probability",
                "must be between 0 and 1".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.heatmap_floor) {
            return Err((
                "analysis.heatmap_floor",
                "must be at least 0 and below 1".into(),
            ));
        }
        let dev = self.device.as_str();
        if !(dev == "cpu"
            || dev == "cuda"
            || dev
                .strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<usize>().is_ok()))
        {
            return Err(("analysis.device", "must be cpu, cuda or cuda:N".into()));
        }
        Ok(())
    }
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            models_dir: PathBuf::new(),
            detector: "3dc-yolox-small.json".into(),
            stager: "3d-muldensenet-small.json".into(),
            device: "cpu".into(),
            min_detection_score: 0.3,
            min_stage_probability: 0.6,
            heatmap: CamMethod::GradCam,
            heatmap_floor: 0.5,
            normal_needs_fat_suppression: true,
        }
    }
}

/// The two networks, loaded once.
pub struct Models {
    detector: Detector,
    stager: Stager,
    /// The detector's manifest.
    pub detector_manifest: Manifest,
    /// The stager's manifest.
    pub stager_manifest: Manifest,
    preprocess: Preprocess,
    crop: CropConfig,
    device: Device,
    dtype: DType,
}

impl Models {
    /// Load both networks (checked: hash, shapes, finiteness) onto the settings' device.
    /// `site` is the configured preprocessing: its geometry, normalisation and window must
    /// be the ones the detector was trained with (its centre offset is the site's to tune).
    pub fn load(s: &AnalysisSettings, site: &Preprocess) -> Result<Models, ModelError> {
        let device = weights::device(&s.device)?;
        let dtype = weights::dtype_for(&device);
        let det_source = ModelSource::in_dir(&s.models_dir, &s.detector);
        let det = weights::load_detector(det_source.clone(), &device, dtype)
            .map_err(|e| e.in_setting(&s.models_dir))?;
        let stg = weights::load_stager(
            ModelSource::in_dir(&s.models_dir, &s.stager),
            &device,
            dtype,
        )
        .map_err(|e| e.in_setting(&s.models_dir))?;
        let preprocess = &det.preprocess;
        if site.shape != preprocess.shape
            || site.field_of_view_mm != preprocess.field_of_view_mm
            || site.window_level != preprocess.window_level
            || site.window_width != preprocess.window_width
            || site.percentiles != preprocess.percentiles
            || site.reference != preprocess.reference
        {
            return Err(ModelError::Manifest {
                path: det_source.label(),
                message: format!(
                    "the configured [preprocess] (shape {:?}, field of view {:?} mm, window {}/{}, \
                     percentiles {:?} onto {:?}) differs from the detector's (shape {:?}, field of \
                     view {:?} mm, window {}/{}, percentiles {:?} onto {:?}): the network reads \
                     only the input it was trained on",
                    site.shape,
                    site.field_of_view_mm,
                    site.window_level,
                    site.window_width,
                    site.percentiles,
                    site.reference,
                    preprocess.shape,
                    preprocess.field_of_view_mm,
                    preprocess.window_level,
                    preprocess.window_width,
                    preprocess.percentiles,
                    preprocess.reference
                ),
            });
        }
        Ok(Models {
            preprocess: site.clone(),
            crop: stg.crop,
            detector: det.net,
            stager: stg.net,
            detector_manifest: det.manifest,
            stager_manifest: stg.manifest,
            device,
            dtype,
        })
    }

    /// The detector (for benchmarks and tools).
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// The stager (for benchmarks and tools).
    pub fn stager(&self) -> &Stager {
        &self.stager
    }

    /// What results say about the models.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: format!(
                "{} + {}",
                self.detector_manifest.name, self.stager_manifest.name
            ),
            version: self.stager_manifest.version.clone(),
            intended_use: self.stager_manifest.intended_use.clone(),
            detector_sha256: self.detector_manifest.weights.sha256.clone(),
            stager_sha256: self.stager_manifest.weights.sha256.clone(),
        }
    }
}

impl Analysis {
    /// An error result for a study that was not analysed: `reason` says why.
    pub fn not_analysed(
        models: &Models,
        study_uid: &str,
        accession_number: Option<String>,
        reason: impl Into<String>,
    ) -> Analysis {
        Analysis {
            study_instance_uid: study_uid.to_owned(),
            accession_number: accession_number.unwrap_or_default(),
            reason: Some(reason.into()),
            ..Analysis::empty(models)
        }
    }

    fn empty(models: &Models) -> Analysis {
        Analysis {
            study_instance_uid: String::new(),
            series_instance_uid: String::new(),
            t1_series_instance_uid: None,
            accession_number: String::new(),
            status: Status::Error,
            reason: None,
            model: models.info(),
            heads: Vec::new(),
            series: Vec::new(),
            skipped_files: 0,
            timings_ms: Timings::default(),
        }
    }

    fn fail(mut self, status: Status, reason: impl Into<String>, start: Instant) -> Analysis {
        self.status = status;
        self.reason = Some(reason.into());
        self.timings_ms.total = ms(start);
        self
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// What the result objects for PACS are made from (kept only when `out` is given).
struct ExportParts {
    t2: volume::Volume,
    sources: Vec<volume::SliceSource>,
    heat: Option<volume::Volume>,
}

/// Analyse one study's files or folders. When `out` is given, the heatmap files go there
/// and the DICOM result objects for PACS under `out/dicom/` (see [`crate::pacs`]).
pub fn analyze(
    paths: &[PathBuf],
    models: &Models,
    settings: &AnalysisSettings,
    rules: &volume::Rules,
    out: Option<&Path>,
) -> Analysis {
    analyze_replacing(paths, models, settings, rules, out, None)
}

/// [`analyze`] for a study analysed before: its SR names `predecessor`, the previous one.
pub fn analyze_replacing(
    paths: &[PathBuf],
    models: &Models,
    settings: &AnalysisSettings,
    rules: &volume::Rules,
    out: Option<&Path>,
    predecessor: Option<crate::pacs::SrRef>,
) -> Analysis {
    let mut parts = None;
    let mut a = analyze_study(paths, models, settings, rules, out, &mut parts);
    if let (Some(dir), Some(p)) = (out, parts) {
        if matches!(a.status, Status::Ok | Status::Indeterminate) {
            let t = Instant::now();
            let input = crate::pacs::ObjectsInput {
                analysis: &a,
                t2: &p.t2,
                sources: &p.sources,
                heatmap: p.heat.as_ref(),
                series_number: crate::pacs::DEFAULT_SERIES_NUMBER,
                montages: a
                    .heads
                    .iter()
                    .filter_map(|h| Some((h.side, PathBuf::from(&h.heatmap.as_ref()?.png))))
                    .collect(),
                predecessor,
            };
            if let Err(e) = crate::pacs::write_objects(&dir.join("dicom"), &input) {
                // The result stands without them; the log says why they are missing.
                tracing::error!(error = format!("{e:#}"), study_uid = %a.study_instance_uid, "cannot write the DICOM result objects");
            }
            a.timings_ms.objects = ms(t);
            a.timings_ms.total += a.timings_ms.objects;
        }
    }
    a
}

fn analyze_study(
    paths: &[PathBuf],
    models: &Models,
    settings: &AnalysisSettings,
    rules: &volume::Rules,
    out: Option<&Path>,
    parts: &mut Option<ExportParts>,
) -> Analysis {
    let start = Instant::now();
    let mut a = Analysis::empty(models);
    let (t2, t1, fat_suppressed) = match read_t2(paths, rules, models.crop.uses_t1(), &mut a) {
        Ok(read) => {
            if out.is_some() {
                *parts = Some(ExportParts {
                    t2: read.t2.clone(),
                    sources: read.sources,
                    heat: None,
                });
            }
            (read.t2, read.t1, read.fat_suppressed)
        }
        Err((status, reason)) => return a.fail(status, reason, start),
    };
    let input = volume::preprocess(&t2, &models.preprocess);
    a.timings_ms.volume = ms(start);

    let t = Instant::now();
    let dets = match models
        .detector
        .candidates(&input, &models.device, models.dtype)
    {
        Ok(d) => d,
        Err(e) => return a.fail(Status::Error, format!("detector failed: {e}"), start),
    };
    a.timings_ms.detect = ms(t);
    let (right, left) = match sphere::locate_heads(&dets, &t2, &input, settings.min_detection_score)
    {
        Ok(pair) => pair,
        Err(reason) => return a.fail(Status::Indeterminate, reason, start),
    };
    for (side, h) in [(Side::Right, &right), (Side::Left, &left)] {
        match h.origin {
            sphere::Origin::Detected => {}
            sphere::Origin::Partner => tracing::info!(
                study_uid = %a.study_instance_uid,
                "{side} femoral head taken at detection score {:.2}, under the floor {:.2}: it partners the confident other head (same-sized sphere where that head's partner lies)",
                h.detection.score,
                settings.min_detection_score
            ),
            sphere::Origin::Mirror => tracing::info!(
                study_uid = %a.study_instance_uid,
                "{side} femoral head found in the image where the confident other head's partner must lie (a sphere of radius {:.0} mm, the same size; the best detection score inside it {:.2}, floor {:.2})",
                h.fit.radius_mm,
                h.detection.score,
                settings.min_detection_score
            ),
        }
    }
    let (right, left) = (right.detection, left.detection);
    a.timings_ms.detect = ms(t);

    let t = Instant::now();
    let staged = match stage_heads(
        models,
        settings,
        &t2,
        t1.as_ref(),
        [(Side::Right, &right), (Side::Left, &left)],
    ) {
        Ok(s) => s,
        Err(e) => return a.fail(Status::Error, format!("stager failed: {e}"), start),
    };
    if staged.iter().any(|h| h.t1_read) {
        a.t1_series_instance_uid = t1.as_ref().map(|v| v.series_uid.clone());
    }
    a.timings_ms.stage = ms(t);

    let t = Instant::now();
    let mut files_written = None;
    if let Some(dir) = out {
        let maps: Vec<heatmap::CropHeatmap> = staged
            .iter()
            .map(|h| heatmap::CropHeatmap {
                values: &h.staged.heatmap,
                shape: models.crop.shape,
                affine: h.affine,
                mirrored: h.side == Side::Right,
            })
            .collect();
        let heat = heatmap::place(&t2, &maps);
        if let Some(p) = parts.as_mut() {
            p.heat = Some(heat.clone());
        }
        match write_outputs(dir, &a.study_instance_uid, &t2, &heat) {
            Ok(paths) => files_written = Some((paths, heat)),
            Err(e) => return a.fail(Status::Error, format!("cannot write heatmaps: {e}"), start),
        }
    }
    for h in &staged {
        let normal_allowed = fat_suppressed || !settings.normal_needs_fat_suppression;
        let mut finding = h.finding(settings.min_stage_probability, normal_allowed);
        if let (Some(dir), Some(((vol_nii, heat_nii), heat))) = (out, files_written.as_ref()) {
            let png = dir.join(format!("heatmap_{}.png", h.side));
            let label = heatmap::MontageLabel {
                side: h.side,
                stage: finding.stage,
                probability: h.staged.probabilities[h.staged.class],
                intended_use: models.stager_manifest.intended_use.clone(),
            };
            if let Err(e) = heatmap::write_montage(&t2, heat, h.det.center_lps_mm, &label, &png) {
                return a.fail(
                    Status::Error,
                    format!("cannot write {}: {e}", png.display()),
                    start,
                );
            }
            finding.heatmap = Some(HeatmapFiles {
                png: png.display().to_string(),
                nifti: heat_nii.display().to_string(),
                volume_nifti: vol_nii.display().to_string(),
            });
        }
        a.heads.push(finding);
    }
    a.timings_ms.gradcam = ms(t);
    if a.heads.iter().all(|h| h.stage != StageCall::Indeterminate) {
        a.status = Status::Ok;
    } else {
        a.status = Status::Indeterminate;
        a.reason = Some("a femoral head could not be staged with confidence".into());
    }
    a.timings_ms.total = ms(start);
    a
}

/// What [`read_t2`] read.
struct ReadStudy {
    /// The chosen T2.
    t2: volume::Volume,
    /// Each of its slices' source instance.
    sources: Vec<volume::SliceSource>,
    /// Whether the T2 is fat-suppressed.
    fat_suppressed: bool,
    /// Its T1 companion, when asked for, selected and assembled.
    t1: Option<volume::Volume>,
}

/// Collect and scan the files, check they hold one study, select its T2 and assemble it
/// (with each slice's source instance) and, when `want_t1`, its T1 companion (a T1 that
/// does not assemble is rejected with the reason, and the stager reads none); fills the
/// study's identity and the series verdicts into `a`. The error is the status and reason
/// the analysis ends with.
fn read_t2(
    paths: &[PathBuf],
    rules: &volume::Rules,
    want_t1: bool,
    a: &mut Analysis,
) -> Result<ReadStudy, (Status, String)> {
    let files = volume::collect_files(paths)
        .map_err(|e| (Status::Error, format!("cannot read the input: {e}")))?;
    let report = volume::scan_files(&files);
    a.skipped_files = report.skipped;
    if report.series.is_empty() {
        return Err((
            Status::Error,
            format!(
                "no DICOM images found ({} file(s), {} not DICOM)",
                files.len(),
                report.skipped
            ),
        ));
    }
    let mut studies: Vec<&str> = report.series.iter().map(|s| s.study_uid.as_str()).collect();
    studies.sort();
    studies.dedup();
    if studies.len() > 1 {
        return Err((
            Status::Error,
            format!(
                "the files hold {} studies; analyse one study at a time",
                studies.len()
            ),
        ));
    }
    a.study_instance_uid = studies[0].to_owned();
    a.accession_number = report.series[0]
        .accession_number
        .clone()
        .unwrap_or_default();
    let sel = volume::select(&report.series, rules);
    a.series = sel.verdicts.clone();
    let Some(chosen) = sel.chosen else {
        return Err((
            Status::NoUsableSeries,
            "no usable T2-weighted series".into(),
        ));
    };
    let series = &report.series[chosen];
    a.series_instance_uid = series.series_uid.clone();
    let fat_suppressed = volume::select::fat_suppressed(series, rules);
    let (t2, sources) = volume::assemble_with_sources(series)
        .map_err(|e| (Status::Error, format!("series could not be assembled: {e}")))?;
    let mut t1 = None;
    if want_t1 {
        let mut sel = volume::select_t1(&report.series, rules, chosen);
        while let Some(i) = sel.chosen {
            match volume::assemble(&report.series[i]) {
                Ok(v) => {
                    t1 = Some(v);
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        study_uid = %a.study_instance_uid,
                        "the T1 series {} could not be assembled ({e}); the next usable T1, or the T2 alone",
                        report.series[i].series_uid
                    );
                    let why = format!("could not be assembled: {e}");
                    sel.fall_back(i, why, &report.series);
                }
            }
        }
        sel.attach(&mut a.series);
    }
    Ok(ReadStudy {
        t2,
        sources,
        fat_suppressed,
        t1,
    })
}

/// One head as the stager saw it.
struct StagedHead<'a> {
    side: Side,
    det: &'a detector::Detection,
    staged: gradcam::Staged,
    /// The crop's voxel-to-patient affine.
    affine: [[f64; 4]; 4],
    /// Whether the stager read a T1 for this head.
    t1_read: bool,
}

impl StagedHead<'_> {
    /// The head's finding: the stage when its probability reaches `min_probability` — and, for
    /// stage 0, when `normal_allowed` (the series is fat-suppressed, or the rule is off).
    fn finding(&self, min_probability: f32, normal_allowed: bool) -> HeadFinding {
        let s = &self.staged;
        let top = s.probabilities[s.class];
        let reason = if top < min_probability {
            Some(format!(
                "top stage probability {top:.2} is below {min_probability:.2}"
            ))
        } else if s.class == 0 && !normal_allowed {
            Some(format!(
                "stage 0 at probability {top:.2}, but the series is not fat-suppressed: \
                 marrow oedema (stage I) may not show on it; a fat-suppressed T2 or STIR \
                 is needed to call this head normal"
            ))
        } else {
            None
        };
        let stage = if reason.is_none() {
            StageCall::of_class(s.class)
        } else {
            StageCall::Indeterminate
        };
        HeadFinding {
            side: self.side,
            stage,
            early_onfh: stage.is_early_onfh(),
            probabilities: Probabilities {
                s0: s.probabilities[0],
                s1: s.probabilities[1],
                s2: s.probabilities[2],
            },
            detection_score: self.det.score,
            center_lps_mm: self.det.center_lps_mm,
            bbox_lps_mm: self.det.bbox_lps_mm,
            heatmap: None,
            reason,
        }
    }
}

/// Crop both heads through the T2's affine (the right one mirrored), with the T1 on the
/// same grid for a stager that reads one, and stage them in one batch with Grad-CAM;
/// heatmap values under `heatmap_floor` become 0.
fn stage_heads<'a>(
    models: &Models,
    settings: &AnalysisSettings,
    t2: &volume::Volume,
    t1: Option<&volume::Volume>,
    heads: [(Side, &'a detector::Detection); 2],
) -> candle_core::Result<Vec<StagedHead<'a>>> {
    let [d, h, w] = models.crop.shape;
    let c = models.crop.channel_count();
    let mut voxels = Vec::with_capacity(2 * d * c * h * w);
    let mut grids = Vec::with_capacity(2);
    for (side, det) in heads {
        let (crop, affine, t1_read) =
            crop::crop_channels(t2, t1, det.center_lps_mm, side == Side::Right, &models.crop);
        voxels.extend(crop);
        grids.push((side, det, affine, t1_read));
    }
    let x = Tensor::from_vec(voxels, (2, d, c, h, w), &Device::Cpu)?
        .to_device(&models.device)?
        .to_dtype(models.dtype)?;
    let staged = gradcam::stage_and_explain_batch(&models.stager, &x, settings.heatmap)?;
    Ok(grids
        .into_iter()
        .zip(staged)
        .map(|((side, det, affine, t1_read), mut staged)| {
            staged
                .heatmap
                .iter_mut()
                .filter(|x| **x < settings.heatmap_floor)
                .for_each(|x| *x = 0.0);
            StagedHead {
                side,
                det,
                staged,
                affine,
                t1_read,
            }
        })
        .collect())
}

fn write_outputs(
    dir: &Path,
    study_uid: &str,
    t2: &volume::Volume,
    heat: &volume::Volume,
) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let note = format!("onfh-edge {study_uid} - {}", weights::INTENDED_USE);
    // Compressed: a float32 T2 and heatmap are about 8 MB per analysis uncompressed.
    let vol = dir.join("t2.nii.gz");
    volume::nifti::write(t2, &vol, &note)?;
    let hm = dir.join("heatmap.nii.gz");
    volume::nifti::write(heat, &hm, &note)?;
    Ok((vol, hm))
}
