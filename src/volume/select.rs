//! Choosing the T2-weighted series to analyse, with a reason for every other series.
//!
//! A series is usable when it is an MR image, not a localizer or derived image, not named
//! as something else (exclude words, in the Series Description), not of a ruled-out
//! Scanning Sequence (echo planar), identified as T2-weighted (by description or protocol
//! words, or by timing), has timing inside the T2 ranges when timing is present, has not
//! been through lossy compression (unless allowed), holds one orientation, and has enough
//! slices. Among
//! usable series a sagittal one (it covers one hip) comes last; then a fat-suppressed one
//! (fat saturation, SPAIR, STIR: stage I is marrow oedema, which a plain T2 can hide)
//! wins; then the preferred orientation (coronal first, as the paper), then the one with
//! more slices, then the lower series number. Rules are data (`Rules`), with defaults that
//! fit common vendor naming.
//!
//! `select_t1` then finds the chosen T2's T1-weighted companion (`T1Rules`), which a stager
//! with a T1 channel reads beside it: on T1, marrow oedema is dark inside bright fatty
//! marrow, where a T2 without fat suppression can hide it.

use serde::{Deserialize, Serialize};

use super::{Plane, Series};
use crate::result::{SeriesVerdict, Verdict};

/// Selection rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Case-insensitive words in description or protocol that mark a T2-weighted series.
    pub include: Vec<String>,
    /// Case-insensitive words that mark a series as something else (checked first).
    pub exclude: Vec<String>,
    /// Repetition time range for T2 weighting (ms).
    pub repetition_time_ms: [f64; 2],
    /// Echo time range for T2 weighting (ms).
    pub echo_time_ms: [f64; 2],
    /// Fewest slices for a usable volume.
    pub min_slices: usize,
    /// Orientations in order of preference; one not listed is not usable.
    pub orientations: Vec<Plane>,
    /// Scanning Sequence values that rule a series out (echo planar: diffusion, perfusion).
    pub reject_scanning_sequences: Vec<String>,
    /// Whether a series whose pixel data went through lossy compression may be analysed.
    /// The networks were trained and measured on uncompressed images; compression
    /// artefacts can hide or mimic the faint marrow signal an early stage rests on.
    pub allow_lossy: bool,
    /// Whether a fat-suppressed series (fat saturation, SPAIR/SPIR, STIR) is preferred to
    /// one without, before orientation: stage I is marrow oedema, which fat suppression
    /// shows and a plain T2, where fatty marrow is as bright, can hide.
    pub prefer_fat_suppressed: bool,
    /// Case-insensitive whole words in description or protocol that mark fat suppression
    /// (a Scan Options (0018,0022) value `FS` marks it too).
    pub fat_suppressed_words: Vec<String>,
    /// The T1-weighted companion series (`[selection.t1]`), read beside the T2 by a stager
    /// that takes a T1 channel.
    pub t1: T1Rules,
}

/// How the T1-weighted companion of the chosen T2 is found. It must be in the T2's study
/// and Frame of Reference, not fat-suppressed (the stager reads marrow fat on it) and not
/// post-contrast; among several, a coronal one, then one in the T2's plane, then more
/// slices, then the lower series number. Localizers, derived images, lossy images (unless
/// allowed), ruled-out Scanning Sequences and orientations are refused as for the T2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct T1Rules {
    /// Case-insensitive words in description or protocol that mark a T1-weighted series.
    pub include: Vec<String>,
    /// Case-insensitive words that mark a series as something else (checked first, on the
    /// Series Description, as for the T2).
    pub exclude: Vec<String>,
    /// Repetition time range for T1 weighting (ms).
    pub repetition_time_ms: [f64; 2],
    /// Echo time range for T1 weighting (ms).
    pub echo_time_ms: [f64; 2],
    /// Fewest slices.
    pub min_slices: usize,
}

impl Default for T1Rules {
    fn default() -> Self {
        T1Rules {
            include: vec!["t1".into()],
            exclude: [
                "loc", "survey", "scout", "3-pl", "t2", "pd", "stir", "tirm", "dwi", "adc",
                "flair", "dixon", "post", "gd", "gad",
            ]
            .map(String::from)
            .to_vec(),
            repetition_time_ms: [250.0, 1000.0],
            echo_time_ms: [4.0, 30.0],
            min_slices: 12,
        }
    }
}

impl Rules {
    /// Check `[selection]`; the error names its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, [lo, hi]) in [
            ("selection.repetition_time_ms", self.repetition_time_ms),
            ("selection.echo_time_ms", self.echo_time_ms),
        ] {
            if !(lo >= 0.0 && lo < hi) {
                return Err((key, "must be [low, high] with 0 <= low < high".into()));
            }
        }
        for (key, words) in [
            ("selection.include", &self.include),
            ("selection.exclude", &self.exclude),
            ("selection.fat_suppressed_words", &self.fat_suppressed_words),
        ] {
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err((
                    key,
                    "words must not be empty (an empty word matches every name)".into(),
                ));
            }
        }
        for (key, [lo, hi]) in [
            (
                "selection.t1.repetition_time_ms",
                self.t1.repetition_time_ms,
            ),
            ("selection.t1.echo_time_ms", self.t1.echo_time_ms),
        ] {
            if !(lo >= 0.0 && lo < hi) {
                return Err((key, "must be [low, high] with 0 <= low < high".into()));
            }
        }
        for (key, words) in [
            ("selection.t1.include", &self.t1.include),
            ("selection.t1.exclude", &self.t1.exclude),
        ] {
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err((
                    key,
                    "words must not be empty (an empty word matches every name)".into(),
                ));
            }
        }
        if self.min_slices == 0 {
            return Err(("selection.min_slices", "must be at least 1".into()));
        }
        if self.t1.min_slices == 0 {
            return Err(("selection.t1.min_slices", "must be at least 1".into()));
        }
        if self.orientations.is_empty() {
            return Err(("selection.orientations", "must list at least one".into()));
        }
        Ok(())
    }
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            include: vec!["t2".into()],
            exclude: vec![
                "loc".into(),
                "survey".into(),
                "scout".into(),
                "3-pl".into(),
                "t1".into(),
                "pd".into(),
                "dwi".into(),
                "adc".into(),
            ],
            repetition_time_ms: [1500.0, 12000.0],
            echo_time_ms: [50.0, 200.0],
            min_slices: 12,
            orientations: vec![Plane::Coronal, Plane::Axial, Plane::Sagittal],
            reject_scanning_sequences: vec!["EP".into()],
            allow_lossy: false,
            prefer_fat_suppressed: true,
            fat_suppressed_words: [
                "fs", "fatsat", "fat sat", "fat-sat", "fat_sat", "fsat", "spair", "spir", "stir",
                "tirm", "t2fs",
            ]
            .map(String::from)
            .to_vec(),
            t1: T1Rules::default(),
        }
    }
}

/// The outcome of selection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Selection {
    /// Index (into the scanned series) of the chosen one, if any.
    pub chosen: Option<usize>,
    /// A verdict per scanned series, in scan order.
    pub verdicts: Vec<SeriesVerdict>,
}

fn words_match(text: &str, words: &[String]) -> Option<String> {
    let t = text.to_lowercase();
    words
        .iter()
        .find(|w| {
            let w = w.to_lowercase();
            // A word matches where a word starts, so "loc" does not match "block", while
            // "t2" still matches "T2W_TSE" and "loc" matches "localizer".
            t.match_indices(&w).any(|(i, _)| {
                !t[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
            })
        })
        .cloned()
}

/// The first of `words` found as a whole word (not part of a longer one: "fs" matches
/// "t2_tse_fs_cor" but not "FSE"), case-insensitively.
fn whole_word_match(text: &str, words: &[String]) -> Option<String> {
    let t = text.to_lowercase();
    let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric());
    words
        .iter()
        .find(|w| {
            let w = w.to_lowercase();
            t.match_indices(&w).any(|(i, m)| {
                boundary(t[..i].chars().next_back()) && boundary(t[i + m.len()..].chars().next())
            })
        })
        .cloned()
}

/// Whether `s` is fat-suppressed: Scan Options `FS`, or a fat-suppression word in its
/// description or protocol name.
pub fn fat_suppressed(s: &Series, rules: &Rules) -> bool {
    s.scan_options.iter().any(|o| o.eq_ignore_ascii_case("FS"))
        || whole_word_match(&s.description, &rules.fat_suppressed_words).is_some()
        || whole_word_match(&s.protocol, &rules.fat_suppressed_words).is_some()
}

/// Why a series is not an original MR image, or None when it is.
fn not_an_mr_image(s: &Series) -> Option<String> {
    if s.modality != "MR" {
        return Some(format!("modality {:?} is not MR", s.modality));
    }
    const IMAGE_CLASSES: [&str; 3] = [
        "1.2.840.10008.5.1.4.1.1.4",   // MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.1", // Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4", // Legacy Converted Enhanced MR Image Storage
    ];
    if !IMAGE_CLASSES.contains(&s.sop_class_uid.as_str()) {
        return Some(format!("SOP class {} is not an MR image", s.sop_class_uid));
    }
    if s.image_type.iter().any(|v| v == "LOCALIZER") {
        return Some("localizer (Image Type)".into());
    }
    if s.image_type.first().is_some_and(|v| v == "DERIVED")
        || s.image_type.get(1).is_some_and(|v| v == "SECONDARY")
    {
        return Some("derived or secondary image (Image Type)".into());
    }
    None
}

/// The Series Description, or the Protocol Name where there is no description.
///
/// Exclusions read the Series Description: a Protocol Name is often the whole exam's
/// ("HIP T1 T2") and would exclude every series. It stands in only when there is no
/// description. Inclusion may come from either.
fn own_name(s: &Series) -> &str {
    if s.description.trim().is_empty() {
        &s.protocol
    } else {
        &s.description
    }
}

/// Why a series' acquisition rules it out whatever its weighting (Scanning Sequence,
/// lossy compression), or None.
fn ruled_out_acquisition(s: &Series, rules: &Rules) -> Option<String> {
    if let Some(v) = s.scanning_sequence.iter().find(|v| {
        rules
            .reject_scanning_sequences
            .iter()
            .any(|r| r.eq_ignore_ascii_case(v))
    }) {
        return Some(format!("Scanning Sequence {v} is ruled out"));
    }
    if let (Some(why), false) = (&s.lossy, rules.allow_lossy) {
        return Some(format!(
            "lossy-compressed images ({why}); selection.allow_lossy is off"
        ));
    }
    None
}

/// Why a series does not hold one allowed orientation with enough slices, or None.
fn unusable_geometry(s: &Series, orientations: &[Plane], min_slices: usize) -> Option<String> {
    let planes = s.planes();
    match planes.as_slice() {
        [] => return Some("no Image Orientation (Patient)".into()),
        [p] if !orientations.contains(p) => {
            return Some(format!("{p:?} orientation is not allowed"));
        }
        [_] => {}
        _ => return Some("mixed orientations".into()),
    }
    if s.slices() < min_slices {
        return Some(format!(
            "only {} slices (at least {min_slices})",
            s.slices()
        ));
    }
    None
}

/// Why a series is not usable, or None when it is.
fn unusable(s: &Series, rules: &Rules) -> Option<String> {
    if let Some(why) = not_an_mr_image(s) {
        return Some(why);
    }
    // Exclusions read the Series Description: a Protocol Name is often the whole exam's
    // ("HIP T1 T2") and would exclude every series. It stands in only when there is no
    // description. Inclusion may come from either.
    let own_name = own_name(s);
    if let Some(w) = words_match(own_name, &rules.exclude) {
        return Some(format!("description {own_name:?} says {w:?}"));
    }
    if let Some(why) = ruled_out_acquisition(s, rules) {
        return Some(why);
    }
    let name = format!("{} {}", s.description, s.protocol);
    let timing = match (s.repetition_time, s.echo_time) {
        (Some(tr), Some(te)) => Some((tr, te)),
        _ => None,
    };
    if let Some((tr, te)) = timing {
        let [tr0, tr1] = rules.repetition_time_ms;
        let [te0, te1] = rules.echo_time_ms;
        if !(tr0..=tr1).contains(&tr) || !(te0..=te1).contains(&te) {
            return Some(format!(
                "TR {tr} ms / TE {te} ms is not T2 weighting (TR {tr0}-{tr1}, TE {te0}-{te1})"
            ));
        }
    }
    if words_match(&name, &rules.include).is_none() && timing.is_none() {
        return Some("not identified as T2-weighted (no matching name, no timing)".into());
    }
    unusable_geometry(s, &rules.orientations, rules.min_slices)
}

/// Choose the series to analyse.
pub fn select(series: &[Series], rules: &Rules) -> Selection {
    let verdicts_raw: Vec<Option<String>> = series.iter().map(|s| unusable(s, rules)).collect();
    // A sagittal series covers one hip: it comes last whatever its contrast. Otherwise
    // fat suppression (when preferred), then orientation, slices and series number.
    let rank = |s: &Series| {
        let plane = s.planes()[0];
        let pref = rules
            .orientations
            .iter()
            .position(|p| *p == plane)
            .unwrap_or(usize::MAX);
        (
            plane == Plane::Sagittal,
            rules.prefer_fat_suppressed && !fat_suppressed(s, rules),
            pref,
            std::cmp::Reverse(s.slices()),
            s.number.unwrap_or(i64::MAX),
        )
    };
    let chosen = series
        .iter()
        .enumerate()
        .filter(|(i, _)| verdicts_raw[*i].is_none())
        .min_by_key(|(_, s)| rank(s))
        .map(|(i, _)| i);
    let verdicts = series
        .iter()
        .enumerate()
        .map(|(i, s)| SeriesVerdict {
            series_uid: s.series_uid.clone(),
            number: s.number,
            description: s.description.clone(),
            verdict: match (&verdicts_raw[i], chosen) {
                (Some(why), _) => Verdict::Rejected(why.clone()),
                (None, Some(c)) if c == i => Verdict::Chosen,
                (None, Some(c)) => Verdict::Passed(format!(
                    "usable, but series {} ({}{}) is preferred",
                    series[c].number.map(|n| n.to_string()).unwrap_or_default(),
                    series[c].description,
                    if rules.prefer_fat_suppressed
                        && fat_suppressed(&series[c], rules)
                        && !fat_suppressed(s, rules)
                    {
                        ", fat-suppressed"
                    } else {
                        ""
                    }
                )),
                (None, None) => unreachable!("a usable series means something was chosen"),
            },
            t1: None,
        })
        .collect();
    Selection { chosen, verdicts }
}

/// The T1-weighted companion of a chosen T2.
#[derive(Debug, Clone, PartialEq)]
pub struct T1Selection {
    /// Index (into the scanned series) of the chosen T1, if any.
    pub chosen: Option<usize>,
    /// Per scanned series, a verdict for those that look like a T1 (named T1, or T1
    /// timing); None for the others and for the T2 itself.
    pub verdicts: Vec<Option<Verdict>>,
    /// The usable T1 series, best first (the chosen one first).
    pub ranked: Vec<usize>,
}

impl T1Selection {
    /// The chosen T1 `failed` could not be read (`why`): reject it and fall back to the
    /// next usable one, if any, rewriting the verdicts so that the others name the one now
    /// chosen. Returns it.
    pub fn fall_back(&mut self, failed: usize, why: String, series: &[Series]) -> Option<usize> {
        self.ranked.retain(|i| *i != failed);
        self.verdicts[failed] = Some(Verdict::Rejected(why));
        self.chosen = self.ranked.first().copied();
        if let Some(c) = self.chosen {
            for &i in &self.ranked {
                self.verdicts[i] = Some(if i == c {
                    Verdict::Chosen
                } else {
                    t1_passed_for(&series[c])
                });
            }
        }
        self.chosen
    }

    /// Record the T1 verdicts beside the T2 ones (the same series, in the same order).
    pub fn attach(&self, verdicts: &mut [SeriesVerdict]) {
        for (v, t1) in verdicts.iter_mut().zip(&self.verdicts) {
            v.t1 = t1.clone();
        }
    }
}

/// Whether `s` looks like a T1-weighted series: a T1 word in its names, or T1 timing.
fn looks_t1(s: &Series, rules: &T1Rules) -> bool {
    let name = format!("{} {}", s.description, s.protocol);
    let timing = match (s.repetition_time, s.echo_time) {
        (Some(tr), Some(te)) => {
            rules.repetition_time_ms[0] <= tr
                && tr <= rules.repetition_time_ms[1]
                && rules.echo_time_ms[0] <= te
                && te <= rules.echo_time_ms[1]
        }
        _ => false,
    };
    timing || words_match(&name, &rules.include).is_some()
}

/// Why `s` cannot be the T1 companion of the T2 `t2`, or None.
fn unusable_t1(s: &Series, rules: &Rules, t2: &Series) -> Option<String> {
    let r = &rules.t1;
    if let Some(why) = not_an_mr_image(s) {
        return Some(why);
    }
    if s.study_uid != t2.study_uid {
        return Some("another study than the T2's".into());
    }
    if let (Some(a), Some(b)) = (&s.frame_of_reference_uid, &t2.frame_of_reference_uid)
        && a != b
    {
        return Some(format!(
            "Frame of Reference {a} is not the T2's ({b}): its millimetres are not the T2's"
        ));
    }
    let own_name = own_name(s);
    if let Some(w) = words_match(own_name, &r.exclude) {
        return Some(format!("description {own_name:?} says {w:?}"));
    }
    if let Some(why) = ruled_out_acquisition(s, rules) {
        return Some(why);
    }
    if fat_suppressed(s, rules) {
        return Some("fat-suppressed: the stager reads the marrow's fat on the T1".into());
    }
    if let Some(agent) = &s.contrast_agent {
        // Some scanners write a "none" on plain series.
        let none = ["none", "no", "n/a", "na", "nil", "0", "-"];
        if !none.contains(&agent.trim().to_lowercase().as_str()) {
            return Some(format!("post-contrast (Contrast/Bolus Agent {agent:?})"));
        }
    }
    if let (Some(tr), Some(te)) = (s.repetition_time, s.echo_time) {
        let [tr0, tr1] = r.repetition_time_ms;
        let [te0, te1] = r.echo_time_ms;
        if !(tr0..=tr1).contains(&tr) || !(te0..=te1).contains(&te) {
            return Some(format!(
                "TR {tr} ms / TE {te} ms is not T1 weighting (TR {tr0}-{tr1}, TE {te0}-{te1})"
            ));
        }
    } else if !looks_t1(s, r) {
        return Some("not identified as T1-weighted (no matching name, no timing)".into());
    }
    unusable_geometry(s, &rules.orientations, r.min_slices)
}

/// Choose the T1 companion of the T2 at index `t2`.
pub fn select_t1(series: &[Series], rules: &Rules, t2: usize) -> T1Selection {
    let t2s = &series[t2];
    let why: Vec<Option<String>> = series.iter().map(|s| unusable_t1(s, rules, t2s)).collect();
    let t2_plane = t2s.planes().first().copied();
    let rank = |s: &Series| {
        let plane = s.planes()[0];
        (
            plane != Plane::Coronal,
            Some(plane) != t2_plane,
            std::cmp::Reverse(s.slices()),
            s.number.unwrap_or(i64::MAX),
        )
    };
    let mut ranked: Vec<usize> = (0..series.len())
        .filter(|i| *i != t2 && why[*i].is_none())
        .collect();
    ranked.sort_by_key(|i| rank(&series[*i]));
    let chosen = ranked.first().copied();
    let verdicts = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == t2 || !looks_t1(s, &rules.t1) {
                return None;
            }
            Some(match (&why[i], chosen) {
                (Some(why), _) => Verdict::Rejected(why.clone()),
                (None, Some(c)) if c == i => Verdict::Chosen,
                (None, Some(c)) => t1_passed_for(&series[c]),
                (None, None) => unreachable!("a usable T1 means one was chosen"),
            })
        })
        .collect();
    T1Selection {
        chosen,
        verdicts,
        ranked,
    }
}

/// The verdict of a usable T1 passed over for `chosen`.
fn t1_passed_for(chosen: &Series) -> Verdict {
    Verdict::Passed(format!(
        "usable, but T1 series {} ({}) is preferred",
        chosen.number.map(|n| n.to_string()).unwrap_or_default(),
        chosen.description
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Instance;

    fn series(desc: &str, tr: f64, te: f64, row: [f64; 3], col: [f64; 3], n: usize) -> Series {
        Series {
            series_uid: format!("1.2.{}", desc.len()),
            study_uid: "1.2".into(),
            accession_number: None,
            number: Some(n as i64),
            description: desc.into(),
            protocol: String::new(),
            modality: "MR".into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into()],
            scanning_sequence: vec![],
            scan_options: vec![],
            repetition_time: Some(tr),
            echo_time: Some(te),
            lossy: None,
            frame_of_reference_uid: Some("1.9".into()),
            contrast_agent: None,
            instances: (0..n)
                .map(|k| Instance {
                    path: format!("/x/{k}").into(),
                    sop_instance_uid: format!("1.3.{k}"),
                    instance_number: Some(k as i64),
                    position: Some([0.0, k as f64, 0.0]),
                    orientation: Some((row, col)),
                    frames: 1,
                })
                .collect(),
        }
    }

    const COR: ([f64; 3], [f64; 3]) = ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]);
    const AX: ([f64; 3], [f64; 3]) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);

    #[test]
    fn coronal_t2_wins_and_everything_else_has_a_reason() {
        let all = vec![
            series("localizer", 8.0, 4.0, COR.0, COR.1, 3),
            series("t1_tse_cor", 550.0, 12.0, COR.0, COR.1, 20),
            series("AX T2 FSE FS", 3800.0, 75.0, AX.0, AX.1, 30),
            series("t2_tse_fs_cor", 3800.0, 75.0, COR.0, COR.1, 24),
            series("t2 few", 3800.0, 75.0, COR.0, COR.1, 5),
        ];
        let s = select(&all, &Rules::default());
        assert_eq!(s.chosen, Some(3));
        assert!(matches!(&s.verdicts[0].verdict, Verdict::Rejected(r) if r.contains("loc")));
        assert!(matches!(&s.verdicts[1].verdict, Verdict::Rejected(r) if r.contains("t1")));
        assert!(matches!(&s.verdicts[2].verdict, Verdict::Passed(r) if r.contains("preferred")));
        assert!(
            matches!(&s.verdicts[4].verdict, Verdict::Rejected(r) if r.contains("only 5 slices"))
        );
    }

    #[test]
    fn the_t1_companion_is_coronal_of_the_same_frame_and_neither_fat_suppressed_nor_enhanced() {
        let uid = |mut s: Series, n: &str| {
            s.series_uid = format!("1.2.{n}");
            s
        };
        let mut other_frame = uid(series("T1 SE COR", 500.0, 10.0, COR.0, COR.1, 30), "a");
        other_frame.frame_of_reference_uid = Some("1.8".into());
        let mut enhanced = uid(series("t1 cor", 500.0, 10.0, COR.0, COR.1, 30), "b");
        enhanced.contrast_agent = Some("gadoterate".into());
        let all = vec![
            uid(
                series("t2_tse_fs_cor", 3800.0, 75.0, COR.0, COR.1, 24),
                "t2",
            ),
            uid(series("t1_tse_ax", 550.0, 12.0, AX.0, AX.1, 30), "ax"),
            uid(series("t1_tse_cor", 550.0, 12.0, COR.0, COR.1, 20), "cor"),
            uid(series("t1_tse_fs_cor", 550.0, 12.0, COR.0, COR.1, 20), "fs"),
            other_frame,
            enhanced,
            uid(
                series("T1 post Gd COR", 550.0, 12.0, COR.0, COR.1, 20),
                "gd",
            ),
            uid(series("localizer", 8.0, 4.0, COR.0, COR.1, 3), "loc"),
        ];
        let rules = Rules::default();
        let s = select(&all, &rules);
        assert_eq!(s.chosen, Some(0));
        let t1 = select_t1(&all, &rules, 0);
        assert_eq!(t1.chosen, Some(2), "{:?}", t1.verdicts);
        let v = &t1.verdicts;
        assert_eq!(v[0], None, "the T2 is not a T1 candidate");
        assert!(matches!(&v[1], Some(Verdict::Passed(r)) if r.contains("t1_tse_cor")));
        assert_eq!(v[2], Some(Verdict::Chosen));
        assert!(matches!(&v[3], Some(Verdict::Rejected(r)) if r.contains("fat-suppressed")));
        assert!(matches!(&v[4], Some(Verdict::Rejected(r)) if r.contains("Frame of Reference")));
        assert!(matches!(&v[5], Some(Verdict::Rejected(r)) if r.contains("gadoterate")));
        assert!(matches!(&v[6], Some(Verdict::Rejected(r)) if r.contains("\"post\"")));
        assert_eq!(v[7], None, "a localizer does not look like a T1");
        // Recorded beside the T2 verdicts; the T2's own verdicts are unchanged.
        let mut verdicts = s.verdicts.clone();
        t1.attach(&mut verdicts);
        assert_eq!(verdicts[2].t1, Some(Verdict::Chosen));
        assert_eq!(verdicts[2].verdict, s.verdicts[2].verdict);
        // Without a usable T1 there is none; an axial one stands in for a coronal.
        let t1 = select_t1(&all[..2], &rules, 0);
        assert_eq!(t1.chosen, Some(1));
        let t1 = select_t1(&[all[0].clone(), all[3].clone()], &rules, 0);
        assert_eq!(t1.chosen, None);
        // A "none" agent is no contrast.
        let mut plain = all[2].clone();
        plain.contrast_agent = Some("NONE".into());
        assert_eq!(
            select_t1(&[all[0].clone(), plain], &rules, 0).chosen,
            Some(1)
        );
        // The chosen T1 unreadable: the next usable one, and the verdicts say so.
        let mut t1 = select_t1(&all, &rules, 0);
        assert_eq!(
            t1.fall_back(2, "could not be assembled".into(), &all),
            Some(1)
        );
        assert_eq!(t1.verdicts[1], Some(Verdict::Chosen));
        assert!(
            matches!(&t1.verdicts[2], Some(Verdict::Rejected(r)) if r == "could not be assembled")
        );
        assert_eq!(t1.fall_back(1, "unreadable".into(), &all), None);
        // Another study's T1 is never taken.
        let mut elsewhere = all[2].clone();
        elsewhere.study_uid = "1.7".into();
        let t1 = select_t1(&[all[0].clone(), elsewhere], &rules, 0);
        assert!(
            matches!(&t1.verdicts[1], Some(Verdict::Rejected(r)) if r.contains("another study"))
        );
    }

    #[test]
    fn lossy_series_are_not_analysed_unless_allowed() {
        let mut lossy = series("t2_tse_cor", 3800.0, 75.0, COR.0, COR.1, 24);
        lossy.lossy = Some("Lossy Image Compression (0028,2110) is 01, method ISO_10918_1".into());
        let s = select(std::slice::from_ref(&lossy), &Rules::default());
        assert_eq!(s.chosen, None);
        assert!(
            matches!(&s.verdicts[0].verdict, Verdict::Rejected(r) if r.contains("lossy-compressed") && r.contains("ISO_10918_1")),
            "{:?}",
            s.verdicts
        );
        // A lossless series of the study is taken instead, whatever its rank.
        let lossless = series("t2_tse_ax", 3800.0, 75.0, AX.0, AX.1, 20);
        let s = select(&[lossy.clone(), lossless], &Rules::default());
        assert_eq!(s.chosen, Some(1));
        let allow = Rules {
            allow_lossy: true,
            ..Rules::default()
        };
        assert_eq!(select(&[lossy], &allow).chosen, Some(0));
    }

    #[test]
    fn timing_decides_when_names_say_nothing() {
        let a = series("SE 3", 4000.0, 90.0, COR.0, COR.1, 20);
        let b = series("SE 4", 500.0, 10.0, COR.0, COR.1, 20);
        let s = select(&[a, b], &Rules::default());
        assert_eq!(s.chosen, Some(0));
        assert!(matches!(&s.verdicts[1].verdict, Verdict::Rejected(r) if r.contains("TR 500")));
    }

    #[test]
    fn mixed_orientations_and_no_candidates() {
        let mut m = series("t2 mixed", 3800.0, 75.0, COR.0, COR.1, 20);
        m.instances[3].orientation = Some(AX);
        let s = select(&[m], &Rules::default());
        assert_eq!(s.chosen, None);
        assert!(
            matches!(&s.verdicts[0].verdict, Verdict::Rejected(r) if r == "mixed orientations")
        );
    }

    #[test]
    fn exam_wide_protocol_names_do_not_exclude_everything() {
        let mut t2 = series("COR T2 FS", 3800.0, 75.0, COR.0, COR.1, 20);
        t2.protocol = "HIP T1 T2".into();
        let mut dwi = series("DWI cor", 4000.0, 80.0, COR.0, COR.1, 20);
        dwi.description = "diffusion cor t2".into();
        dwi.scanning_sequence = vec!["SE".into(), "EP".into()];
        let mut other = series("t2 secondary", 3800.0, 75.0, COR.0, COR.1, 20);
        other.sop_class_uid = "1.2.840.10008.5.1.4.1.1.7".into();
        let s = select(&[t2, dwi, other], &Rules::default());
        assert_eq!(s.chosen, Some(0));
        assert!(matches!(&s.verdicts[1].verdict, Verdict::Rejected(r) if r.contains("EP")));
        assert!(matches!(&s.verdicts[2].verdict, Verdict::Rejected(r) if r.contains("SOP class")));
    }

    #[test]
    fn fat_suppression_is_a_whole_word_or_the_scan_option() {
        let r = Rules::default();
        let named = |d: &str| series(d, 3800.0, 75.0, COR.0, COR.1, 20);
        for yes in [
            "t2_tse_fs_cor",
            "T2W_TSE_SPAIR_TRA",
            "STIR COR",
            "T2W FatSat AX",
            "COR T2 FSE FS",
            "HIP T2FS AX",
        ] {
            assert!(fat_suppressed(&named(yes), &r), "{yes}");
        }
        for no in [
            "T2W FSE COR",
            "t2_tse_cor",
            "T2 FSE AX",
            "FSE_T2",
            "t2 fsfast stirring",
        ] {
            assert!(!fat_suppressed(&named(no), &r), "{no}");
        }
        let opt = Series {
            scan_options: vec!["FS".into()],
            ..named("T2 COR")
        };
        assert!(fat_suppressed(&opt, &r));
    }

    #[test]
    fn a_fat_suppressed_series_is_preferred_unless_it_is_sagittal() {
        const SAG: ([f64; 3], [f64; 3]) = ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]);
        let plain_cor = series("T2W FSE COR", 4000.0, 95.0, COR.0, COR.1, 30);
        let fs_ax = series("T2W FatSat AX", 4000.0, 80.0, AX.0, AX.1, 25);
        let fs_sag = series("T2W FatSat SAG", 4000.0, 80.0, SAG.0, SAG.1, 23);
        let s = select(&[plain_cor.clone(), fs_ax.clone()], &Rules::default());
        assert_eq!(s.chosen, Some(1));
        assert!(
            matches!(&s.verdicts[0].verdict, Verdict::Passed(r) if r.contains("fat-suppressed")),
            "{:?}",
            s.verdicts
        );
        // A sagittal slab covers one hip: the plain coronal series is analysed instead.
        let s = select(&[plain_cor.clone(), fs_sag], &Rules::default());
        assert_eq!(s.chosen, Some(0));
        // Without the preference, orientation decides again.
        let off = Rules {
            prefer_fat_suppressed: false,
            ..Rules::default()
        };
        assert_eq!(select(&[plain_cor, fs_ax], &off).chosen, Some(0));
    }

    #[test]
    fn words_match_at_boundaries() {
        let w = vec!["loc".to_string(), "t2".to_string()];
        assert_eq!(words_match("3-pl LOC", &w).as_deref(), Some("loc"));
        assert!(words_match("block", &w).is_none());
        assert_eq!(words_match("t2_tse_fs_cor", &w).as_deref(), Some("t2"));
        assert_eq!(words_match("T2W_TSE_SPAIR_COR", &w).as_deref(), Some("t2"));
    }
}
