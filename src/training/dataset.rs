//! A site's own labelled studies, for training and evaluation (`--dataset CSV`).
//!
//! A research hospital with annotated hip MRI (the paper annotated with ITK-SNAP) trains and
//! measures the same networks on its studies with the same commands. The dataset is a CSV
//! file, one row per femoral head, with a header naming the columns:
//!
//! ```text
//! study,side,stage,center_x_mm,center_y_mm,center_z_mm,radius_mm,label_map,split
//! site/p001,R,0,-92.5,10.0,-4.0,23.0,,train
//! site/p001,L,II,,,,,site/p001_heads.nii.gz,train
//! ```
//!
//! - `study`: a folder of the study's DICOM files (searched recursively; the T2 is selected
//!   and assembled exactly as the pipeline does). Relative paths are taken from the CSV's
//!   folder.
//! - `side`: `R` or `L` (the patient's side; `right`, `left` and any case accepted); `stage`:
//!   `0`, `I` or `II` (`1`, `2` and "stage I" accepted).
//! - The head: either its centre in patient LPS mm and its radius, or `label_map`, a NIfTI
//!   label map (`.nii` or `.nii.gz`, as ITK-SNAP saves) on the T2's grid where label 1 is the
//!   right head and 2 the left; the centre is the label's centroid and the radius that of a
//!   sphere of the label's volume. A label map must cover the same region as the T2 (its
//!   corners within a voxel of the T2's) — one drawn on another series is refused.
//! - `split`: `train`, `val` or `test`; empty, it is drawn from a hash of the study folder's
//!   name (70 / 15 / 15 %), so it is stable across runs and machines.
//!
//! Every problem is an error that names the CSV row (1-based, the header is row 1): a missing
//! folder, an unknown stage or side, a head given twice, a study with no usable T2, a label
//! map that is missing, empty or not aligned, a stage with no training head. The dataset's
//! SHA-256 (of the CSV), counts and splits go into the manifests of models trained on it.
//!
//! Not here: the training loop, the networks, or anything at inference time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::data::PhantomStudy;
pub use crate::model::weights::DatasetSummary;
use crate::phantom::anatomy::{Stage, Variant};
use crate::phantom::{HeadTruth, StudyTruth};
use crate::result::{Side, StageCall};
use crate::volume::{self, Volume, nifti};

/// Which part of the dataset a study belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training.
    Train,
    /// Validation (model selection).
    Val,
    /// Test (never seen in training or selection).
    Test,
}

/// Why a dataset cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The CSV could not be read.
    #[error("{path}")]
    Io {
        /// The CSV.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A row is wrong.
    #[error("{path} row {row}: {message}")]
    Row {
        /// The CSV.
        path: PathBuf,
        /// 1-based row number (the header is row 1).
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// The dataset as a whole cannot train or evaluate.
    #[error("{path}: {message}")]
    Dataset {
        /// The CSV.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One head as the CSV gives it, before the T2 is read.
#[derive(Debug, Clone)]
struct HeadRow {
    row: usize,
    side: Side,
    stage: Stage,
    center_radius: Option<([f64; 3], f64)>,
    label_map: Option<PathBuf>,
}

/// A study of the dataset, its T2 assembled and its heads located.
#[derive(Debug, Clone)]
pub struct DatasetStudy {
    /// The study folder.
    pub dir: PathBuf,
    /// Train, val or test.
    pub split: Split,
    /// Truth (heads in patient LPS mm) and the assembled T2, as the phantom gives them.
    pub study: PhantomStudy,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The CSV.
    pub path: PathBuf,
    /// SHA-256 of the CSV.
    pub sha256: String,
    /// Studies, in the CSV's order of first appearance.
    pub studies: Vec<DatasetStudy>,
}

impl Dataset {
    /// The studies of one split.
    pub fn split(&self, s: Split) -> impl Iterator<Item = &DatasetStudy> {
        self.studies.iter().filter(move |x| x.split == s)
    }

    /// Counts and hash, for manifests.
    pub fn summary(&self) -> DatasetSummary {
        let mut studies = BTreeMap::new();
        let mut heads: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for s in &self.studies {
            let split = split_name(s.split).to_owned();
            *studies.entry(split.clone()).or_insert(0) += 1;
            for h in &s.study.truth.heads {
                *heads
                    .entry(split.clone())
                    .or_default()
                    .entry(h.stage.label().to_owned())
                    .or_insert(0) += 1;
            }
        }
        DatasetSummary {
            csv: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            studies,
            heads,
        }
    }
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

/// The split of a study with none given: a stable hash of the folder's name.
fn hashed_split(study: &str) -> Split {
    let h = Sha256::digest(study.as_bytes());
    match h[0] as usize * 100 / 256 {
        0..70 => Split::Train,
        70..85 => Split::Val,
        _ => Split::Test,
    }
}

/// Read and check a dataset: parse the CSV, assemble every study's T2, locate every head.
/// `need` lists the splits that must hold every stage (training needs `Train`; evaluation
/// needs nothing more than one study in its split, which the caller checks).
pub fn load(csv: &Path, need: &[Split]) -> Result<Dataset, DatasetError> {
    load_with_t1(csv, need, false)
}

/// [`load`], with each study's T1 companion assembled too when `want_t1` (for a stager
/// that reads one; otherwise it is not decoded or kept).
pub fn load_with_t1(csv: &Path, need: &[Split], want_t1: bool) -> Result<Dataset, DatasetError> {
    let bytes = std::fs::read(csv).map_err(|source| DatasetError::Io {
        path: csv.to_owned(),
        source,
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    let base = csv.parent().unwrap_or(Path::new(".")).to_owned();
    let mut studies = Vec::new();
    for (index, rows) in parse(csv, &text, &base)?.into_iter().enumerate() {
        studies.push(load_study(csv, &base, index, rows, want_t1)?);
    }
    let ds = Dataset {
        path: csv.to_owned(),
        sha256,
        studies,
    };
    for s in need {
        let counts = ds
            .summary()
            .heads
            .remove(split_name(*s))
            .unwrap_or_default();
        for stage in [Stage::S0, Stage::S1, Stage::S2] {
            if counts.get(stage.label()).copied().unwrap_or(0) == 0 {
                return Err(DatasetError::Dataset {
                    path: csv.to_owned(),
                    message: format!(
                        "no stage {} head in the {} split: every stage needs examples ({} studies in it)",
                        stage.label(),
                        split_name(*s),
                        ds.split(*s).count()
                    ),
                });
            }
        }
    }
    Ok(ds)
}

/// The error for row `row` (1-based line number) of `csv`.
fn row_err(csv: &Path, row: usize, message: String) -> DatasetError {
    DatasetError::Row {
        path: csv.to_owned(),
        row,
        message,
    }
}

/// The columns a dataset may have.
const COLUMNS: [&str; 9] = [
    "study",
    "side",
    "stage",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "radius_mm",
    "label_map",
    "split",
];

/// One study's rows: its folder, its split if given, the row it first appears on, and its
/// heads.
struct StudyRows {
    name: String,
    split: Option<Split>,
    first_row: usize,
    heads: Vec<HeadRow>,
}

/// The CSV's studies in order of first appearance, each head checked on its own and
/// against the study's other rows (one split per study, one row per side).
fn parse(csv: &Path, text: &str, base: &Path) -> Result<Vec<StudyRows>, DatasetError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (hrow, header) = lines.next().ok_or_else(|| DatasetError::Dataset {
        path: csv.to_owned(),
        message: "empty: a header and one row per head are needed".into(),
    })?;
    let names: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    for r in ["study", "side", "stage"] {
        if !names.iter().any(|n| n == r) {
            return Err(row_err(
                csv,
                hrow,
                format!("the header has no column {r:?}"),
            ));
        }
    }
    if let Some(n) = names.iter().find(|n| !COLUMNS.contains(&n.as_str())) {
        return Err(row_err(csv, hrow, format!("unknown column {n:?}")));
    }
    let mut studies: Vec<StudyRows> = Vec::new();
    for (row, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let (study, split, head) =
            parse_row(&names, &cells, row, base).map_err(|m| row_err(csv, row, m))?;
        let entry = match studies.iter_mut().position(|s| s.name == study) {
            Some(i) => &mut studies[i],
            None => {
                studies.push(StudyRows {
                    name: study.clone(),
                    split,
                    first_row: row,
                    heads: Vec::new(),
                });
                studies.last_mut().expect("just pushed")
            }
        };
        if split.is_some() && entry.split.is_some() && split != entry.split {
            let m = format!(
                "study {study} is in another split on row {}",
                entry.first_row
            );
            return Err(row_err(csv, row, m));
        }
        entry.split = entry.split.or(split);
        if let Some(other) = entry.heads.iter().find(|h| h.side == head.side) {
            let m = format!(
                "the {} head of {study} is already given on row {}",
                head.side, other.row
            );
            return Err(row_err(csv, row, m));
        }
        entry.heads.push(head);
    }
    Ok(studies)
}

/// One CSV row: its study folder, split (if given) and head.
fn parse_row(
    names: &[String],
    cells: &[&str],
    row: usize,
    base: &Path,
) -> Result<(String, Option<Split>, HeadRow), String> {
    if cells.len() > names.len() {
        return Err(format!(
            "{} cells, the header has {}",
            cells.len(),
            names.len()
        ));
    }
    let get = |name: &str| {
        names
            .iter()
            .position(|n| n == name)
            .and_then(|i| cells.get(i))
            .copied()
            .filter(|c| !c.is_empty())
    };
    let study = get("study").ok_or("no study folder")?;
    let side = get("side")
        .and_then(Side::from_label)
        .ok_or_else(|| format!("side {:?}: must be R or L", get("side").unwrap_or_default()))?;
    let stage = match get("stage").and_then(StageCall::from_label) {
        Some(StageCall::Stage0) => Stage::S0,
        Some(StageCall::StageI) => Stage::S1,
        Some(StageCall::StageII) => Stage::S2,
        _ => {
            return Err(format!(
                "stage {:?}: must be 0, I or II (Ficat-Arlet)",
                get("stage").unwrap_or_default()
            ));
        }
    };
    let num = |name: &str| -> Result<Option<f64>, String> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| format!("{name} {v:?} is not a number")),
        }
    };
    let coords = [
        num("center_x_mm")?,
        num("center_y_mm")?,
        num("center_z_mm")?,
    ];
    let label_map = get("label_map").map(|p| base.join(p));
    let center_radius = match (coords, num("radius_mm")?) {
        ([Some(x), Some(y), Some(z)], Some(r)) if r > 0.0 => Some(([x, y, z], r)),
        ([None, None, None], None) => None,
        _ => {
            return Err("give all of center_x_mm, center_y_mm, center_z_mm and a positive radius_mm, or none".into());
        }
    };
    if center_radius.is_none() && label_map.is_none() {
        return Err("no head location: give the centre and radius, or a label_map".into());
    }
    let split = match get("split").map(str::to_lowercase).as_deref() {
        None => None,
        Some("train") => Some(Split::Train),
        Some("val") => Some(Split::Val),
        Some("test") => Some(Split::Test),
        Some(other) => return Err(format!("split {other:?}: must be train, val or test")),
    };
    let head = HeadRow {
        row,
        side,
        stage,
        center_radius,
        label_map,
    };
    Ok((study.to_owned(), split, head))
}

/// One study of the dataset: its T2 (and, with `want_t1`, its T1 companion) assembled,
/// each head located (given, or from the label map), right head first.
fn load_study(
    csv: &Path,
    base: &Path,
    index: usize,
    rows: StudyRows,
    want_t1: bool,
) -> Result<DatasetStudy, DatasetError> {
    let dir = base.join(&rows.name);
    if !dir.is_dir() {
        let m = format!("study folder {} does not exist", dir.display());
        return Err(row_err(csv, rows.first_row, m));
    }
    let rules = volume::Rules::default();
    let (volume, t1) = volume::assemble_t2_t1_in(&dir, &rules, want_t1)
        .map_err(|e| row_err(csv, rows.first_row, format!("{}: {e}", dir.display())))?;
    let mut heads = Vec::new();
    for h in &rows.heads {
        let (center, radius) = match (&h.center_radius, &h.label_map) {
            (Some(cr), _) => *cr,
            (None, Some(map)) => {
                let label = if h.side == Side::Right { 1.0 } else { 2.0 };
                head_from_label_map(map, label, &volume).map_err(|m| row_err(csv, h.row, m))?
            }
            (None, None) => unreachable!("checked while parsing"),
        };
        heads.push(head_truth(h.side, h.stage, center, radius));
    }
    // Right then left, as the phantom's truth.
    heads.sort_by_key(|h| h.side);
    let truth = StudyTruth {
        note: format!("site dataset {}", csv.display()),
        seed: index as u64,
        study_uid: volume.study_uid.clone(),
        accession_number: String::new(),
        scanner: "site dataset".into(),
        heads,
        series: Vec::new(),
    };
    Ok(DatasetStudy {
        split: rows.split.unwrap_or_else(|| hashed_split(&rows.name)),
        dir,
        study: PhantomStudy { truth, volume, t1 },
    })
}

fn head_truth(side: Side, stage: Stage, c: [f64; 3], r: f64) -> HeadTruth {
    HeadTruth {
        side,
        stage,
        early_onfh: stage != Stage::S0,
        variant: Variant::None,
        center_lps_mm: c,
        radius_mm: r,
        bbox_lps_mm: [
            [c[0] - r, c[1] - r, c[2] - r],
            [c[0] + r, c[1] + r, c[2] + r],
        ],
        lesion_center_lps_mm: None,
        lesion_sphere: None,
    }
}

/// Centre (centroid) and radius (of the sphere of equal volume) of `label` in a label map,
/// after checking that the map covers the T2's region.
fn head_from_label_map(path: &Path, label: f32, t2: &Volume) -> Result<([f64; 3], f64), String> {
    let map = nifti::read(path).map_err(|e| crate::errors::chain(&e))?;
    // The two grids' corners in patient space, as sets: the same region whatever the voxel
    // order or axis flips (ITK-SNAP may store the series in another voxel order).
    let corners = |dims: [usize; 3], to: &dyn Fn([f64; 3]) -> [f64; 3]| -> Vec<[f64; 3]> {
        let mut out = Vec::new();
        for c in 0..8 {
            let v = [0, 1, 2].map(|a| {
                if c >> a & 1 == 1 {
                    dims[a] as f64 - 1.0
                } else {
                    0.0
                }
            });
            out.push(to(v));
        }
        out
    };
    let a = corners(map.dims, &|v| map.voxel_to_patient(v));
    let b = corners(t2.dims, &|v| t2.voxel_to_patient(v));
    let tol = t2.spacing().iter().cloned().fold(0.0, f64::max).max(1.0);
    let far = a.iter().map(|p| {
        b.iter()
            .map(|q| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt())
            .fold(f64::MAX, f64::min)
    });
    let worst = far.fold(0.0, f64::max);
    if worst > tol {
        return Err(format!(
            "label map {} is not aligned with the T2 series (its corners lie up to {worst:.1} mm from the T2's; draw it on the T2, e.g. on the NIfTI `analyze --out` writes)",
            path.display()
        ));
    }
    let (mut sum, mut n) = ([0.0f64; 3], 0usize);
    let [nx, ny, _] = map.dims;
    for (idx, v) in map.data.iter().enumerate() {
        if (*v - label).abs() < 0.5 {
            let (i, j, k) = (idx % nx, idx / nx % ny, idx / (nx * ny));
            let p = map.voxel_to_patient([i as f64, j as f64, k as f64]);
            for a in 0..3 {
                sum[a] += p[a];
            }
            n += 1;
        }
    }
    if n == 0 {
        return Err(format!(
            "label map {} has no voxel labelled {label} ({} head)",
            path.display(),
            if label == 1.0 { "right" } else { "left" }
        ));
    }
    let a = &map.affine;
    let col = |c: usize| [a[0][c], a[1][c], a[2][c]];
    let (x, y, z) = (col(0), col(1), col(2));
    let det = x[0] * (y[1] * z[2] - y[2] * z[1]) - y[0] * (x[1] * z[2] - x[2] * z[1])
        + z[0] * (x[1] * y[2] - x[2] * y[1]);
    let volume_mm3 = n as f64 * det.abs();
    let radius = (3.0 * volume_mm3 / (4.0 * std::f64::consts::PI)).cbrt();
    Ok((sum.map(|s| s / n as f64), radius))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_splits_are_stable_and_roughly_seventy_fifteen_fifteen() {
        let mut counts = [0usize; 3];
        for i in 0..2000 {
            let s = hashed_split(&format!("site/patient_{i:05}"));
            assert_eq!(s, hashed_split(&format!("site/patient_{i:05}")));
            counts[s as usize] += 1;
        }
        assert!((1250..1550).contains(&counts[0]), "{counts:?}");
        assert!((200..400).contains(&counts[1]), "{counts:?}");
        assert!((200..400).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        let check = |text: &str, row: usize, needle: &str| {
            std::fs::write(&csv, text).unwrap();
            let e = load(&csv, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("row {row}:")), "{e}");
            assert!(e.contains(needle), "{e}");
        };
        check("study,side,stage\nx,R,III\n", 2, "stage \"III\"");
        check("study,side,stage\nx,M,0\n", 2, "side");
        check("study,side,stage\nx,R,0\n", 2, "no head location");
        check(
            "study,side,stage,center_x_mm,center_y_mm,center_z_mm,radius_mm\nnowhere,R,0,1,2,3,20\n",
            2,
            "does not exist",
        );
        check(
            "study,side,stage,center_x_mm,center_y_mm,center_z_mm,radius_mm\n\
             a,R,0,1,2,3,20\na,R,I,1,2,3,20\n",
            3,
            "already given on row 2",
        );
        check("study,side,stage,colour\n", 1, "unknown column");
    }
}
