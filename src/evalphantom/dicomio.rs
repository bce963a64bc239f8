//! Writing the evaluation phantom as DICOM files: tags, transfer syntaxes (explicit and
//! implicit VR little endian, RLE Lossless with our own encoder), UIDs and file names.

use std::path::Path;

use dicom_core::value::{PixelFragmentSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::geom::{V3, mix64};

/// UID root of evaluation-phantom objects (distinct from the training phantom's).
pub(crate) const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1382.97";

/// MR Image Storage.
pub(crate) const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// How pixel data (and the data set) are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Explicit VR Little Endian.
    Explicit,
    /// Implicit VR Little Endian (older systems and many PACS exports).
    Implicit,
    /// RLE Lossless, encapsulated, one fragment per frame.
    Rle,
}

impl Encoding {
    pub(crate) fn uid(self) -> &'static str {
        match self {
            Encoding::Explicit => "1.2.840.10008.1.2.1",
            Encoding::Implicit => "1.2.840.10008.1.2",
            Encoding::Rle => "1.2.840.10008.1.2.5",
        }
    }
}

/// A UID under the root for this seed and a position (what, series, instance).
pub(crate) fn uid(seed: u64, parts: &[u64]) -> String {
    let mut s = format!("{UID_ROOT}.{seed}");
    for p in parts {
        s.push('.');
        s.push_str(&p.to_string());
    }
    s
}

/// A file name that reveals nothing about slice order.
pub(crate) fn opaque_name(seed: u64, series: u64, k: u64) -> u64 {
    mix64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ mix64(series << 32 | k))
}

/// Decimal string: at most 16 characters, no exponent, trailing zeros trimmed.
pub(crate) fn ds(v: f64) -> String {
    for decimals in (0..=6).rev() {
        let mut s = format!("{v:.decimals$}");
        if s.contains('.') {
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.pop();
            }
        }
        if s == "-0" {
            s = "0".into();
        }
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{}", v.round() as i64)
}

fn ds_multi(v: &[f64]) -> String {
    v.iter().map(|x| ds(*x)).collect::<Vec<_>>().join("\\")
}

/// Gregorian date (YYYYMMDD) of `days` after 1970-01-01.
pub(crate) fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// PackBits one row into `out` (PS3.5 G.3.1: runs never cross a row).
fn packbits(row: &[u8], out: &mut Vec<u8>) {
    let n = row.len();
    let mut i = 0;
    while i < n {
        let mut run = 1;
        while i + run < n && run < 128 && row[i + run] == row[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((257 - run) as u8);
            out.push(row[i]);
            i += run;
        } else {
            let start = i;
            i += 1;
            while i < n && i - start < 128 {
                if i + 1 < n && row[i] == row[i + 1] {
                    break;
                }
                i += 1;
            }
            out.push((i - start - 1) as u8);
            out.extend_from_slice(&row[start..i]);
        }
    }
}

/// RLE Lossless frame of 16-bit single-sample pixels (PS3.5 Annex G): a 64-byte header of
/// segment offsets, then the most significant byte plane, then the least significant one,
/// each padded to even length.
pub(crate) fn rle_encode(pixels: &[u16], rows: usize, cols: usize) -> Vec<u8> {
    let mut segments = Vec::with_capacity(2);
    for shift in [8u32, 0] {
        let mut seg = Vec::with_capacity(rows * cols / 2);
        let mut row = vec![0u8; cols];
        for r in 0..rows {
            for (c, b) in row.iter_mut().enumerate() {
                *b = (pixels[r * cols + c] >> shift) as u8;
            }
            packbits(&row, &mut seg);
        }
        if seg.len() % 2 == 1 {
            // -128 is a no-op in PackBits.
            seg.push(0x80);
        }
        segments.push(seg);
    }
    let mut out = Vec::with_capacity(64 + segments.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    let mut offset = 64u32;
    for s in &segments {
        out.extend_from_slice(&offset.to_le_bytes());
        offset += s.len() as u32;
    }
    out.resize(64, 0);
    for s in &segments {
        out.extend_from_slice(s);
    }
    out
}

/// Attributes shared by every instance of a study.
#[derive(Debug, Clone)]
pub(crate) struct StudyMeta {
    /// Study Instance UID.
    pub study_uid: String,
    /// Frame of Reference UID (all series share the patient position).
    pub frame_uid: String,
    /// Accession Number.
    pub accession: String,
    /// Patient ID.
    pub patient_id: String,
    /// Patient Sex.
    pub sex: &'static str,
    /// Patient Age (nnnY).
    pub age: String,
    /// Patient Weight (kg), from the habitus.
    pub weight: f64,
    /// Study Date.
    pub date: String,
    /// Study Time (HHMMSS).
    pub time: String,
    /// Study ID.
    pub study_id: String,
    /// Manufacturer.
    pub manufacturer: &'static str,
    /// Manufacturer's Model Name.
    pub model: &'static str,
    /// Software Versions.
    pub software: &'static str,
    /// Station Name.
    pub station: &'static str,
    /// Institution Name.
    pub institution: &'static str,
    /// Device Serial Number.
    pub serial: String,
    /// Magnetic Field Strength (T).
    pub b0: f64,
    /// Patient Position (HFS / FFS).
    pub patient_position: &'static str,
}

/// Attributes of one series.
#[derive(Debug, Clone)]
pub(crate) struct SeriesMeta {
    /// Series Instance UID.
    pub uid: String,
    /// Series Number.
    pub number: i64,
    /// Series Description.
    pub description: String,
    /// Protocol Name.
    pub protocol: String,
    /// Image Type.
    pub image_type: String,
    /// Scanning Sequence.
    pub scanning_sequence: &'static str,
    /// Sequence Variant.
    pub sequence_variant: &'static str,
    /// Scan Options.
    pub scan_options: &'static str,
    /// Sequence Name.
    pub sequence_name: String,
    /// Repetition Time, ms.
    pub tr: f64,
    /// Echo Time, ms.
    pub te: f64,
    /// Inversion Time, ms (inversion recovery only).
    pub ti: Option<f64>,
    /// Echo Train Length.
    pub etl: u32,
    /// Flip Angle, degrees.
    pub flip: f64,
    /// Number of Averages.
    pub averages: f64,
    /// Pixel Bandwidth, Hz/pixel.
    pub bandwidth: f64,
    /// Receive Coil Name.
    pub coil: &'static str,
    /// Acquisition Matrix (frequency rows, frequency columns, phase rows, phase columns).
    pub acq_matrix: [u16; 4],
    /// In-plane Phase Encoding Direction (ROW / COL).
    pub phase_dir: &'static str,
    /// Percent Phase Field of View.
    pub percent_phase_fov: f64,
    /// Bits Stored (12 or 16).
    pub bits_stored: u16,
    /// Rescale (slope, intercept), when the style writes it.
    pub rescale: Option<(f64, f64)>,
    /// Window (centre, width) in output units.
    pub window: (f64, f64),
    /// Series Time (HHMMSS).
    pub time: String,
    /// Slice thickness, mm.
    pub thickness: f64,
    /// Spacing Between Slices, mm.
    pub spacing: f64,
    /// Image Comments text.
    pub comments: &'static str,
    /// Study Description.
    pub study_description: &'static str,
}

/// Attributes of one instance.
#[derive(Debug, Clone)]
pub(crate) struct SliceMeta<'a> {
    /// SOP Instance UID.
    pub sop_uid: String,
    /// Instance Number.
    pub instance_number: i64,
    /// Image Position (Patient).
    pub position: V3,
    /// Row direction cosines.
    pub row: V3,
    /// Column direction cosines.
    pub col: V3,
    /// Pixel spacing (square), mm.
    pub pixel: f64,
    /// Slice Location.
    pub location: f64,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Stored values, row-major.
    pub pixels: &'a [u16],
}

fn text(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

fn put_text(o: &mut InMemDicomObject, tag: Tag, vr: VR, v: &str) {
    o.put(text(tag, vr, v));
}

/// Patient, study, series and equipment attributes.
fn identity(o: &mut InMemDicomObject, study: &StudyMeta, series: &SeriesMeta, slice: &SliceMeta) {
    put_text(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put_text(o, tags::IMAGE_TYPE, VR::CS, &series.image_type);
    put_text(o, tags::SOP_CLASS_UID, VR::UI, MR_IMAGE_STORAGE);
    put_text(o, tags::SOP_INSTANCE_UID, VR::UI, &slice.sop_uid);
    for tag in [
        tags::STUDY_DATE,
        tags::SERIES_DATE,
        tags::ACQUISITION_DATE,
        tags::CONTENT_DATE,
    ] {
        put_text(o, tag, VR::DA, &study.date);
    }
    put_text(o, tags::STUDY_TIME, VR::TM, &study.time);
    for tag in [
        tags::SERIES_TIME,
        tags::ACQUISITION_TIME,
        tags::CONTENT_TIME,
    ] {
        put_text(o, tag, VR::TM, &series.time);
    }
    put_text(o, tags::ACCESSION_NUMBER, VR::SH, &study.accession);
    put_text(o, tags::MODALITY, VR::CS, "MR");
    put_text(o, tags::MANUFACTURER, VR::LO, study.manufacturer);
    put_text(o, tags::INSTITUTION_NAME, VR::LO, study.institution);
    put_text(o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    put_text(o, tags::STATION_NAME, VR::SH, study.station);
    put_text(o, tags::STUDY_DESCRIPTION, VR::LO, series.study_description);
    put_text(o, tags::SERIES_DESCRIPTION, VR::LO, &series.description);
    put_text(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, study.model);
    put_text(o, tags::PATIENT_NAME, VR::PN, "EXTERNAL^PHANTOM");
    put_text(o, tags::PATIENT_ID, VR::LO, &study.patient_id);
    put_text(o, tags::PATIENT_BIRTH_DATE, VR::DA, "");
    put_text(o, tags::PATIENT_SEX, VR::CS, study.sex);
    put_text(o, tags::PATIENT_AGE, VR::AS, &study.age);
    put_text(o, tags::PATIENT_WEIGHT, VR::DS, &ds(study.weight));
    put_text(o, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
    put_text(o, tags::BODY_PART_EXAMINED, VR::CS, "HIP");
}

/// How the series was acquired (MR Image and its sequence parameters).
fn acquisition(o: &mut InMemDicomObject, study: &StudyMeta, series: &SeriesMeta) {
    put_text(o, tags::SCANNING_SEQUENCE, VR::CS, series.scanning_sequence);
    put_text(o, tags::SEQUENCE_VARIANT, VR::CS, series.sequence_variant);
    put_text(o, tags::SCAN_OPTIONS, VR::CS, series.scan_options);
    put_text(o, tags::MR_ACQUISITION_TYPE, VR::CS, "2D");
    put_text(o, tags::SEQUENCE_NAME, VR::SH, &series.sequence_name);
    put_text(o, tags::SLICE_THICKNESS, VR::DS, &ds(series.thickness));
    put_text(o, tags::REPETITION_TIME, VR::DS, &ds(series.tr));
    put_text(o, tags::ECHO_TIME, VR::DS, &ds(series.te));
    if let Some(ti) = series.ti {
        put_text(o, tags::INVERSION_TIME, VR::DS, &ds(ti));
    }
    put_text(o, tags::NUMBER_OF_AVERAGES, VR::DS, &ds(series.averages));
    put_text(
        o,
        tags::IMAGING_FREQUENCY,
        VR::DS,
        &ds(42.577_478 * study.b0),
    );
    put_text(o, tags::IMAGED_NUCLEUS, VR::SH, "1H");
    put_text(o, tags::ECHO_NUMBERS, VR::IS, "1");
    put_text(o, tags::MAGNETIC_FIELD_STRENGTH, VR::DS, &ds(study.b0));
    put_text(o, tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(series.spacing));
    put_text(o, tags::ECHO_TRAIN_LENGTH, VR::IS, &series.etl.to_string());
    put_text(
        o,
        tags::PERCENT_PHASE_FIELD_OF_VIEW,
        VR::DS,
        &ds(series.percent_phase_fov),
    );
    put_text(o, tags::PIXEL_BANDWIDTH, VR::DS, &ds(series.bandwidth));
    put_text(o, tags::DEVICE_SERIAL_NUMBER, VR::LO, &study.serial);
    put_text(o, tags::SOFTWARE_VERSIONS, VR::LO, study.software);
    put_text(o, tags::PROTOCOL_NAME, VR::LO, &series.protocol);
    put_text(o, tags::RECEIVE_COIL_NAME, VR::SH, series.coil);
    put_text(o, tags::TRANSMIT_COIL_NAME, VR::SH, "BODY");
    o.put(DataElement::new(
        tags::ACQUISITION_MATRIX,
        VR::US,
        PrimitiveValue::U16(series.acq_matrix.to_vec().into()),
    ));
    put_text(
        o,
        tags::IN_PLANE_PHASE_ENCODING_DIRECTION,
        VR::CS,
        series.phase_dir,
    );
    put_text(o, tags::FLIP_ANGLE, VR::DS, &ds(series.flip));
    put_text(o, tags::PATIENT_POSITION, VR::CS, study.patient_position);
}

/// Where the slice is and what its pixels are (Image Plane, Image Pixel, VOI, rescale).
fn image(o: &mut InMemDicomObject, study: &StudyMeta, series: &SeriesMeta, slice: &SliceMeta) {
    put_text(o, tags::STUDY_INSTANCE_UID, VR::UI, &study.study_uid);
    put_text(o, tags::SERIES_INSTANCE_UID, VR::UI, &series.uid);
    put_text(o, tags::STUDY_ID, VR::SH, &study.study_id);
    put_text(o, tags::SERIES_NUMBER, VR::IS, &series.number.to_string());
    put_text(o, tags::ACQUISITION_NUMBER, VR::IS, "1");
    put_text(
        o,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &slice.instance_number.to_string(),
    );
    put_text(
        o,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &ds_multi(&slice.position),
    );
    let orient = [slice.row, slice.col].concat();
    put_text(
        o,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        &ds_multi(&orient),
    );
    put_text(o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &study.frame_uid);
    put_text(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    put_text(o, tags::SLICE_LOCATION, VR::DS, &ds(slice.location));
    put_text(o, tags::IMAGE_COMMENTS, VR::LT, series.comments);
    o.put(us(tags::SAMPLES_PER_PIXEL, 1));
    put_text(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    o.put(us(tags::ROWS, slice.rows as u16));
    o.put(us(tags::COLUMNS, slice.cols as u16));
    put_text(
        o,
        tags::PIXEL_SPACING,
        VR::DS,
        &ds_multi(&[slice.pixel, slice.pixel]),
    );
    o.put(us(tags::BITS_ALLOCATED, 16));
    o.put(us(tags::BITS_STORED, series.bits_stored));
    o.put(us(tags::HIGH_BIT, series.bits_stored - 1));
    o.put(us(tags::PIXEL_REPRESENTATION, 0));
    put_text(o, tags::WINDOW_CENTER, VR::DS, &ds(series.window.0));
    put_text(o, tags::WINDOW_WIDTH, VR::DS, &ds(series.window.1));
    if let Some((slope, intercept)) = series.rescale {
        put_text(o, tags::RESCALE_INTERCEPT, VR::DS, &ds(intercept));
        put_text(o, tags::RESCALE_SLOPE, VR::DS, &ds(slope));
        put_text(o, tags::RESCALE_TYPE, VR::LO, "US");
    }
}

/// Build and write one instance.
pub(crate) fn write_instance(
    path: &Path,
    study: &StudyMeta,
    series: &SeriesMeta,
    slice: &SliceMeta,
    encoding: Encoding,
) -> Result<(), String> {
    let mut o = InMemDicomObject::new_empty();
    identity(&mut o, study, series, slice);
    acquisition(&mut o, study, series);
    image(&mut o, study, series, slice);
    match encoding {
        Encoding::Explicit | Encoding::Implicit => {
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(slice.pixels.to_vec().into()),
            ));
        }
        Encoding::Rle => {
            let frame = rle_encode(slice.pixels, slice.rows, slice.cols);
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                Value::from(PixelFragmentSequence::new(Vec::<u32>::new(), vec![frame])),
            ));
        }
    }
    let file = o
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(encoding.uid())
                .media_storage_sop_class_uid(MR_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(slice.sop_uid.as_str()),
        )
        .map_err(|e| e.to_string())?;
    file.write_to_file(path).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_dates() {
        assert_eq!(ds(0.5), "0.5");
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(123.4567891), "123.456789");
        assert!(ds(-123456.123456789).len() <= 16);
        assert_eq!(date(0), "19700101");
        assert_eq!(date(19_000), "20220108");
        assert_eq!(date(11_016), "20000229");
        assert!(uid(u64::MAX, &[3, 12, 999]).len() <= 64);
    }

    #[test]
    fn packbits_runs_and_literals() {
        let mut out = Vec::new();
        packbits(&[7, 7, 7, 1, 2, 3, 9, 9], &mut out);
        assert_eq!(out, vec![254, 7, 2, 1, 2, 3, 255, 9]);
    }
}
