//! Generated MR instances for tests and benchmarks (Explicit VR Little Endian files).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

static UID_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh UID under the project's test root, unique within this process and run.
pub fn new_uid() -> String {
    let n = UID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!(
        "1.2.826.0.1.3680043.10.1382.99.{}.{}.{}",
        std::process::id(),
        t % 1_000_000_000_000,
        n
    )
}

/// One generated instance on disk.
#[derive(Debug, Clone)]
pub struct Instance {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub pixels: Vec<u16>,
}

/// Description of a series to generate.
pub struct SeriesSpec<'a> {
    pub study_uid: &'a str,
    pub series_number: i32,
    pub description: &'a str,
    pub count: usize,
    pub rows: u16,
    pub cols: u16,
    pub sop_class_uid: &'a str,
}

/// Write `spec.count` MR instances (Explicit VR Little Endian) into `dir`.
pub fn write_series(dir: &Path, spec: &SeriesSpec) -> Vec<Instance> {
    std::fs::create_dir_all(dir).unwrap();
    let series_uid = new_uid();
    (0..spec.count)
        .map(|i| {
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
            let obj = InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::SOP_CLASS_UID,
                    VR::UI,
                    PrimitiveValue::from(spec.sop_class_uid),
                ),
                DataElement::new(
                    tags::SOP_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(sop.as_str()),
                ),
                DataElement::new(
                    tags::STUDY_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(spec.study_uid),
                ),
                DataElement::new(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    PrimitiveValue::from(series_uid.as_str()),
                ),
                DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("MR")),
                DataElement::new(
                    tags::ACCESSION_NUMBER,
                    VR::SH,
                    PrimitiveValue::from("TEST0001"),
                ),
                DataElement::new(
                    tags::PATIENT_NAME,
                    VR::PN,
                    PrimitiveValue::from("PHANTOM^TEST"),
                ),
                DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("PH0001")),
                DataElement::new(
                    tags::SERIES_NUMBER,
                    VR::IS,
                    PrimitiveValue::from(spec.series_number.to_string()),
                ),
                DataElement::new(
                    tags::INSTANCE_NUMBER,
                    VR::IS,
                    PrimitiveValue::from((i + 1).to_string()),
                ),
                DataElement::new(
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    PrimitiveValue::from(spec.description),
                ),
                DataElement::new(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    PrimitiveValue::from(format!("-100\\-100\\{z}")),
                ),
                DataElement::new(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    VR::DS,
                    PrimitiveValue::from("1\\0\\0\\0\\1\\0"),
                ),
                DataElement::new(
                    tags::PIXEL_SPACING,
                    VR::DS,
                    PrimitiveValue::from("0.8\\0.8"),
                ),
                DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("3")),
                DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
                DataElement::new(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    PrimitiveValue::from("MONOCHROME2"),
                ),
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
                .unwrap();
            let path = dir.join(format!("s{}_{:04}.dcm", spec.series_number, i));
            file.write_to_file(&path).unwrap();
            Instance {
                path,
                sop_instance_uid: sop,
                series_uid: series_uid.clone(),
                study_uid: spec.study_uid.to_string(),
                pixels,
            }
        })
        .collect()
}

/// A small MR series in one call.
pub fn mr_series(
    dir: &Path,
    study_uid: &str,
    number: i32,
    count: usize,
    size: u16,
) -> Vec<Instance> {
    write_series(
        dir,
        &SeriesSpec {
            study_uid,
            series_number: number,
            description: "T2 COR",
            count,
            rows: size,
            cols: size,
            sop_class_uid: uids::MR_IMAGE_STORAGE,
        },
    )
}
