//! Builders of the SEG, Parametric Map, SR and Secondary Capture objects (see the module
//! above). Objects are built from scratch (every sequence of undefined length) and written
//! in Explicit VR Little Endian.

use std::path::{Path, PathBuf};

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use crate::result::{Analysis, HeadFinding, Side, StageCall};
use crate::volume::{SliceSource, Volume};

type Obj = InMemDicomObject;

const SEG_CLASS: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const PM_CLASS: &str = "1.2.840.10008.5.1.4.1.1.30";
const SR_CLASS: &str = "1.2.840.10008.5.1.4.1.1.88.34";
const SC_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Our implementation class UID (under 2.25, derived once from a fixed UUID).
const IMPLEMENTATION_CLASS_UID: &str = "2.25.318046920386417196283614245137421395021";
const MANUFACTURER: &str = "onfh-edge project";
/// The private coding scheme of the codes DICOM has no standard code for.
const SCHEME: &str = "99ONFH";
/// Content Description (LO, at most 64 characters) of the SEG and the PM; the full
/// intended use is in the SR and burned into the Secondary Captures.
const CONTENT_DESCRIPTION: &str = "AI research result on phantoms - not for clinical use";

/// What the objects are made from.
pub struct ObjectsInput<'a> {
    /// The analysis (heads right then left, model identification, intended use).
    pub analysis: &'a Analysis,
    /// The analysed T2 series.
    pub t2: &'a Volume,
    /// The source of each T2 slice, in the volume's slice order.
    pub sources: &'a [SliceSource],
    /// The heatmap on the T2's grid, when the heads were staged.
    pub heatmap: Option<&'a Volume>,
    /// First Series Number of the new series (SEG, PM, SR, SC take it and the next three).
    pub series_number: i32,
    /// The Secondary Captures, per side: the montage PNG.
    pub montages: Vec<(Side, PathBuf)>,
    /// The SR of the study's previous analysis, which this one's SR replaces.
    pub predecessor: Option<SrRef>,
}

/// An SR written before (for Predecessor Documents).
#[derive(Debug, Clone, PartialEq)]
pub struct SrRef {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
}

impl SrRef {
    /// The SR in `file`, if it is one.
    pub fn read(file: &Path) -> Option<SrRef> {
        let obj = dicom_object::open_file(file).ok()?;
        let text = |t| crate::volume::scan::text(&obj, t);
        let r = SrRef {
            study_uid: text(tags::STUDY_INSTANCE_UID)?,
            series_uid: text(tags::SERIES_INSTANCE_UID)?,
            sop_class_uid: text(tags::SOP_CLASS_UID)?,
            sop_instance_uid: text(tags::SOP_INSTANCE_UID)?,
        };
        (r.sop_class_uid == SR_CLASS).then_some(r)
    }
}

/// Write the objects under `dir` (created); returns the files written, in sending order
/// (SEG, PM, SR, SC).
pub fn write_objects(dir: &Path, input: &ObjectsInput) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    anyhow::ensure!(
        input.sources.len() == input.t2.dims[2] && !input.sources.is_empty(),
        "{} slice sources for {} slices",
        input.sources.len(),
        input.t2.dims[2]
    );
    let study = SourceStudy::read(&input.sources[0].path)
        .with_context(|| format!("cannot read {}", input.sources[0].path.display()))?;
    std::fs::create_dir_all(dir)?;
    let ctx = Builder::new(input, study);
    let mut written = Vec::new();
    let seg = if ctx.found.is_empty() {
        None
    } else {
        let (obj, uid) = ctx.segmentation();
        let series = obj
            .element(tags::SERIES_INSTANCE_UID)?
            .to_str()?
            .to_string();
        written.push(save(dir, "seg.dcm", obj, SEG_CLASS, &uid)?);
        Some((uid, series))
    };
    if let Some(heat) = input.heatmap {
        let (obj, uid) = ctx.parametric_map(heat);
        written.push(save(dir, "pm.dcm", obj, PM_CLASS, &uid)?);
    }
    let (obj, uid) = ctx.report(seg.as_ref().map(|(u, s)| (u.as_str(), s.as_str())));
    written.push(save(dir, "sr.dcm", obj, SR_CLASS, &uid)?);
    for (i, (side, png)) in input.montages.iter().enumerate() {
        let (obj, uid) = ctx
            .secondary_capture(*side, png, i as i32 + 1)
            .with_context(|| format!("cannot read {}", png.display()))?;
        written.push(save(dir, &format!("sc-{side}.dcm"), obj, SC_CLASS, &uid)?);
    }
    Ok(written)
}

fn save(dir: &Path, name: &str, obj: Obj, class: &str, uid: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(EXPLICIT_LE)
            .media_storage_sop_class_uid(class)
            .media_storage_sop_instance_uid(uid)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(format!("ONFH_{}", env!("CARGO_PKG_VERSION"))),
    )?;
    file.write_to_file(&tmp)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// A new UID: 2.25 and a random 122-bit UUID as a decimal.
fn new_uid() -> String {
    let mut v: u128 = rand::random();
    // Version 4, variant 1, as a UUID.
    v = (v & !(0xF << 76)) | (0x4 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!("2.25.{v}")
}

/// A DS value of at most 16 characters.
pub(crate) fn ds(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    for p in (0..=10).rev() {
        let s = format!("{x:.p$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".into() } else { s };
        }
    }
    for p in (0..=8).rev() {
        let s = format!("{x:.p$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    "0".into()
}

fn put(o: &mut Obj, tag: Tag, vr: VR, v: &str) {
    o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn put_multi(o: &mut Obj, tag: Tag, vr: VR, v: &[String]) {
    o.put(DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(v.iter().cloned().collect()),
    ));
}

fn put_us(o: &mut Obj, tag: Tag, v: u16) {
    o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
}

/// A sequence of one item, built by `f`.
fn put_item(o: &mut Obj, tag: Tag, f: impl FnOnce(&mut Obj)) {
    put_seq(o, tag, vec![item(f)]);
}

fn put_seq(o: &mut Obj, tag: Tag, items: Vec<Obj>) {
    o.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn item(f: impl FnOnce(&mut Obj)) -> Obj {
    let mut o = Obj::new_empty();
    f(&mut o);
    o
}

fn code(value: &str, scheme: &str, meaning: &str) -> Obj {
    item(|o| {
        put(o, tags::CODE_VALUE, VR::SH, value);
        put(o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
        put(o, tags::CODE_MEANING, VR::LO, meaning);
    })
}

/// Patient and study attributes of the source, copied into every object.
struct SourceStudy {
    attrs: Vec<(Tag, VR, String)>,
    frame_of_reference_uid: String,
}

impl SourceStudy {
    fn read(path: &Path) -> anyhow::Result<SourceStudy> {
        crate::dicom::spool::walk_file(path, crate::volume::MAX_INFLATED_BYTES)?;
        let mut obj = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)?;
        crate::dicom::unknown_vr::resolve(&mut obj);
        let text = |tag| crate::volume::scan::text(&obj, tag).unwrap_or_default();
        let attrs = [
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::ISSUER_OF_PATIENT_ID, VR::LO),
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::STUDY_DATE, VR::DA),
            (tags::STUDY_TIME, VR::TM),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
            (tags::STUDY_ID, VR::SH),
            (tags::ACCESSION_NUMBER, VR::SH),
            (tags::STUDY_DESCRIPTION, VR::LO),
        ]
        .into_iter()
        .map(|(t, vr)| (t, vr, text(t)))
        // Issuer and description are optional (Type 3): left out when empty.
        .filter(|(t, _, v)| {
            !(v.is_empty() && (*t == tags::ISSUER_OF_PATIENT_ID || *t == tags::STUDY_DESCRIPTION))
        })
        .collect();
        let frame_of_reference_uid = text(tags::FRAME_OF_REFERENCE_UID);
        Ok(SourceStudy {
            attrs,
            frame_of_reference_uid,
        })
    }
}

/// A head found by the detector: its side, finding and sphere.
struct Found<'a> {
    side: Side,
    finding: &'a HeadFinding,
    segment: u16,
    tracking_uid: String,
}

/// Shared state of one call: source, identities, timestamps.
struct Builder<'a> {
    input: &'a ObjectsInput<'a>,
    study: SourceStudy,
    found: Vec<Found<'a>>,
    /// Tracking UID per side for heads not found.
    not_found: Vec<(Side, String)>,
    date: String,
    time: String,
    device_uid: String,
}

fn laterality(side: Side) -> Obj {
    match side {
        Side::Right => code("24028007", "SCT", "Right"),
        Side::Left => code("7771000", "SCT", "Left"),
    }
}

impl<'a> Builder<'a> {
    fn new(input: &'a ObjectsInput<'a>, study: SourceStudy) -> Builder<'a> {
        let found: Vec<Found> = input
            .analysis
            .heads
            .iter()
            .enumerate()
            .map(|(i, h)| Found {
                side: h.side,
                finding: h,
                segment: i as u16 + 1,
                tracking_uid: new_uid(),
            })
            .collect();
        let not_found = Side::BOTH
            .into_iter()
            .filter(|s| !found.iter().any(|f| f.side == *s))
            .map(|s| (s, new_uid()))
            .collect();
        let now = crate::clock::rfc3339(crate::clock::now_ms());
        let date = now[..10].replace('-', "");
        let time = now[11..19].replace(':', "");
        Builder {
            input,
            study,
            found,
            not_found,
            date,
            time,
            // Identifies the model pair: it changes whenever the weights do.
            device_uid: uid_from(&[
                &input.analysis.model.detector_sha256,
                &input.analysis.model.stager_sha256,
            ]),
        }
    }

    fn model(&self) -> &crate::result::ModelInfo {
        &self.input.analysis.model
    }

    /// Attributes every object carries: SOP common, patient, study, series, equipment.
    fn common(&self, class: &str, modality: &str, number: i32, description: &str) -> (Obj, String) {
        let uid = new_uid();
        let mut o = Obj::new_empty();
        put(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
        put(&mut o, tags::SOP_CLASS_UID, VR::UI, class);
        put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &uid);
        put(&mut o, tags::INSTANCE_CREATION_DATE, VR::DA, &self.date);
        put(&mut o, tags::INSTANCE_CREATION_TIME, VR::TM, &self.time);
        for (tag, vr, v) in &self.study.attrs {
            put(&mut o, *tag, *vr, v);
        }
        put(&mut o, tags::MODALITY, VR::CS, modality);
        put(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &new_uid());
        put(
            &mut o,
            tags::SERIES_NUMBER,
            VR::IS,
            &(self.input.series_number + number).to_string(),
        );
        put(&mut o, tags::SERIES_DATE, VR::DA, &self.date);
        put(&mut o, tags::SERIES_TIME, VR::TM, &self.time);
        put(
            &mut o,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            &format!("{} {description}", super::SERIES_PREFIX),
        );
        put(&mut o, tags::INSTANCE_NUMBER, VR::IS, "1");
        put(&mut o, tags::CONTENT_DATE, VR::DA, &self.date);
        put(&mut o, tags::CONTENT_TIME, VR::TM, &self.time);
        put(&mut o, tags::MANUFACTURER, VR::LO, MANUFACTURER);
        put(
            &mut o,
            tags::MANUFACTURER_MODEL_NAME,
            VR::LO,
            &self.model().name,
        );
        put(&mut o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "onfh-edge");
        put_multi(
            &mut o,
            tags::SOFTWARE_VERSIONS,
            VR::LO,
            &[
                format!("onfh-edge {}", env!("CARGO_PKG_VERSION")),
                format!("models {}", self.model().version),
            ],
        );
        put_item(&mut o, tags::CONTRIBUTING_EQUIPMENT_SEQUENCE, |e| {
            put_seq(
                e,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code("Newcode1", "99IHE", "Processing Algorithm")],
            );
            put(e, tags::MANUFACTURER, VR::LO, MANUFACTURER);
            put(e, tags::MANUFACTURER_MODEL_NAME, VR::LO, &self.model().name);
            put(e, tags::SOFTWARE_VERSIONS, VR::LO, &self.model().version);
            put(e, tags::DEVICE_UID, VR::UI, &self.device_uid);
        });
        put_item(&mut o, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, |e| {
            put(e, tags::CODING_SCHEME_DESIGNATOR, VR::SH, SCHEME);
            put(e, tags::CODING_SCHEME_NAME, VR::ST, "onfh-edge local codes");
            put(e, tags::CODING_SCHEME_VERSION, VR::SH, "1");
            put(
                e,
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                MANUFACTURER,
            );
        });
        (o, uid)
    }

    /// Frame of reference, shared geometry and pixel module rows/columns of the T2 grid.
    fn image_geometry(&self, o: &mut Obj) {
        let t2 = self.input.t2;
        let a = t2.affine;
        let norm = |c: usize| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt();
        let (col_step, row_step, slice_step) = (norm(0), norm(1), norm(2));
        let dir = |c: usize, n: f64| (0..3).map(move |r| ds(a[r][c] / n));
        let orientation: Vec<String> = dir(0, col_step).chain(dir(1, row_step)).collect();
        put(
            o,
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &if self.study.frame_of_reference_uid.is_empty() {
                uid_from(&[&t2.series_uid, "frame of reference"])
            } else {
                self.study.frame_of_reference_uid.clone()
            },
        );
        put(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        put_us(o, tags::ROWS, t2.dims[1] as u16);
        put_us(o, tags::COLUMNS, t2.dims[0] as u16);
        put_us(o, tags::SAMPLES_PER_PIXEL, 1);
        put(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put_us(o, tags::PIXEL_REPRESENTATION, 0);
        put(o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put(o, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
        put(o, tags::CONTENT_CREATOR_NAME, VR::PN, "");
        put_item(o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, |g| {
            put_seq(
                g,
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(|p| {
                    put_multi(p, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &orientation)
                })],
            );
            put_seq(
                g,
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(|p| {
                    put_multi(
                        p,
                        tags::PIXEL_SPACING,
                        VR::DS,
                        &[ds(row_step), ds(col_step)],
                    );
                    put(p, tags::SLICE_THICKNESS, VR::DS, &ds(slice_step));
                    put(p, tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(slice_step));
                })],
            );
        });
        // The T2 instances these frames are derived from.
        put_item(o, tags::REFERENCED_SERIES_SEQUENCE, |s| {
            put(s, tags::SERIES_INSTANCE_UID, VR::UI, &t2.series_uid);
            put_seq(
                s,
                tags::REFERENCED_INSTANCE_SEQUENCE,
                self.source_instances()
                    .map(|src| sop_ref(&src.sop_class_uid, &src.sop_instance_uid))
                    .collect(),
            );
        });
    }

    /// Each distinct source instance once, in slice order.
    fn source_instances(&self) -> impl Iterator<Item = &SliceSource> {
        let mut seen = std::collections::HashSet::new();
        self.input
            .sources
            .iter()
            .filter(move |s| seen.insert(s.sop_instance_uid.clone()))
    }

    /// Per-frame groups shared by SEG and PM: position and the source slice.
    fn frame_groups(&self, k: usize, index: &[u32], purpose: Obj, derivation: Obj) -> Obj {
        let src = &self.input.sources[k];
        item(|f| {
            put_item(f, tags::FRAME_CONTENT_SEQUENCE, |c| {
                c.put(DataElement::new(
                    tags::DIMENSION_INDEX_VALUES,
                    VR::UL,
                    PrimitiveValue::U32(index.iter().copied().collect()),
                ));
            });
            put_item(f, tags::PLANE_POSITION_SEQUENCE, |p| {
                put_multi(
                    p,
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &src.position.map(ds),
                )
            });
            put_item(f, tags::DERIVATION_IMAGE_SEQUENCE, |d| {
                let mut s = sop_ref(&src.sop_class_uid, &src.sop_instance_uid);
                if let Some(frame) = src.frame {
                    put(
                        &mut s,
                        tags::REFERENCED_FRAME_NUMBER,
                        VR::IS,
                        &frame.to_string(),
                    );
                }
                put_seq(
                    &mut s,
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![purpose],
                );
                put(&mut s, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
                put_seq(d, tags::SOURCE_IMAGE_SEQUENCE, vec![s]);
                put_seq(d, tags::DERIVATION_CODE_SEQUENCE, vec![derivation]);
            });
        })
    }

    fn dimensions(&self, o: &mut Obj, indices: &[(Tag, Tag, &str)]) {
        let dim_uid = new_uid();
        put_item(o, tags::DIMENSION_ORGANIZATION_SEQUENCE, |d| {
            put(d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid)
        });
        put_seq(
            o,
            tags::DIMENSION_INDEX_SEQUENCE,
            indices
                .iter()
                .map(|(pointer, group, label)| {
                    item(|d| {
                        put(d, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &dim_uid);
                        d.put(DataElement::new(
                            tags::DIMENSION_INDEX_POINTER,
                            VR::AT,
                            PrimitiveValue::Tags([*pointer].into_iter().collect()),
                        ));
                        d.put(DataElement::new(
                            tags::FUNCTIONAL_GROUP_POINTER,
                            VR::AT,
                            PrimitiveValue::Tags([*group].into_iter().collect()),
                        ));
                        put(d, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
                    })
                })
                .collect(),
        );
    }

    fn algorithm(&self) -> Obj {
        item(|a| {
            put_seq(
                a,
                tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                vec![code("123110", "DCM", "Artificial Intelligence")],
            );
            put(a, tags::ALGORITHM_NAME, VR::LO, &self.model().name);
            put(a, tags::ALGORITHM_VERSION, VR::LO, &self.model().version);
            put(a, tags::ALGORITHM_PARAMETERS, VR::LT, &self.weights_text());
        })
    }

    fn weights_text(&self) -> String {
        format!(
            "detector sha256 {}; stager sha256 {}",
            self.model().detector_sha256,
            self.model().stager_sha256
        )
    }

    /// The detected sphere of a head, as (centre, radius) in patient mm.
    fn sphere(f: &HeadFinding) -> ([f64; 3], f64) {
        let [lo, hi] = f.bbox_lps_mm;
        let r = (0..3).map(|i| (hi[i] - lo[i]).abs() / 2.0).sum::<f64>() / 3.0;
        (f.center_lps_mm, r)
    }

    fn segmentation(&self) -> (Obj, String) {
        let t2 = self.input.t2;
        let (mut o, uid) = self.common(SEG_CLASS, "SEG", 1, "femoral heads (SEG)");
        put_multi(
            &mut o,
            tags::IMAGE_TYPE,
            VR::CS,
            &["DERIVED".into(), "PRIMARY".into()],
        );
        self.image_geometry(&mut o);
        put_us(&mut o, tags::BITS_ALLOCATED, 1);
        put_us(&mut o, tags::BITS_STORED, 1);
        put_us(&mut o, tags::HIGH_BIT, 0);
        put(&mut o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
        put(&mut o, tags::CONTENT_LABEL, VR::CS, "ONFH_HEADS");
        put(
            &mut o,
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            CONTENT_DESCRIPTION,
        );
        put(&mut o, tags::SEGMENTS_OVERLAP, VR::CS, "NO");
        put_seq(
            &mut o,
            tags::SEGMENT_SEQUENCE,
            self.found
                .iter()
                .map(|f| {
                    item(|s| {
                        put_us(s, tags::SEGMENT_NUMBER, f.segment);
                        put(
                            s,
                            tags::SEGMENT_LABEL,
                            VR::LO,
                            &format!("{} femoral head", f.side.word()),
                        );
                        put_seq(
                            s,
                            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                            vec![code("91723000", "SCT", "Anatomical Structure")],
                        );
                        let mut ty = code("2812003", "SCT", "Femoral head");
                        put_seq(
                            &mut ty,
                            tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                            vec![laterality(f.side)],
                        );
                        put_seq(s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![ty]);
                        put(s, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
                        put(s, tags::SEGMENT_ALGORITHM_NAME, VR::LO, &self.model().name);
                        put_seq(
                            s,
                            tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                            vec![self.algorithm()],
                        );
                        put(s, tags::TRACKING_ID, VR::UT, &tracking_id(f.side));
                        put(s, tags::TRACKING_UID, VR::UI, &f.tracking_uid);
                    })
                })
                .collect(),
        );
        self.dimensions(
            &mut o,
            &[
                (
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Segment Number",
                ),
                (
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        );
        // One frame per (segment, slice) the sphere touches; bits packed LSB first, frames
        // contiguous.
        let [cols, rows, slices] = t2.dims;
        let mut bits: Vec<bool> = Vec::new();
        let mut frames = Vec::new();
        for f in &self.found {
            let (c, r) = Self::sphere(f.finding);
            for k in 0..slices {
                let mut frame = vec![false; rows * cols];
                let mut any = false;
                for j in 0..rows {
                    for i in 0..cols {
                        let p = t2.voxel_to_patient([i as f64, j as f64, k as f64]);
                        let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                        if d2 <= r * r {
                            frame[j * cols + i] = true;
                            any = true;
                        }
                    }
                }
                if any {
                    bits.extend(frame);
                    let mut g = self.frame_groups(
                        k,
                        &[u32::from(f.segment), k as u32 + 1],
                        code(
                            "121322",
                            "DCM",
                            "Source image for image processing operation",
                        ),
                        code("113076", "DCM", "Segmentation"),
                    );
                    put_item(&mut g, tags::SEGMENT_IDENTIFICATION_SEQUENCE, |s| {
                        put_us(s, tags::REFERENCED_SEGMENT_NUMBER, f.segment)
                    });
                    frames.push(g);
                }
            }
        }
        put(
            &mut o,
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            &frames.len().to_string(),
        );
        put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
        let mut packed = vec![0u8; bits.len().div_ceil(8)];
        for (n, b) in bits.iter().enumerate() {
            if *b {
                packed[n / 8] |= 1 << (n % 8);
            }
        }
        if packed.len() % 2 == 1 {
            packed.push(0);
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(packed.into()),
        ));
        (o, uid)
    }

    fn parametric_map(&self, heat: &Volume) -> (Obj, String) {
        let (mut o, uid) = self.common(PM_CLASS, "OT", 2, "Grad-CAM (Parametric Map)");
        let frame_type: Vec<String> = ["DERIVED", "PRIMARY", "VOLUME", "QUANTITY"]
            .map(String::from)
            .to_vec();
        put_multi(&mut o, tags::IMAGE_TYPE, VR::CS, &frame_type);
        self.image_geometry(&mut o);
        put_us(&mut o, tags::BITS_ALLOCATED, 16);
        put_us(&mut o, tags::BITS_STORED, 16);
        put_us(&mut o, tags::HIGH_BIT, 15);
        put(&mut o, tags::CONTENT_LABEL, VR::CS, "GRADCAM");
        put(
            &mut o,
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            CONTENT_DESCRIPTION,
        );
        put(&mut o, tags::CONTENT_QUALIFICATION, VR::CS, "RESEARCH");
        put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        put(&mut o, tags::RECOGNIZABLE_VISUAL_FEATURES, VR::CS, "NO");
        put(&mut o, tags::PIXEL_PRESENTATION, VR::CS, "MONOCHROME");
        put(&mut o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
        // Type 2 (Acquisition Context module); nothing to say.
        put_seq(&mut o, tags::ACQUISITION_CONTEXT_SEQUENCE, Vec::new());
        // Both hips: Laterality (Type 2C) present and empty.
        put(&mut o, tags::LATERALITY, VR::CS, "");
        self.dimensions(
            &mut o,
            &[(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "Image Position Patient",
            )],
        );
        // Shared groups beyond the geometry: frame type, window, rescale, real-world values.
        o.update_value(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, |v| {
            if let Some(items) = v.items_mut() {
                let g = &mut items[0];
                put_item(g, tags::PARAMETRIC_MAP_FRAME_TYPE_SEQUENCE, |f| {
                    put_multi(f, tags::FRAME_TYPE, VR::CS, &frame_type)
                });
                put_item(g, tags::FRAME_VOILUT_SEQUENCE, |w| {
                    put(w, tags::WINDOW_CENTER, VR::DS, "32767.5");
                    put(w, tags::WINDOW_WIDTH, VR::DS, "65535");
                });
                put_item(g, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, |t| {
                    put(t, tags::RESCALE_INTERCEPT, VR::DS, "0");
                    put(t, tags::RESCALE_SLOPE, VR::DS, "1");
                    put(t, tags::RESCALE_TYPE, VR::LO, "US");
                });
                put_item(g, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE, |m| {
                    put(m, tags::LUT_EXPLANATION, VR::LO, "Grad-CAM saliency 0..1");
                    put(m, tags::LUT_LABEL, VR::SH, "GRADCAM");
                    put_seq(
                        m,
                        tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                        vec![code("1", "UCUM", "no units")],
                    );
                    put_us(m, tags::REAL_WORLD_VALUE_FIRST_VALUE_MAPPED, 0);
                    put_us(m, tags::REAL_WORLD_VALUE_LAST_VALUE_MAPPED, u16::MAX);
                    m.put(DataElement::new(
                        tags::REAL_WORLD_VALUE_INTERCEPT,
                        VR::FD,
                        PrimitiveValue::from(0.0f64),
                    ));
                    m.put(DataElement::new(
                        tags::REAL_WORLD_VALUE_SLOPE,
                        VR::FD,
                        PrimitiveValue::from(1.0 / f64::from(u16::MAX)),
                    ));
                    put_seq(
                        m,
                        tags::QUANTITY_DEFINITION_SEQUENCE,
                        vec![item(|q| {
                            put(q, tags::VALUE_TYPE, VR::CS, "CODE");
                            put_seq(
                                q,
                                tags::CONCEPT_NAME_CODE_SEQUENCE,
                                vec![code("246205007", "SCT", "Quantity")],
                            );
                            put_seq(
                                q,
                                tags::CONCEPT_CODE_SEQUENCE,
                                vec![code("GRADCAM", SCHEME, "Grad-CAM saliency")],
                            );
                        })],
                    );
                });
            }
        });
        let slices = heat.dims[2];
        let frames: Vec<Obj> = (0..slices)
            .map(|k| {
                self.frame_groups(
                    k,
                    &[k as u32 + 1],
                    code(
                        "121322",
                        "DCM",
                        "Source image for image processing operation",
                    ),
                    code("113079", "DCM", "Parametric map derivation"),
                )
            })
            .collect();
        put(&mut o, tags::NUMBER_OF_FRAMES, VR::IS, &slices.to_string());
        put_seq(&mut o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
        let values: Vec<u16> = heat
            .data
            .iter()
            .map(|v| (v.clamp(0.0, 1.0) * f32::from(u16::MAX)).round() as u16)
            .collect();
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(values.into()),
        ));
        (o, uid)
    }

    /// The SR; `seg` is the SEG's (SOP Instance UID, Series Instance UID) when written.
    fn report(&self, seg: Option<(&str, &str)>) -> (Obj, String) {
        let seg_uid = seg.map(|(u, _)| u);
        let (mut o, uid) = self.common(SR_CLASS, "SR", 3, super::SR_DESCRIPTION);
        put(&mut o, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
        put(&mut o, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
        put(&mut o, tags::PRELIMINARY_FLAG, VR::CS, "PRELIMINARY");
        put_seq(
            &mut o,
            tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
            Vec::new(),
        );
        put_seq(&mut o, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
        // A re-analysis replaces the study's previous report.
        if let Some(p) = &self.input.predecessor {
            put_item(&mut o, tags::PREDECESSOR_DOCUMENTS_SEQUENCE, |e| {
                put(e, tags::STUDY_INSTANCE_UID, VR::UI, &p.study_uid);
                put_item(e, tags::REFERENCED_SERIES_SEQUENCE, |r| {
                    put(r, tags::SERIES_INSTANCE_UID, VR::UI, &p.series_uid);
                    put_seq(
                        r,
                        tags::REFERENCED_SOP_SEQUENCE,
                        vec![sop_ref(&p.sop_class_uid, &p.sop_instance_uid)],
                    );
                });
            });
        }
        // Evidence: the T2 instances, and the SEG when there is one.
        let t2 = self.input.t2;
        let study_uid = &self.input.analysis.study_instance_uid;
        let mut series = vec![item(|s| {
            put(s, tags::SERIES_INSTANCE_UID, VR::UI, &t2.series_uid);
            put_seq(
                s,
                tags::REFERENCED_SOP_SEQUENCE,
                self.source_instances()
                    .map(|src| sop_ref(&src.sop_class_uid, &src.sop_instance_uid))
                    .collect(),
            );
        })];
        if let Some((seg, seg_series)) = seg {
            series.push(item(|s| {
                put(s, tags::SERIES_INSTANCE_UID, VR::UI, seg_series);
                put_seq(
                    s,
                    tags::REFERENCED_SOP_SEQUENCE,
                    vec![sop_ref(SEG_CLASS, seg)],
                );
            }));
        }
        put_item(
            &mut o,
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            |e| {
                put(e, tags::STUDY_INSTANCE_UID, VR::UI, study_uid);
                put_seq(e, tags::REFERENCED_SERIES_SEQUENCE, series);
            },
        );
        // The document.
        put(&mut o, tags::VALUE_TYPE, VR::CS, "CONTAINER");
        put_seq(
            &mut o,
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![code("126000", "DCM", "Imaging Measurement Report")],
        );
        put(&mut o, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
        put_seq(
            &mut o,
            tags::CONTENT_TEMPLATE_SEQUENCE,
            vec![template("1500")],
        );
        let mut root = vec![
            content_code(
                "HAS CONCEPT MOD",
                code("121049", "DCM", "Language of Content Item and Descendants"),
                code("en-US", "RFC5646", "English (United States)"),
            ),
            content_code(
                "HAS OBS CONTEXT",
                code("121005", "DCM", "Observer Type"),
                code("121007", "DCM", "Device"),
            ),
            content_uid(
                "HAS OBS CONTEXT",
                code("121012", "DCM", "Device Observer UID"),
                &self.device_uid,
            ),
            content_text(
                "HAS OBS CONTEXT",
                code("121013", "DCM", "Device Observer Name"),
                "onfh-edge",
            ),
            content_text(
                "HAS OBS CONTEXT",
                code("121014", "DCM", "Device Observer Manufacturer"),
                MANUFACTURER,
            ),
            content_text(
                "HAS OBS CONTEXT",
                code("121015", "DCM", "Device Observer Model Name"),
                &self.model().name,
            ),
            content_code(
                "HAS CONCEPT MOD",
                code("121058", "DCM", "Procedure reported"),
                code("25056-3", "LN", "MRI unspecified body region"),
            ),
        ];
        let mut groups: Vec<Obj> = self
            .found
            .iter()
            .map(|f| self.found_group(f, seg_uid))
            .collect();
        groups.extend(
            self.not_found
                .iter()
                .map(|(side, tracking)| self.not_found_group(*side, tracking)),
        );
        // Heads right then left, whichever were found.
        root.push(content_container(
            "CONTAINS",
            code("126010", "DCM", "Imaging Measurements"),
            None,
            groups,
        ));
        root.push(content_container(
            "CONTAINS",
            code("126011", "DCM", "Qualitative Evaluations"),
            None,
            vec![content_text(
                "CONTAINS",
                code("121106", "DCM", "Comment"),
                &self.model().intended_use,
            )],
        ));
        put_seq(&mut o, tags::CONTENT_SEQUENCE, root);
        (o, uid)
    }

    /// The group items every head shares: tracking, finding, site, algorithm.
    fn group_head(&self, side: Side, tracking_uid: &str) -> Vec<Obj> {
        let mut site = content_code(
            "HAS CONCEPT MOD",
            code("363698007", "SCT", "Finding Site"),
            code("2812003", "SCT", "Femoral head"),
        );
        put_seq(
            &mut site,
            tags::CONTENT_SEQUENCE,
            vec![content_code(
                "HAS CONCEPT MOD",
                code("272741003", "SCT", "Laterality"),
                laterality(side),
            )],
        );
        let mut items = vec![
            content_text(
                "HAS OBS CONTEXT",
                code("112039", "DCM", "Tracking Identifier"),
                &tracking_id(side),
            ),
            content_uid(
                "HAS OBS CONTEXT",
                code("112040", "DCM", "Tracking Unique Identifier"),
                tracking_uid,
            ),
            content_code(
                "CONTAINS",
                code("121071", "DCM", "Finding"),
                code("ONFH", SCHEME, "Osteonecrosis of femoral head"),
            ),
            site,
        ];
        items.extend(self.algorithm_items());
        items
    }

    fn algorithm_items(&self) -> Vec<Obj> {
        vec![
            content_text(
                "HAS CONCEPT MOD",
                code("111001", "DCM", "Algorithm Name"),
                &self.model().name,
            ),
            content_text(
                "HAS CONCEPT MOD",
                code("111003", "DCM", "Algorithm Version"),
                &self.model().version,
            ),
            content_text(
                "HAS CONCEPT MOD",
                code("111002", "DCM", "Algorithm Parameters"),
                &self.weights_text(),
            ),
        ]
    }

    fn found_group(&self, f: &Found, seg_uid: Option<&str>) -> Obj {
        let mut items = self.group_head(f.side, &f.tracking_uid);
        let p = &f.finding.probabilities;
        for (value, name, prob) in [
            ("P-FA-0", "Probability of Ficat-Arlet stage 0", p.s0),
            ("P-FA-I", "Probability of Ficat-Arlet stage I", p.s1),
            ("P-FA-II", "Probability of Ficat-Arlet stage II", p.s2),
            (
                "DET-SCORE",
                "Femoral head detection score",
                f.finding.detection_score,
            ),
        ] {
            items.push(content_num(code(value, SCHEME, name), f64::from(prob)));
        }
        items.push(content_code(
            "CONTAINS",
            code("FA-STAGE", SCHEME, "Ficat-Arlet stage"),
            stage_code(f.finding.stage),
        ));
        if let Some(seg) = seg_uid {
            let mut img = content_item(
                "CONTAINS",
                "IMAGE",
                code("121191", "DCM", "Referenced Segment"),
            );
            let mut r = sop_ref(SEG_CLASS, seg);
            put_us(&mut r, tags::REFERENCED_SEGMENT_NUMBER, f.segment);
            put_seq(&mut img, tags::REFERENCED_SOP_SEQUENCE, vec![r]);
            items.push(img);
            items.push(content_uid(
                "CONTAINS",
                code("121232", "DCM", "Source series for segmentation"),
                &self.input.t2.series_uid,
            ));
        }
        content_container(
            "CONTAINS",
            code("125007", "DCM", "Measurement Group"),
            Some("1411"),
            items,
        )
    }

    fn not_found_group(&self, side: Side, tracking: &str) -> Obj {
        let mut items = self.group_head(side, tracking);
        items.push(content_code(
            "CONTAINS",
            code("FA-STAGE", SCHEME, "Ficat-Arlet stage"),
            code("82334004", "SCT", "Indeterminate"),
        ));
        for src in self.source_instances() {
            let mut img = content_item(
                "CONTAINS",
                "IMAGE",
                code("121112", "DCM", "Source of Measurement"),
            );
            put_seq(
                &mut img,
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_ref(&src.sop_class_uid, &src.sop_instance_uid)],
            );
            items.push(img);
        }
        content_container(
            "CONTAINS",
            code("125007", "DCM", "Measurement Group"),
            Some("1501"),
            items,
        )
    }

    fn secondary_capture(&self, side: Side, png: &Path, n: i32) -> anyhow::Result<(Obj, String)> {
        let (rgb, width, height) = read_png_rgb(png)?;
        let (mut o, uid) = self.common(
            SC_CLASS,
            "OT",
            3 + n,
            &format!("heatmap {side} (screenshot)"),
        );
        put_multi(
            &mut o,
            tags::IMAGE_TYPE,
            VR::CS,
            &["DERIVED".into(), "SECONDARY".into(), "OTHER".into()],
        );
        put(&mut o, tags::CONVERSION_TYPE, VR::CS, "WSD");
        put(&mut o, tags::LATERALITY, VR::CS, "");
        put(&mut o, tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &self.date);
        put(&mut o, tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &self.time);
        put_multi(&mut o, tags::PATIENT_ORIENTATION, VR::CS, &[]);
        put_us(&mut o, tags::SAMPLES_PER_PIXEL, 3);
        put(&mut o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB");
        put_us(&mut o, tags::PLANAR_CONFIGURATION, 0);
        put_us(&mut o, tags::ROWS, height);
        put_us(&mut o, tags::COLUMNS, width);
        put_us(&mut o, tags::BITS_ALLOCATED, 8);
        put_us(&mut o, tags::BITS_STORED, 8);
        put_us(&mut o, tags::HIGH_BIT, 7);
        put_us(&mut o, tags::PIXEL_REPRESENTATION, 0);
        put(&mut o, tags::BURNED_IN_ANNOTATION, VR::CS, "YES");
        put(&mut o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        let mut bytes = rgb;
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        o.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(bytes.into()),
        ));
        Ok((o, uid))
    }
}

fn tracking_id(side: Side) -> String {
    format!("ONFH {} femoral head", side.word())
}

fn stage_code(stage: StageCall) -> Obj {
    match stage {
        StageCall::Stage0 => code("FA-0", SCHEME, "Ficat-Arlet stage 0"),
        StageCall::StageI => code("FA-I", SCHEME, "Ficat-Arlet stage I"),
        StageCall::StageII => code("FA-II", SCHEME, "Ficat-Arlet stage II"),
        StageCall::Indeterminate => code("82334004", "SCT", "Indeterminate"),
    }
}

fn sop_ref(class: &str, uid: &str) -> Obj {
    item(|r| {
        put(r, tags::REFERENCED_SOP_CLASS_UID, VR::UI, class);
        put(r, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid);
    })
}

fn template(id: &str) -> Obj {
    item(|t| {
        put(t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
        put(t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
    })
}

fn content_item(relationship: &str, value_type: &str, name: Obj) -> Obj {
    item(|c| {
        put(c, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
        put(c, tags::VALUE_TYPE, VR::CS, value_type);
        put_seq(c, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![name]);
    })
}

fn content_code(relationship: &str, name: Obj, value: Obj) -> Obj {
    let mut c = content_item(relationship, "CODE", name);
    put_seq(&mut c, tags::CONCEPT_CODE_SEQUENCE, vec![value]);
    c
}

fn content_text(relationship: &str, name: Obj, text: &str) -> Obj {
    let mut c = content_item(relationship, "TEXT", name);
    put(&mut c, tags::TEXT_VALUE, VR::UT, text);
    c
}

fn content_uid(relationship: &str, name: Obj, uid: &str) -> Obj {
    let mut c = content_item(relationship, "UIDREF", name);
    put(&mut c, tags::UID, VR::UI, uid);
    c
}

fn content_num(name: Obj, value: f64) -> Obj {
    let mut c = content_item("CONTAINS", "NUM", name);
    put_item(&mut c, tags::MEASURED_VALUE_SEQUENCE, |m| {
        put(m, tags::NUMERIC_VALUE, VR::DS, &ds(value));
        m.put(DataElement::new(
            tags::FLOATING_POINT_VALUE,
            VR::FD,
            PrimitiveValue::from(value),
        ));
        put_seq(
            m,
            tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
            vec![code("1", "UCUM", "no units")],
        );
    });
    c
}

fn content_container(
    relationship: &str,
    name: Obj,
    template_id: Option<&str>,
    children: Vec<Obj>,
) -> Obj {
    let mut c = content_item(relationship, "CONTAINER", name);
    put(&mut c, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if let Some(t) = template_id {
        put_seq(&mut c, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template(t)]);
    }
    put_seq(&mut c, tags::CONTENT_SEQUENCE, children);
    c
}

/// A UID derived from text (2.25 and the first 122 bits of its SHA-256).
fn uid_from(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut v = u128::from_be_bytes(d[..16].try_into().expect("16 bytes"));
    v = (v & !(0xF << 76)) | (0x8 << 76);
    v = (v & !(0x3 << 62)) | (0x2 << 62);
    format!("2.25.{v}")
}

fn read_png_rgb(path: &Path) -> anyhow::Result<(Vec<u8>, u16, u16)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    anyhow::ensure!(info.bit_depth == png::BitDepth::Eight, "not an 8-bit PNG");
    let px = &buf[..info.buffer_size()];
    let rgb: Vec<u8> = match info.color_type {
        png::ColorType::Rgb => px.to_vec(),
        png::ColorType::Rgba => px
            .chunks_exact(4)
            .flat_map(|c| [c[0], c[1], c[2]])
            .collect(),
        png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
        other => anyhow::bail!("unsupported PNG colour type {other:?}"),
    };
    Ok((rgb, info.width as u16, info.height as u16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_values_fit_sixteen_characters() {
        for x in [
            0.0,
            1.0,
            -0.5,
            1.0 / 65535.0,
            123456.789012345,
            -1e-20,
            3.0e30,
            0.1 + 0.2,
        ] {
            let s = ds(x);
            assert!(s.len() <= 16, "{x} -> {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - x).abs() <= 1e-9 * x.abs().max(1.0), "{x} -> {s}");
        }
        assert_eq!(ds(0.25), "0.25");
        assert_eq!(ds(-0.0), "0");
    }

    #[test]
    fn uids_are_valid_and_distinct() {
        let (a, b) = (new_uid(), new_uid());
        assert_ne!(a, b);
        for u in [a, b, uid_from(&["x"])] {
            assert!(crate::dicom::spool::is_valid_uid(&u), "{u}");
        }
        assert_eq!(uid_from(&["a", "b"]), uid_from(&["a", "b"]));
        assert_ne!(uid_from(&["ab"]), uid_from(&["a", "b"]));
    }
}
