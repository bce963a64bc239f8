//! Results back to PACS: the DICOM objects an analysis returns into its source study.
//!
//! [`write_objects`] turns one analysis (its heads, the analysed T2 with the source of each
//! slice, and the Grad-CAM heatmap on the T2's grid) into new series of the source study:
//! - `seg.dcm`, a binary DICOM Segmentation of both femoral heads (the detected spheres)
//!   on the T2's frames, with per-frame source references;
//! - `pm.dcm`, a Parametric Map of the heatmap (uint16, Real World Value Mapping to 0..1);
//! - `sr.dcm`, a Comprehensive 3D SR (TID 1500): one measurement group per head (stage,
//!   the three class probabilities, detection score, tracking identifier and UID shared
//!   with its SEG segment), a group for a head not found, the algorithm and the device
//!   observer, and the intended use;
//! - `sc-R.dcm`, `sc-L.dcm`, the heatmap montages as Secondary Capture with the intended
//!   use burned in.
//!
//! Codes and attribute choices follow `docs/dicom-conformance.md` (section "Result
//! objects"). Patient and study attributes are copied from the analysed series, so the
//! objects file into the same study; that is the only place outside the spool that holds
//! patient identity. Every UID is new per call: a re-send of the written files is a
//! duplicate at the PACS, a new analysis makes new objects.
//!
//! `export` holds `[export]` (destinations, which objects each receives, retries) and the
//! [`Exporter`], which works off the outbox the worker fills in the analysis' transaction
//! (`store::exports`); `send` is the C-STORE SCU, one association per study and
//! destination, proposing exactly the classes it sends. This module never touches the
//! receiver's spool and holds no state of its own beyond the database rows.

mod export;
mod objects;
mod send;

pub use export::{Destination, ExportPass, ExportSettings, Exporter, OBJECT_KINDS, exports_for};
pub use objects::{ObjectsInput, SrRef, write_objects};

/// Series Number of the first result series (SEG); PM, SR and the Secondary Captures take
/// the next ones. High, to sort after the scanner's own series.
pub const DEFAULT_SERIES_NUMBER: i32 = 9900;

/// How every result series' description begins.
pub const SERIES_PREFIX: &str = "AI research: onfh-edge";
/// The SR's series description, after the prefix.
pub const SR_DESCRIPTION: &str = "ONFH staging (SR)";

/// Where an alert tells the team to look, when result objects go to PACS: the SR series,
/// or the screenshots for destinations that take only those. None without destinations.
pub fn alert_location(settings: &ExportSettings) -> Option<String> {
    let names: Vec<&str> = settings
        .destination
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    let takes = |k: &str| {
        settings
            .destination
            .iter()
            .any(|d| d.objects.iter().any(|o| o == k))
    };
    let what = if takes("sr") {
        format!(
            "series {} «{SERIES_PREFIX} {SR_DESCRIPTION}»",
            DEFAULT_SERIES_NUMBER + 3
        )
    } else if takes("sc") {
        format!(
            "series {} and {} (heatmap screenshots)",
            DEFAULT_SERIES_NUMBER + 4,
            DEFAULT_SERIES_NUMBER + 5
        )
    } else {
        format!("series {} (segmentation)", DEFAULT_SERIES_NUMBER + 1)
    };
    Some(format!("{what} of the study, sent to {}", names.join(", ")))
}
