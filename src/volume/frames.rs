//! Per-frame geometry of multi-frame (Enhanced MR) objects: an attribute of frame `f` is
//! looked up in that frame's Per-frame Functional Groups item first, then in the Shared
//! Functional Groups item (PS3.3 C.7.6.16).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

fn first_item(obj: &InMemDicomObject, seq: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(seq).ok().flatten()?.items()?.first()
}

/// The functional group macro `seq` that applies to `frame`.
pub(crate) fn group(obj: &InMemDicomObject, frame: usize, seq: Tag) -> Option<&InMemDicomObject> {
    let per_frame = obj
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .and_then(|items| items.get(frame));
    if let Some(item) = per_frame.and_then(|f| first_item(f, seq)) {
        return Some(item);
    }
    first_item(
        first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)?,
        seq,
    )
}

/// A numeric attribute of `frame` found in functional group `seq`.
pub(crate) fn floats(
    obj: &InMemDicomObject,
    frame: usize,
    seq: Tag,
    attr: Tag,
) -> Option<Vec<f64>> {
    group(obj, frame, seq)?
        .element_opt(attr)
        .ok()
        .flatten()?
        .to_multi_finite_float64()
        .ok()
}

/// Number of Per-frame Functional Groups items.
pub(crate) fn per_frame_items(obj: &InMemDicomObject) -> usize {
    obj.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .map(|i| i.len())
        .unwrap_or(0)
}
