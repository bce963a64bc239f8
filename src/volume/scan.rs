//! Reading headers and grouping instances into series.
//!
//! Only the attributes before Pixel Data are read here, so scanning a study is cheap;
//! pixel data is decoded later, for the one series that is assembled. Files that are not
//! DICOM are skipped and counted, never fatal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use super::{Plane, V3};

/// What the scan knows about one instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The file.
    pub path: PathBuf,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Instance Number, if present (informative only; never used to order slices).
    pub instance_number: Option<i64>,
    /// Image Position (Patient).
    pub position: Option<V3>,
    /// Row and column direction cosines from Image Orientation (Patient).
    pub orientation: Option<(V3, V3)>,
    /// Number of frames (1 for classic images).
    pub frames: u32,
}

/// One series and the attributes the selection rules look at.
#[derive(Debug, Clone)]
pub struct Series {
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Accession Number.
    pub accession_number: Option<String>,
    /// Series Number.
    pub number: Option<i64>,
    /// Series Description.
    pub description: String,
    /// Protocol Name.
    pub protocol: String,
    /// Modality.
    pub modality: String,
    /// SOP Class UID (of the first instance).
    pub sop_class_uid: String,
    /// Image Type values, upper case.
    pub image_type: Vec<String>,
    /// Scanning Sequence values.
    pub scanning_sequence: Vec<String>,
    /// Scan Options values.
    pub scan_options: Vec<String>,
    /// Repetition Time (ms).
    pub repetition_time: Option<f64>,
    /// Echo Time (ms).
    pub echo_time: Option<f64>,
    /// Why the pixel data of some instance have been through lossy compression, if they
    /// have (see `lossy_evidence`).
    pub lossy: Option<String>,
    /// Frame of Reference UID: series sharing one share patient millimetres.
    pub frame_of_reference_uid: Option<String>,
    /// Contrast/Bolus Agent, when one was given (a post-contrast series).
    pub contrast_agent: Option<String>,
    /// The instances.
    pub instances: Vec<Instance>,
}

impl Series {
    /// The planes of the instances (one entry per distinct plane).
    pub fn planes(&self) -> Vec<Plane> {
        let mut out: Vec<Plane> = Vec::new();
        for i in &self.instances {
            if let Some((r, c)) = i.orientation {
                let p = Plane::of(r, c);
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Number of slices (frames across instances).
    pub fn slices(&self) -> usize {
        self.instances
            .iter()
            .map(|i| i.frames.max(1) as usize)
            .sum()
    }
}

/// Result of scanning a set of files.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Series found, ordered by series number then UID.
    pub series: Vec<Series>,
    /// Files that are not readable DICOM.
    pub skipped: usize,
}

/// All regular files under the given paths (folders are searched recursively), sorted.
/// A path given that does not exist is an error; inside folders, entries that cannot be
/// read (a dangling link, no permission) are skipped — like files that are not DICOM.
pub fn collect_files(roots: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for root in roots {
        std::fs::metadata(root)?;
        walk(root, &mut out, 0);
    }
    out.sort();
    Ok(out)
}

fn walk(p: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    // Deep enough for any PACS export; a bound against link loops.
    if depth > 32 {
        return;
    }
    let Ok(meta) = std::fs::metadata(p) else {
        return;
    };
    if meta.is_dir() {
        if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                walk(&e.path(), out, depth + 1);
            }
        }
    } else if meta.is_file() {
        out.push(p.to_owned());
    }
}

/// An attribute as trimmed text; None when absent or empty.
pub(crate) fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn multi(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Vec<String> {
    text(obj, tag)
        .map(|s| s.split('\\').map(|v| v.trim().to_uppercase()).collect())
        .unwrap_or_default()
}

fn floats(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_finite_float64().ok())
}

/// Transfer syntaxes whose compression is always lossy (JPEG baseline and extended). Other
/// syntaxes that may be lossy (JPEG-LS near-lossless, JPEG 2000, HTJ2K) are lossy when the
/// data set says so in Lossy Image Compression, which every writer of lossy data must set.
const LOSSY_SYNTAXES: [(&str, &str); 2] = [
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended"),
];

/// Why an instance's pixel data have been through lossy compression, or None: Lossy Image
/// Compression (0028,2110) "01" (at any time in its history, even when stored losslessly
/// now), or a transfer syntax that is lossy by definition.
pub fn lossy_evidence(obj: &DefaultDicomObject) -> Option<String> {
    if text(obj, tags::LOSSY_IMAGE_COMPRESSION).as_deref() == Some("01") {
        let method = multi(obj, tags::LOSSY_IMAGE_COMPRESSION_METHOD).join("\\");
        let ratio = multi(obj, tags::LOSSY_IMAGE_COMPRESSION_RATIO).join("\\");
        let mut why = "Lossy Image Compression (0028,2110) is 01".to_string();
        if !method.is_empty() {
            why += &format!(", method {method}");
        }
        if !ratio.is_empty() {
            why += &format!(", ratio {ratio}");
        }
        return Some(why);
    }
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    LOSSY_SYNTAXES
        .iter()
        .find(|(uid, _)| *uid == ts)
        .map(|(uid, name)| format!("transfer syntax {name} ({uid}) is lossy"))
}

/// Read the headers of `files` and group them into series. Unreadable files are counted
/// in `skipped`.
pub fn scan_files(files: &[PathBuf]) -> ScanReport {
    let mut by_series: BTreeMap<String, Series> = BTreeMap::new();
    let mut skipped = 0;
    for path in files {
        // Structure first: the parser must never see a forged length (see dicom::prescan).
        if crate::dicom::spool::walk_file(path, super::MAX_INFLATED_BYTES).is_err() {
            skipped += 1;
            continue;
        }
        let opened = std::panic::catch_unwind(|| {
            OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(path)
        });
        let Ok(Ok(mut obj)) = opened else {
            skipped += 1;
            continue;
        };
        crate::dicom::unknown_vr::resolve(&mut obj);
        let (Some(series_uid), Some(sop)) = (
            text(&obj, tags::SERIES_INSTANCE_UID),
            text(&obj, tags::SOP_INSTANCE_UID),
        ) else {
            skipped += 1;
            continue;
        };
        // Multi-frame objects keep geometry and timing in their functional groups; the first
        // frame stands for the instance here (assembly checks every frame).
        let enhanced = super::frames::per_frame_items(&obj) > 0;
        let attr = |seq, tag| {
            if enhanced {
                super::frames::floats(&obj, 0, seq, tag).or_else(|| floats(&obj, tag))
            } else {
                floats(&obj, tag)
            }
        };
        let position = attr(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
            .filter(|v| v.len() == 3)
            .map(|v| [v[0], v[1], v[2]]);
        let orientation = attr(
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .filter(|v| v.len() == 6)
        .map(|v| ([v[0], v[1], v[2]], [v[3], v[4], v[5]]));
        let repetition_time = attr(
            tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE,
            tags::REPETITION_TIME,
        )
        .and_then(|v| v.first().copied());
        let echo_time = floats(&obj, tags::ECHO_TIME)
            .or_else(|| {
                super::frames::floats(&obj, 0, tags::MR_ECHO_SEQUENCE, tags::EFFECTIVE_ECHO_TIME)
            })
            .and_then(|v| v.first().copied());
        let instance = Instance {
            path: path.clone(),
            sop_instance_uid: sop,
            instance_number: text(&obj, tags::INSTANCE_NUMBER).and_then(|s| s.parse().ok()),
            position,
            orientation,
            frames: text(&obj, tags::NUMBER_OF_FRAMES)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
        };
        let entry = by_series
            .entry(series_uid.clone())
            .or_insert_with(|| Series {
                series_uid,
                study_uid: text(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
                accession_number: text(&obj, tags::ACCESSION_NUMBER),
                number: text(&obj, tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
                description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
                protocol: text(&obj, tags::PROTOCOL_NAME).unwrap_or_default(),
                modality: text(&obj, tags::MODALITY).unwrap_or_default(),
                sop_class_uid: text(&obj, tags::SOP_CLASS_UID).unwrap_or_default(),
                image_type: multi(&obj, tags::IMAGE_TYPE),
                scanning_sequence: multi(&obj, tags::SCANNING_SEQUENCE),
                scan_options: multi(&obj, tags::SCAN_OPTIONS),
                repetition_time,
                echo_time,
                lossy: None,
                frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID),
                contrast_agent: text(&obj, tags::CONTRAST_BOLUS_AGENT),
                instances: Vec::new(),
            });
        if entry.lossy.is_none() {
            entry.lossy = lossy_evidence(&obj);
        }
        entry.instances.push(instance);
    }
    let mut series: Vec<Series> = by_series.into_values().collect();
    series.sort_by(|a, b| {
        a.number
            .cmp(&b.number)
            .then(a.series_uid.cmp(&b.series_uid))
    });
    ScanReport { series, skipped }
}
