//! Synthetic MR instances: plain test objects for the receiver's tests and benchmark
//! (anatomy, for everything else, comes from `phantom`). They carry realistic DICOM structure (UIDs, geometry, 16-bit pixels)
//! but no anatomy; they exist to exercise the receiver, not the models.
//!
//! This module only builds objects and writes files; it never talks to the network.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// UID root for objects this project generates (test/demo data, never patient data).
pub const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1382.99";

static UID_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh UID under [`UID_ROOT`], unique within this process and run.
pub fn new_uid() -> String {
    let n = UID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{UID_ROOT}.{}.{}.{}",
        std::process::id(),
        t % 1_000_000_000_000,
        n
    )
}

/// Description of a series to generate.
#[derive(Debug, Clone)]
pub struct SeriesSpec<'a> {
    /// Study the series belongs to.
    pub study_uid: &'a str,
    /// Series Number.
    pub series_number: i32,
    /// Series Description.
    pub description: &'a str,
    /// Number of instances (slices).
    pub count: usize,
    /// Rows per slice.
    pub rows: u16,
    /// Columns per slice.
    pub cols: u16,
    /// SOP Class UID (MR Image Storage for the receiver to accept).
    pub sop_class_uid: &'a str,
}

/// One generated instance on disk.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Where it was written.
    pub path: PathBuf,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
    /// Its Series Instance UID.
    pub series_uid: String,
    /// Its Study Instance UID.
    pub study_uid: String,
    /// Its pixel values, row-major.
    pub pixels: Vec<u16>,
}

/// Write `spec.count` instances (Explicit VR Little Endian) into `dir`.
pub fn write_series(dir: &Path, spec: &SeriesSpec) -> std::io::Result<Vec<Instance>> {
    std::fs::create_dir_all(dir)?;
    let series_uid = new_uid();
    let mut out = Vec::with_capacity(spec.count);
    for i in 0..spec.count {
        let sop = new_uid();
        let (rows, cols) = (spec.rows as usize, spec.cols as usize);
        // A smooth blob plus a per-slice ramp: compressible, and distinct per slice.
        let pixels: Vec<u16> = (0..rows * cols)
            .map(|k| {
                let (y, x) = ((k / cols) as f32, (k % cols) as f32);
                let (cy, cx) = (rows as f32 / 2.0, cols as f32 / 2.0);
                let r2 = ((y - cy).powi(2) + (x - cx).powi(2)) / (cx * cx);
                (1800.0 * (-r2 * 2.0).exp() + 3.0 * i as f32 + (x + y) * 0.5) as u16
            })
            .collect();
        let z = i as f64 * 3.0;
        let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let obj = InMemDicomObject::from_element_iter([
            text(tags::SOP_CLASS_UID, VR::UI, spec.sop_class_uid),
            text(tags::SOP_INSTANCE_UID, VR::UI, &sop),
            text(tags::STUDY_INSTANCE_UID, VR::UI, spec.study_uid),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid),
            text(tags::MODALITY, VR::CS, "MR"),
            text(tags::ACCESSION_NUMBER, VR::SH, "SYNTH0001"),
            text(tags::PATIENT_NAME, VR::PN, "PHANTOM^SYNTHETIC"),
            text(tags::PATIENT_ID, VR::LO, "SYNTHPID01"),
            text(tags::SERIES_NUMBER, VR::IS, &spec.series_number.to_string()),
            text(tags::INSTANCE_NUMBER, VR::IS, &(i + 1).to_string()),
            text(tags::SERIES_DESCRIPTION, VR::LO, spec.description),
            text(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("-100\\-100\\{z}"),
            ),
            text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
            text(tags::PIXEL_SPACING, VR::DS, "0.8\\0.8"),
            text(tags::SLICE_THICKNESS, VR::DS, "3"),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [spec.rows])),
            DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [spec.cols])),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [16])),
            DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [15])),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(pixels.clone().into()),
            ),
        ]);
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid(spec.sop_class_uid)
                    .media_storage_sop_instance_uid(sop.as_str()),
            )
            .map_err(std::io::Error::other)?;
        let path = dir.join(format!("s{}_{:04}.dcm", spec.series_number, i));
        file.write_to_file(&path).map_err(std::io::Error::other)?;
        out.push(Instance {
            path,
            sop_instance_uid: sop,
            series_uid: series_uid.clone(),
            study_uid: spec.study_uid.to_string(),
            pixels,
        });
    }
    Ok(out)
}
