//! Elements written with VR UN that the standard dictionary knows: read them as their
//! dictionary VR.
//!
//! Some converters and routers (`gdcmconv`, anonymisers, older archives) write every
//! attribute, or every attribute they did not recognise at the time, as explicit VR UN.
//! The value bytes are then the attribute's little-endian encoding, so a UI, CS or IS is
//! still its text and a US still two bytes. [`resolve`] replaces each such element, at any
//! depth of the data set, by the same value under the dictionary VR, so that identification
//! (Study/Series/SOP Instance UID), selection (descriptions, timing) and assembly (geometry,
//! Rows/Columns, rescale) read it as they read any other file. The file itself is kept as
//! received.
//!
//! What it does not resolve: a UN whose dictionary VR is a sequence but which has a defined
//! length (its items would have to be parsed from the bytes; such an element stays UN and is
//! ignored), bulk binary VRs (OB, OW, OF, OD, OL, OV stay UN), private and unknown tags,
//! and a value whose length does not fit its VR (left as is). Text is read as UTF-8, which
//! covers the ASCII of every identifying attribute; other text is read lossily.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::value::{C, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;

/// Resolve every VR UN element of `obj` that the dictionary knows (see the module
/// documentation). Returns how many were resolved.
pub fn resolve(obj: &mut InMemDicomObject) -> usize {
    let mut n = 0;
    let tags: Vec<Tag> = obj.tags().collect();
    for tag in tags {
        let Ok(elt) = obj.element(tag) else {
            continue;
        };
        // Items first, whatever the element's VR (a UN of undefined length is a sequence).
        if elt.items().is_some() {
            obj.update_value(tag, |v| {
                if let Some(items) = v.items_mut() {
                    for item in items.iter_mut() {
                        n += resolve(item);
                    }
                }
            });
            continue;
        }
        if elt.vr() != VR::UN {
            continue;
        }
        let Some(vr) = dictionary_vr(tag) else {
            continue;
        };
        let Value::Primitive(p) = elt.value() else {
            continue;
        };
        let bytes = p.to_bytes().into_owned();
        if let Some(value) = reinterpret(vr, &bytes) {
            obj.put(DataElement::new(tag, vr, value));
            n += 1;
        }
    }
    n
}

/// The single VR the standard dictionary gives `tag`, if any (not for sequences, bulk
/// data or tags whose VR depends on context).
fn dictionary_vr(tag: Tag) -> Option<VR> {
    let entry = StandardDataDictionary.by_tag(tag)?;
    match entry.vr() {
        VirtualVr::Exact(vr) if !matches!(vr, VR::SQ | VR::UN) => Some(vr),
        _ => None,
    }
}

/// The value of `bytes` under `vr`, or None when they do not fit it.
fn reinterpret(vr: VR, bytes: &[u8]) -> Option<PrimitiveValue> {
    fn numbers<T, const N: usize>(bytes: &[u8], from: fn([u8; N]) -> T) -> Option<C<T>> {
        if bytes.len() % N != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(N)
                .map(|c| from(c.try_into().expect("chunk of N bytes")))
                .collect(),
        )
    }
    Some(match vr {
        VR::AE
        | VR::AS
        | VR::CS
        | VR::DA
        | VR::DS
        | VR::DT
        | VR::IS
        | VR::LO
        | VR::PN
        | VR::SH
        | VR::TM
        | VR::UC
        | VR::UI => {
            let text = String::from_utf8_lossy(bytes);
            PrimitiveValue::Strs(
                text.split('\\')
                    .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
                    .collect(),
            )
        }
        VR::LT | VR::ST | VR::UT | VR::UR => PrimitiveValue::Str(
            String::from_utf8_lossy(bytes)
                .trim_end_matches(['\0', ' '])
                .to_string(),
        ),
        VR::US => PrimitiveValue::U16(numbers(bytes, u16::from_le_bytes)?),
        VR::SS => PrimitiveValue::I16(numbers(bytes, i16::from_le_bytes)?),
        VR::UL => PrimitiveValue::U32(numbers(bytes, u32::from_le_bytes)?),
        VR::SL => PrimitiveValue::I32(numbers(bytes, i32::from_le_bytes)?),
        VR::UV => PrimitiveValue::U64(numbers(bytes, u64::from_le_bytes)?),
        VR::SV => PrimitiveValue::I64(numbers(bytes, i64::from_le_bytes)?),
        VR::FL => PrimitiveValue::F32(numbers(bytes, f32::from_le_bytes)?),
        VR::FD => PrimitiveValue::F64(numbers(bytes, f64::from_le_bytes)?),
        VR::AT => PrimitiveValue::Tags(numbers(bytes, |b: [u8; 4]| {
            Tag(
                u16::from_le_bytes([b[0], b[1]]),
                u16::from_le_bytes([b[2], b[3]]),
            )
        })?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    fn un(tag: Tag, bytes: &[u8]) -> DataElement<InMemDicomObject> {
        DataElement::new(
            tag,
            VR::UN,
            PrimitiveValue::U8(bytes.iter().copied().collect()),
        )
    }

    #[test]
    fn known_attributes_read_as_their_dictionary_vr() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(un(tags::STUDY_INSTANCE_UID, b"1.2.840.99.1\0"));
        obj.put(un(tags::IMAGE_ORIENTATION_PATIENT, b"1\\0\\0\\0\\0\\-1 "));
        obj.put(un(tags::ROWS, &256u16.to_le_bytes()));
        obj.put(un(tags::SERIES_DESCRIPTION, b"T2 COR"));
        // Private: stays UN. Wrong size for US: stays UN.
        obj.put(un(Tag(0x0029, 0x1010), b"abcd"));
        obj.put(un(tags::COLUMNS, &[1, 2, 3]));
        let item = {
            let mut i = InMemDicomObject::new_empty();
            i.put(un(tags::SLICE_THICKNESS, b"3.0 "));
            i
        };
        obj.put(DataElement::new(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![item]),
        ));

        assert_eq!(resolve(&mut obj), 5);
        let uid = obj.element(tags::STUDY_INSTANCE_UID).unwrap();
        assert_eq!(uid.vr(), VR::UI);
        assert_eq!(uid.to_str().unwrap(), "1.2.840.99.1");
        assert_eq!(
            obj.element(tags::IMAGE_ORIENTATION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap(),
            vec![1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
        );
        assert_eq!(
            obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(),
            256
        );
        assert_eq!(obj.element(Tag(0x0029, 0x1010)).unwrap().vr(), VR::UN);
        assert_eq!(obj.element(tags::COLUMNS).unwrap().vr(), VR::UN);
        let seq = obj
            .element(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap();
        let thick = seq.items().unwrap()[0]
            .element(tags::SLICE_THICKNESS)
            .unwrap()
            .to_float64()
            .unwrap();
        assert_eq!(thick, 3.0);
        // Nothing left to resolve.
        assert_eq!(resolve(&mut obj), 0);
    }
}
