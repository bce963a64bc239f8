//! Generated MR instances for tests and benchmarks (the library's synthetic objects).
#![allow(dead_code, unused_imports)]

use std::path::Path;

pub use onfh_edge::synth::{Instance, SeriesSpec, new_uid};

/// Write a series; panics on I/O errors (test helper).
pub fn write_series(dir: &Path, spec: &SeriesSpec) -> Vec<Instance> {
    onfh_edge::synth::write_series(dir, spec).expect("write synthetic series")
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
            sop_class_uid: dicom_dictionary_std::uids::MR_IMAGE_STORAGE,
        },
    )
}
