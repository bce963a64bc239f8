//! The result of one study: the JSON contract of `analyze --json` (design.md §4), as the
//! pipeline produces it and the store, alerts, PACS objects, panel and reports read it.
//! Plain data with its serde form and its text table; it decides nothing and depends on
//! no other module.

use serde::{Deserialize, Serialize};

/// Outcome of a study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Both heads found and staged with confidence.
    Ok,
    /// Analysed, but no confident call (see the reason).
    Indeterminate,
    /// No series suitable for analysis.
    NoUsableSeries,
    /// Could not be analysed.
    Error,
}

impl Status {
    /// The name the JSON contract and the database use (`ok`, `indeterminate`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Indeterminate => "indeterminate",
            Status::NoUsableSeries => "no_usable_series",
            Status::Error => "error",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The patient's side of a femoral head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// The patient's right (`"R"`).
    #[serde(rename = "R")]
    Right,
    /// The patient's left (`"L"`).
    #[serde(rename = "L")]
    Left,
}

impl Side {
    /// Both sides, right first (the order results list them in).
    pub const BOTH: [Side; 2] = [Side::Right, Side::Left];

    /// `"R"` or `"L"`, as in the JSON contract and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Right => "R",
            Side::Left => "L",
        }
    }

    /// `"right"` or `"left"`, for sentences.
    pub fn word(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
        }
    }

    /// A side as people write it in a CSV: R, L, right, left; any case.
    pub fn from_label(s: &str) -> Option<Side> {
        match s.trim().to_ascii_uppercase().as_str() {
            "R" | "RIGHT" => Some(Side::Right),
            "L" | "LEFT" => Some(Side::Left),
            _ => None,
        }
    }

    /// The side named `"R"` or `"L"`.
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "R" => Some(Side::Right),
            "L" => Some(Side::Left),
            _ => None,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The stage called for one head: a Ficat-Arlet stage, or no confident call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StageCall {
    /// Ficat-Arlet 0 (`"0"`).
    #[serde(rename = "0")]
    Stage0,
    /// Ficat-Arlet I (`"I"`).
    #[serde(rename = "I")]
    StageI,
    /// Ficat-Arlet II (`"II"`).
    #[serde(rename = "II")]
    StageII,
    /// No confident call (`"indeterminate"`; the head's reason says why).
    #[serde(rename = "indeterminate")]
    Indeterminate,
}

impl StageCall {
    /// The stage of class index 0, 1 or 2 (the models' class order).
    pub fn of_class(class: usize) -> StageCall {
        match class {
            0 => StageCall::Stage0,
            1 => StageCall::StageI,
            2 => StageCall::StageII,
            _ => StageCall::Indeterminate,
        }
    }

    /// `"0"`, `"I"`, `"II"` or `"indeterminate"`, as in the JSON contract and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StageCall::Stage0 => "0",
            StageCall::StageI => "I",
            StageCall::StageII => "II",
            StageCall::Indeterminate => "indeterminate",
        }
    }

    /// The stage named as [`StageCall::as_str`] writes it.
    pub fn parse(s: &str) -> Option<StageCall> {
        [
            StageCall::Stage0,
            StageCall::StageI,
            StageCall::StageII,
            StageCall::Indeterminate,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// A Ficat-Arlet stage as people write it in a CSV: 0, I, II, 1, 2, "stage I"; any
    /// case. Never indeterminate: that is not a stage a reader gives.
    pub fn from_label(s: &str) -> Option<StageCall> {
        let s = s.trim().to_ascii_uppercase();
        match s.trim_start_matches("STAGE").trim() {
            "0" => Some(StageCall::Stage0),
            "I" | "1" => Some(StageCall::StageI),
            "II" | "2" => Some(StageCall::StageII),
            _ => None,
        }
    }

    /// The models' class index (0, 1, 2) of a stage; none for indeterminate.
    pub fn class(self) -> Option<usize> {
        match self {
            StageCall::Stage0 => Some(0),
            StageCall::StageI => Some(1),
            StageCall::StageII => Some(2),
            StageCall::Indeterminate => None,
        }
    }

    /// Stage I or II: early osteonecrosis.
    pub fn is_early_onfh(self) -> bool {
        matches!(self, StageCall::StageI | StageCall::StageII)
    }
}

impl std::fmt::Display for StageCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The models behind a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Names of the detector and the stager.
    pub name: String,
    /// Version.
    pub version: String,
    /// Intended use.
    pub intended_use: String,
    /// Detector weights' SHA-256.
    pub detector_sha256: String,
    /// Stager weights' SHA-256.
    pub stager_sha256: String,
}

/// Stage probabilities by class name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probabilities {
    /// Stage 0.
    #[serde(rename = "0")]
    pub s0: f32,
    /// Stage I.
    #[serde(rename = "I")]
    pub s1: f32,
    /// Stage II.
    #[serde(rename = "II")]
    pub s2: f32,
}

/// Heatmap files of a head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeatmapFiles {
    /// PNG montage.
    pub png: String,
    /// NIfTI heatmap in the T2's grid (both heads).
    pub nifti: String,
    /// NIfTI of the T2 itself, same grid.
    pub volume_nifti: String,
}

/// One femoral head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadFinding {
    /// Patient side (`"R"` or `"L"` in JSON).
    pub side: Side,
    /// The stage called (`"0"`, `"I"`, `"II"` or `"indeterminate"` in JSON).
    pub stage: StageCall,
    /// Stage I or II.
    pub early_onfh: bool,
    /// Stage probabilities.
    pub probabilities: Probabilities,
    /// Detector score.
    pub detection_score: f32,
    /// Centre, patient LPS mm.
    pub center_lps_mm: [f64; 3],
    /// Box, patient LPS mm.
    pub bbox_lps_mm: [[f64; 3]; 2],
    /// Heatmap files, when written.
    pub heatmap: Option<HeatmapFiles>,
    /// Why the stage is indeterminate.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// Milliseconds per step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Scan, select, assemble, preprocess.
    pub volume: u64,
    /// Detection.
    pub detect: u64,
    /// Staging (both heads).
    pub stage: u64,
    /// Grad-CAM placement and files.
    pub gradcam: u64,
    /// The DICOM result objects for PACS (SEG, PM, SR, SC), written with `out` only.
    #[serde(default)]
    pub objects: u64,
    /// Everything.
    pub total: u64,
}

/// The result of one study (the JSON contract of `analyze --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// The analysed series.
    pub series_instance_uid: String,
    /// The T1-weighted companion the stager read beside the T2 (a stager with a T1
    /// channel, and a T1 covering a head's crop); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t1_series_instance_uid: Option<String>,
    /// Accession Number.
    pub accession_number: String,
    /// Outcome.
    pub status: Status,
    /// Why, when not ok.
    pub reason: Option<String>,
    /// Models.
    pub model: ModelInfo,
    /// Both heads, right then left (empty when none could be assessed).
    pub heads: Vec<HeadFinding>,
    /// Series selection: every series with its verdict and reason.
    pub series: Vec<SeriesVerdict>,
    /// Files that were not DICOM.
    pub skipped_files: usize,
    /// Step timings.
    pub timings_ms: Timings,
}

impl Analysis {
    /// The heads as text lines (header first, heatmap paths under each head); `extra(head)`
    /// fills a last column (e.g. the phantom's truth). Empty without heads.
    pub fn head_table(&self, extra: impl Fn(&HeadFinding) -> String) -> Vec<String> {
        if self.heads.is_empty() {
            return Vec::new();
        }
        let mut out = vec![
            format!(
                "{:<5} {:<14} {:<6} {:>6} {:>6} {:>6} {:>6}  {:<26} {}",
                "side", "stage", "early", "p(0)", "p(I)", "p(II)", "det", "centre LPS mm", ""
            )
            .trim_end()
            .to_owned(),
        ];
        for h in &self.heads {
            let centre = format!(
                "({:.1}, {:.1}, {:.1})",
                h.center_lps_mm[0], h.center_lps_mm[1], h.center_lps_mm[2]
            );
            out.push(
                format!(
                    "{:<5} {:<14} {:<6} {:>6.3} {:>6.3} {:>6.3} {:>6.3}  {:<26} {}",
                    h.side,
                    h.stage,
                    if h.early_onfh { "yes" } else { "no" },
                    h.probabilities.s0,
                    h.probabilities.s1,
                    h.probabilities.s2,
                    h.detection_score,
                    centre,
                    extra(h)
                )
                .trim_end()
                .to_owned(),
            );
            if let Some(f) = &h.heatmap {
                out.push(format!("      heatmap {}", f.png));
            }
        }
        out
    }
}

/// What the selection decided about one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// The series to analyse.
    Chosen,
    /// Usable, but another was preferred (why).
    Passed(String),
    /// Not usable (why).
    Rejected(String),
}

impl Verdict {
    /// `chosen`, `passed` or `rejected`, as the database stores it.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Chosen => "chosen",
            Verdict::Passed(_) => "passed",
            Verdict::Rejected(_) => "rejected",
        }
    }

    /// Why it was passed over or rejected.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Chosen => None,
            Verdict::Passed(r) | Verdict::Rejected(r) => Some(r),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason() {
            Some(r) => write!(f, "{} ({r})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// One series and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesVerdict {
    /// Series Instance UID.
    pub series_uid: String,
    /// Series Number.
    pub number: Option<i64>,
    /// Series Description.
    pub description: String,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// As the T1-weighted companion the stager reads beside the T2, for series that look
    /// like a T1, when the stager takes one (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t1: Option<Verdict>,
}
