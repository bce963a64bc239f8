//! From DICOM files to a 3D volume in patient space.
//!
//! - `scan`: read the headers of a set of files, group instances into series, and describe
//!   each series (description, sequence, timing, image type, orientation, slice count).
//! - `select`: choose the T2-weighted series to analyse by configurable rules and record
//!   why every other series was passed over; and, for a stager that reads one, the T1
//!   companion of that T2 (same study and Frame of Reference, neither fat-suppressed nor
//!   post-contrast).
//! - `assemble`: decode one series into a volume — slices ordered by their position along
//!   the slice normal (never by Instance Number), spacing checked, rescale applied — with the
//!   voxel-to-patient (LPS mm) affine.
//!
//! Every file is walked by `dicom::spool::walk_file` (the receiver's structural check)
//! before the DICOM parser reads it, so a folder given to `analyze` or a stored study
//! cannot make the parser allocate a forged length.
//!
//! This module reads files and computes; it never touches the network or the database.

pub mod assemble;
mod frames;
pub mod nifti;
pub mod preprocess;
pub mod scan;
pub mod select;

pub use crate::result::{SeriesVerdict, Verdict};
pub use assemble::{
    SliceSource, Volume, VolumeError, assemble, assemble_files, assemble_with_sources,
};
pub use preprocess::{Preprocess, preprocess, resample, sample};
pub use scan::{Instance, ScanReport, Series, collect_files, scan_files};
pub use select::{Rules, Selection, T1Rules, T1Selection, select, select_t1};

/// Most bytes a deflated file may inflate to before it is refused as unparseable.
pub const MAX_INFLATED_BYTES: u64 = 2 << 30;

/// A 3-vector of f64 (patient millimetres or directions).
pub type V3 = [f64; 3];

/// Slice orientation, from the slice normal's dominant patient axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Normal mostly along y (anterior-posterior).
    Coronal,
    /// Normal mostly along z (inferior-superior).
    Axial,
    /// Normal mostly along x (right-left).
    Sagittal,
}

impl Plane {
    /// The plane of a slice with row direction `row` and column direction `col`.
    pub fn of(row: V3, col: V3) -> Plane {
        let n = cross(row, col);
        let (ax, ay, az) = (n[0].abs(), n[1].abs(), n[2].abs());
        if az >= ax && az >= ay {
            Plane::Axial
        } else if ay >= ax {
            Plane::Coronal
        } else {
            Plane::Sagittal
        }
    }
}

pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Why a folder's T2 could not be had.
#[derive(Debug, thiserror::Error)]
pub enum T2Error {
    /// The folder could not be listed.
    #[error("cannot list {dir}: {source}")]
    Io {
        /// The folder.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No series passed the selection.
    #[error("no usable T2 series ({files} DICOM files; {})", verdicts.iter().map(|v| format!("{:?}: {}", v.description, v.verdict)).collect::<Vec<_>>().join("; "))]
    NoUsableSeries {
        /// Files found.
        files: usize,
        /// Every series with its verdict.
        verdicts: Vec<SeriesVerdict>,
    },
    /// The chosen series did not assemble.
    #[error(transparent)]
    Assemble(#[from] VolumeError),
}

/// The T2 of the study written under `dir`, selected (with `rules`) and assembled as the
/// pipeline does; for studies on disk outside the pipeline (phantoms, site datasets).
pub fn assemble_t2_in(dir: &std::path::Path, rules: &Rules) -> Result<Volume, T2Error> {
    let (series, chosen) = scan_and_select(dir, rules)?;
    Ok(assemble::assemble(&series[chosen])?)
}

/// The T2 of the study under `dir`, as [`assemble_t2_in`], and, when `want_t1`, its T1
/// companion ([`select_t1`]) when one is selected and assembles (a T1 that does not is no
/// T1). Without `want_t1` no T1 is selected or read.
pub fn assemble_t2_t1_in(
    dir: &std::path::Path,
    rules: &Rules,
    want_t1: bool,
) -> Result<(Volume, Option<Volume>), T2Error> {
    let (series, chosen) = scan_and_select(dir, rules)?;
    let t2 = assemble::assemble(&series[chosen])?;
    let t1 = want_t1
        .then(|| select_t1(&series, rules, chosen).chosen)
        .flatten()
        .and_then(|i| assemble::assemble(&series[i]).ok());
    Ok((t2, t1))
}

/// The series under `dir` and the index of the chosen T2.
fn scan_and_select(dir: &std::path::Path, rules: &Rules) -> Result<(Vec<Series>, usize), T2Error> {
    let files = collect_files(&[dir.to_owned()]).map_err(|source| T2Error::Io {
        dir: dir.to_owned(),
        source,
    })?;
    let report = scan_files(&files);
    let sel = select(&report.series, rules);
    let Some(chosen) = sel.chosen else {
        return Err(T2Error::NoUsableSeries {
            files: files.len(),
            verdicts: sel.verdicts,
        });
    };
    Ok((report.series, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_from_orientation() {
        assert_eq!(Plane::of([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]), Plane::Coronal);
        assert_eq!(Plane::of([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), Plane::Axial);
        assert_eq!(
            Plane::of([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
            Plane::Sagittal
        );
    }
}
