//! One series to one volume with its voxel-to-patient affine.
//!
//! Slices are ordered by the projection of Image Position (Patient) on the slice normal
//! (row direction × column direction) — Instance Number is never trusted for order. Every
//! slice must share orientation, matrix and pixel spacing and lie on one stack; positions
//! must be distinct and evenly spaced (a gap of about two spacings is reported as a missing
//! slice). Pixel values come out with Rescale Slope/Intercept applied.
//!
//! Voxel (i, j, k) = (column, row, slice) maps to patient LPS millimetres through
//! `affine`: p = A · [i, j, k, 1].

use std::path::{Path, PathBuf};

use dicom_core::header::HasLength;
use dicom_pixeldata::PixelDecoder;

use super::{Series, V3, cross, dot};

/// Largest deviation of a slice gap from the median gap, as a fraction of it.
const SPACING_TOLERANCE: f64 = 0.1;
/// Direction cosines closer than this are the same orientation.
const ORIENTATION_TOLERANCE: f64 = 1e-3;

/// A volume in patient space.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Voxel values, x (column) fastest: index = (k · rows + j) · cols + i.
    pub data: Vec<f32>,
    /// (columns, rows, slices).
    pub dims: [usize; 3],
    /// Voxel (i, j, k, 1) → patient LPS mm.
    pub affine: [[f64; 4]; 4],
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
}

impl Volume {
    /// Value at voxel (i, j, k).
    pub fn get(&self, i: usize, j: usize, k: usize) -> f32 {
        self.data[(k * self.dims[1] + j) * self.dims[0] + i]
    }

    /// Patient LPS mm of a (possibly fractional) voxel coordinate.
    pub fn voxel_to_patient(&self, v: [f64; 3]) -> V3 {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3])
    }

    /// Voxel coordinate of a patient LPS point.
    pub fn patient_to_voxel(&self, p: V3) -> [f64; 3] {
        let a = &self.affine;
        let m = [
            [a[0][0], a[0][1], a[0][2]],
            [a[1][0], a[1][1], a[1][2]],
            [a[2][0], a[2][1], a[2][2]],
        ];
        let d = [p[0] - a[0][3], p[1] - a[1][3], p[2] - a[2][3]];
        solve3(m, d)
    }

    /// Voxel size along i, j, k in mm.
    pub fn spacing(&self) -> [f64; 3] {
        [0, 1, 2].map(|c| {
            (0..3)
                .map(|r| self.affine[r][c] * self.affine[r][c])
                .sum::<f64>()
                .sqrt()
        })
    }
}

/// Solve m · x = d (Cramer's rule; m is a well-conditioned direction matrix).
fn solve3(m: [[f64; 3]; 3], d: [f64; 3]) -> [f64; 3] {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let full = det(m);
    [0, 1, 2].map(|c| {
        let mut mc = m;
        for r in 0..3 {
            mc[r][c] = d[r];
        }
        det(mc) / full
    })
}

/// Why a series could not become a volume.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No instances.
    #[error("the series has no instances")]
    Empty,
    /// A file could not be read or decoded.
    #[error("{path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An instance has no pixel data (a non-image object in the series).
    #[error("{path}: not an image (no pixel data)")]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// An instance has zero rows, columns or pixel bytes.
    #[error("{path}: empty image (zero-size pixel data)")]
    ZeroSize {
        /// The file.
        path: PathBuf,
    },
    /// An instance lacks position, orientation or spacing.
    #[error("{path}: missing {what}")]
    MissingGeometry {
        /// The file.
        path: PathBuf,
        /// Which attribute.
        what: &'static str,
    },
    /// Slices differ in orientation.
    #[error("{path}: orientation differs from the rest of the series")]
    MixedOrientation {
        /// The file.
        path: PathBuf,
    },
    /// Slices differ in matrix size or pixel spacing.
    #[error("{path}: matrix size or pixel spacing differs from the rest of the series")]
    MixedGeometry {
        /// The file.
        path: PathBuf,
    },
    /// A slice lies off the stack defined by the first one.
    #[error("{path}: slice is shifted {offset_mm:.2} mm within its plane")]
    NotStacked {
        /// The file.
        path: PathBuf,
        /// In-plane offset from the stack.
        offset_mm: f64,
    },
    /// Two slices share a position.
    #[error("duplicate slice position {at_mm:.2} mm along the normal: {a} and {b}")]
    DuplicatePosition {
        /// One file.
        a: PathBuf,
        /// The other file.
        b: PathBuf,
        /// Where.
        at_mm: f64,
    },
    /// A gap of about two (or more) spacings.
    #[error(
        "missing slice: gap of {gap_mm:.2} mm after {after_mm:.2} mm (spacing {spacing_mm:.2} mm)"
    )]
    MissingSlice {
        /// Position before the gap.
        after_mm: f64,
        /// The gap.
        gap_mm: f64,
        /// The regular spacing.
        spacing_mm: f64,
    },
    /// Gaps that vary beyond the tolerance.
    #[error("uneven slice spacing: gaps from {min_mm:.3} to {max_mm:.3} mm")]
    UnevenSpacing {
        /// Smallest gap.
        min_mm: f64,
        /// Largest gap.
        max_mm: f64,
    },
}

struct Slice {
    path: PathBuf,
    source: SliceSource,
    position: V3,
    row: V3,
    col: V3,
    rows: usize,
    cols: usize,
    spacing: [f64; 2],
    pixels: Vec<f32>,
}

fn decode_err(path: &Path, e: impl std::fmt::Display) -> VolumeError {
    VolumeError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Read the slices of one file: one for a classic image, one per frame for a multi-frame
/// (Enhanced MR) image, whose geometry comes from its functional groups.
fn read_slices(path: &Path) -> Result<Vec<Slice>, VolumeError> {
    use dicom_dictionary_std::tags;
    // Structure first: the parser must never see a forged length (see dicom::prescan).
    crate::dicom::spool::walk_file(path, super::MAX_INFLATED_BYTES)
        .map_err(|e| decode_err(path, e))?;
    let mut obj = std::panic::catch_unwind(|| dicom_object::open_file(path))
        .map_err(|_| decode_err(path, "the parser panicked"))?
        .map_err(|e| decode_err(path, e))?;
    // Attributes written as VR UN are read as their dictionary VR.
    crate::dicom::unknown_vr::resolve(&mut obj);
    let missing = |what| VolumeError::MissingGeometry {
        path: path.to_owned(),
        what,
    };
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(VolumeError::NotAnImage {
            path: path.to_owned(),
        });
    }
    let rows = obj
        .element(tags::ROWS)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(0) as usize;
    let cols = obj
        .element(tags::COLUMNS)
        .ok()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(0) as usize;
    let pixel_bytes = obj
        .element(tags::PIXEL_DATA)
        .ok()
        .map(|e| e.value().length().0)
        .unwrap_or(0);
    if rows == 0 || cols == 0 || pixel_bytes == 0 {
        return Err(VolumeError::ZeroSize {
            path: path.to_owned(),
        });
    }
    let frames: usize = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1)
        .max(1) as usize;
    let top = |tag| -> Option<Vec<f64>> {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_finite_float64().ok())
    };
    let uid = |tag| super::scan::text(&obj, tag).unwrap_or_default();
    let (sop_class_uid, sop_instance_uid) = (uid(tags::SOP_CLASS_UID), uid(tags::SOP_INSTANCE_UID));
    let enhanced = super::frames::per_frame_items(&obj) > 0;
    if enhanced && super::frames::per_frame_items(&obj) != frames {
        return Err(missing("one Per-frame Functional Groups item per frame"));
    }
    if frames > 1 && !enhanced {
        return Err(missing("per-frame geometry (Per-frame Functional Groups)"));
    }
    let decoded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| obj.decode_pixel_data()))
            .map_err(|_| decode_err(path, "the pixel decoder panicked"))?
            .map_err(|e| decode_err(path, e))?;
    let mut out = Vec::with_capacity(frames);
    for f in 0..frames {
        let geo = |seq, attr, top_tag| {
            if enhanced {
                super::frames::floats(&obj, f, seq, attr)
            } else {
                top(top_tag)
            }
        };
        let position = geo(
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
            tags::IMAGE_POSITION_PATIENT,
        )
        .filter(|v| v.len() == 3)
        .ok_or_else(|| missing("Image Position (Patient)"))?;
        let orient = geo(
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .filter(|v| v.len() == 6)
        .ok_or_else(|| missing("Image Orientation (Patient)"))?;
        let spacing = geo(
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::PIXEL_SPACING,
            tags::PIXEL_SPACING,
        )
        .filter(|v| v.len() == 2 && v[0] > 0.0 && v[1] > 0.0)
        .ok_or_else(|| missing("Pixel Spacing"))?;
        let row = [orient[0], orient[1], orient[2]];
        let col = [orient[3], orient[4], orient[5]];
        let unit = |v: V3| (dot(v, v) - 1.0).abs() < 0.01;
        if !unit(row) || !unit(col) || dot(row, col).abs() > 0.01 {
            return Err(decode_err(
                path,
                "Image Orientation (Patient) is not two orthogonal unit vectors",
            ));
        }
        // Rounded direction cosines are renormalised so they do not scale the spacing.
        let norm = |v: V3| {
            let n = dot(v, v).sqrt();
            [v[0] / n, v[1] / n, v[2] / n]
        };
        let (row, col) = (norm(row), norm(col));
        let pixels = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decoded.to_vec_frame::<f32>(f as u32)
        }))
        .map_err(|_| decode_err(path, "the pixel decoder panicked"))?
        .map_err(|e| decode_err(path, e))?;
        if pixels.len() != rows * cols {
            return Err(decode_err(
                path,
                format!("{} pixels for a {rows}x{cols} image", pixels.len()),
            ));
        }
        let position = [position[0], position[1], position[2]];
        out.push(Slice {
            path: path.to_owned(),
            source: SliceSource {
                path: path.to_owned(),
                sop_class_uid: sop_class_uid.clone(),
                sop_instance_uid: sop_instance_uid.clone(),
                frame: enhanced.then_some(f as u32 + 1),
                position,
            },
            position,
            row,
            col,
            rows,
            cols,
            spacing: [spacing[0], spacing[1]],
            pixels,
        });
    }
    Ok(out)
}

fn close(a: V3, b: V3, tol: f64) -> bool {
    (0..3).all(|i| (a[i] - b[i]).abs() <= tol)
}

/// Where one slice of a volume came from: what a derived object (SEG, Parametric Map, SR)
/// references for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceSource {
    /// The file.
    pub path: PathBuf,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Frame number (1-based) within a multi-frame instance; None for a classic image.
    pub frame: Option<u32>,
    /// Image Position (Patient) of the slice.
    pub position: V3,
}

/// Decode a series into a volume.
pub fn assemble(series: &Series) -> Result<Volume, VolumeError> {
    assemble_with_sources(series).map(|(v, _)| v)
}

/// [`assemble`], with the source of each slice, in the volume's slice order.
pub fn assemble_with_sources(series: &Series) -> Result<(Volume, Vec<SliceSource>), VolumeError> {
    let paths: Vec<&Path> = series.instances.iter().map(|i| i.path.as_path()).collect();
    let (mut vol, sources) = assemble_files_with_sources(&paths)?;
    vol.series_uid = series.series_uid.clone();
    vol.study_uid = series.study_uid.clone();
    Ok((vol, sources))
}

/// Decode files (one series, any order) into a volume.
pub fn assemble_files(paths: &[&Path]) -> Result<Volume, VolumeError> {
    assemble_files_with_sources(paths).map(|(v, _)| v)
}

fn assemble_files_with_sources(paths: &[&Path]) -> Result<(Volume, Vec<SliceSource>), VolumeError> {
    let mut slices = Vec::new();
    for p in paths {
        slices.extend(read_slices(p)?);
    }
    let first = slices.first().ok_or(VolumeError::Empty)?;
    let (row, col) = (first.row, first.col);
    let normal = cross(row, col);
    let (rows, cols, spacing) = (first.rows, first.cols, first.spacing);
    for s in &slices {
        if !close(s.row, row, ORIENTATION_TOLERANCE) || !close(s.col, col, ORIENTATION_TOLERANCE) {
            return Err(VolumeError::MixedOrientation {
                path: s.path.clone(),
            });
        }
        if s.rows != rows
            || s.cols != cols
            || (s.spacing[0] - spacing[0]).abs() > 1e-3
            || (s.spacing[1] - spacing[1]).abs() > 1e-3
        {
            return Err(VolumeError::MixedGeometry {
                path: s.path.clone(),
            });
        }
    }
    slices.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
    let origin = slices[0].position;
    let along: Vec<f64> = slices
        .iter()
        .map(|s| dot(s.position, normal) - dot(origin, normal))
        .collect();
    // Every slice on the stack through the first one.
    for (s, d) in slices.iter().zip(&along) {
        let expected = [0, 1, 2].map(|i| origin[i] + normal[i] * d);
        let off = ((0..3)
            .map(|i| (s.position[i] - expected[i]).powi(2))
            .sum::<f64>())
        .sqrt();
        if off > 0.5 * spacing[0].min(spacing[1]) {
            return Err(VolumeError::NotStacked {
                path: s.path.clone(),
                offset_mm: off,
            });
        }
    }
    let gaps: Vec<f64> = along.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, g) in gaps.iter().enumerate() {
        if *g < 0.05 {
            return Err(VolumeError::DuplicatePosition {
                a: slices[i].path.clone(),
                b: slices[i + 1].path.clone(),
                at_mm: dot(slices[i].position, normal),
            });
        }
    }
    let step = if gaps.is_empty() {
        1.0
    } else {
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        for (i, g) in gaps.iter().enumerate() {
            if *g > median * 1.5 {
                return Err(VolumeError::MissingSlice {
                    after_mm: dot(slices[i].position, normal),
                    gap_mm: *g,
                    spacing_mm: median,
                });
            }
        }
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        if (max - median) > SPACING_TOLERANCE * median
            || (median - min) > SPACING_TOLERANCE * median
        {
            return Err(VolumeError::UnevenSpacing {
                min_mm: min,
                max_mm: max,
            });
        }
        // The mean gap: the affine then maps the first and last slice exactly.
        along[along.len() - 1] / gaps.len() as f64
    };
    let mut data = Vec::with_capacity(rows * cols * slices.len());
    for s in &slices {
        data.extend_from_slice(&s.pixels);
    }
    // Column i steps along the row direction by the column spacing (Pixel Spacing[1]);
    // row j steps along the column direction by the row spacing (Pixel Spacing[0]).
    let a = [
        [
            row[0] * spacing[1],
            col[0] * spacing[0],
            normal[0] * step,
            origin[0],
        ],
        [
            row[1] * spacing[1],
            col[1] * spacing[0],
            normal[1] * step,
            origin[1],
        ],
        [
            row[2] * spacing[1],
            col[2] * spacing[0],
            normal[2] * step,
            origin[2],
        ],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let n = slices.len();
    let sources = slices.into_iter().map(|s| s.source).collect();
    Ok((
        Volume {
            data,
            dims: [cols, rows, n],
            affine: a,
            series_uid: String::new(),
            study_uid: String::new(),
        },
        sources,
    ))
}

/// A small coronal test volume: 0.8 mm pixels, 3.5 mm slices, filled with `value`.
#[cfg(test)]
pub(crate) fn coronal_test_volume(dims: [usize; 3], value: f32) -> Volume {
    Volume {
        data: vec![value; dims[0] * dims[1] * dims[2]],
        dims,
        affine: [
            [0.8, 0.0, 0.0, -100.0],
            [0.0, 0.0, 3.5, -20.0],
            [0.0, -0.8, 0.0, 50.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        series_uid: String::new(),
        study_uid: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_round_trips() {
        let v = coronal_test_volume([2, 2, 2], 0.0);
        let p = v.voxel_to_patient([10.0, 20.0, 3.0]);
        assert_eq!(p, [-92.0, -9.5, 34.0]);
        let back = v.patient_to_voxel(p);
        assert!((0..3).all(|i| (back[i] - [10.0, 20.0, 3.0][i]).abs() < 1e-9));
        assert_eq!(v.spacing(), [0.8, 0.8, 3.5]);
    }
}
