//! `onfh-edge eval`: the paper's table for a set of studies with known stages.
//!
//! Truth comes from a folder of phantom studies (every `truth.json` below it) or from a CSV
//! `study_instance_uid,side,stage`. Results come from a file of `analyze --json` objects, or,
//! when none is given, from running the pipeline on each phantom study folder. Heads are
//! matched by study and side; a head's class is the arg-max of its stage probabilities (an
//! `indeterminate` head still has them, and is counted as such); a head with no result is
//! reported as not analysed and left out of the figures. With a CSV of reader diagnoses
//! (`study_instance_uid,side,reader,stage`) each reader is compared with the model by
//! McNemar's test on the heads both assessed. ROC curves (one against the rest) can be drawn
//! to a PNG.
//!
//! Reads files and runs the pipeline; knows nothing of the network or the database.

pub mod metrics;
pub mod models;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::phantom::StudyTruth;
use crate::pipeline::{self, Analysis};
use crate::result::{Side, StageCall};

/// Class names in index order.
pub const CLASSES: [&str; 3] = ["0", "I", "II"];

/// The class index of a stage as people write it (`StageCall::from_label`).
fn class_of(stage: &str) -> Option<usize> {
    StageCall::from_label(stage).and_then(StageCall::class)
}

/// One head with a known stage.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthRow {
    /// Study Instance UID.
    pub study: String,
    /// The head's side.
    pub side: Side,
    /// Class index.
    pub class: usize,
}

/// Phantom study folders (those holding `truth.json`) under `root`, sorted.
pub fn phantom_folders(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        if dir.join("truth.json").is_file() {
            out.push(dir);
            continue;
        }
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Read truth from a phantom folder or a CSV.
pub fn read_truth(path: &Path) -> anyhow::Result<Vec<TruthRow>> {
    if path.is_dir() {
        let mut rows = Vec::new();
        for dir in phantom_folders(path)? {
            let f = dir.join("truth.json");
            let t: StudyTruth = serde_json::from_slice(&std::fs::read(&f)?)
                .with_context(|| format!("{} is not a phantom truth file", f.display()))?;
            for h in &t.heads {
                rows.push(TruthRow {
                    study: t.study_uid.clone(),
                    side: h.side,
                    class: crate::training::data::class_of(h.stage) as usize,
                });
            }
        }
        anyhow::ensure!(!rows.is_empty(), "no truth.json under {}", path.display());
        return Ok(rows);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        anyhow::ensure!(
            f.len() == 3,
            "{}:{}: expected study_instance_uid,side,stage",
            path.display(),
            i + 1
        );
        let class = class_of(f[2])
            .with_context(|| format!("{}:{}: unknown stage {:?}", path.display(), i + 1, f[2]))?;
        let side = Side::from_label(f[1])
            .with_context(|| format!("{}:{}: unknown side {:?}", path.display(), i + 1, f[1]))?;
        rows.push(TruthRow {
            study: f[0].to_owned(),
            side,
            class,
        });
    }
    Ok(rows)
}

/// Read `analyze --json` objects (concatenated, or one JSON array).
pub fn read_results(path: &Path) -> anyhow::Result<Vec<Analysis>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).with_context(|| format!("{}", path.display()));
    }
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Analysis>()
        .map(|r| r.with_context(|| format!("{}: not analyze --json output", path.display())))
        .collect()
}

/// Reader diagnoses: (study, side) → reader → class.
pub type Readers = BTreeMap<String, BTreeMap<(String, Side), usize>>;

/// Read a reader CSV `study_instance_uid,side,reader,stage`.
pub fn read_readers(path: &Path) -> anyhow::Result<Readers> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Readers::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        anyhow::ensure!(
            f.len() == 4,
            "{}:{}: expected study_instance_uid,side,reader,stage",
            path.display(),
            i + 1
        );
        let class = class_of(f[3])
            .with_context(|| format!("{}:{}: unknown stage {:?}", path.display(), i + 1, f[3]))?;
        let side = Side::from_label(f[1])
            .with_context(|| format!("{}:{}: unknown side {:?}", path.display(), i + 1, f[1]))?;
        out.entry(f[2].to_owned())
            .or_default()
            .insert((f[0].to_owned(), side), class);
    }
    Ok(out)
}

/// One reader against the model.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderComparison {
    /// Reader name.
    pub reader: String,
    /// The reader's accuracy on the heads compared.
    pub reader_accuracy: f64,
    /// The model's accuracy on the same heads.
    pub model_accuracy: f64,
    /// The test.
    pub mcnemar: metrics::McNemar,
}

/// The evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Studies with truth.
    pub studies: usize,
    /// Heads with truth.
    pub heads_with_truth: usize,
    /// Heads with no result (not analysed, or the study failed).
    pub heads_not_analysed: usize,
    /// Heads analysed but staged indeterminate (their arg-max class is used below).
    pub heads_indeterminate: usize,
    /// Studies by result status.
    pub study_status: BTreeMap<String, usize>,
    /// The table.
    pub table: metrics::Table,
    /// Readers against the model.
    pub readers: Vec<ReaderComparison>,
    /// ROC points per class (false positive rate, true positive rate).
    #[serde(skip)]
    pub roc: Vec<Vec<(f64, f64)>>,
    /// The models' intended use.
    pub intended_use: String,
}

/// Compare results with truth (and readers).
pub fn evaluate(truth: &[TruthRow], results: &[Analysis], readers: &Readers) -> Report {
    let mut by_head = BTreeMap::new();
    let mut status = BTreeMap::new();
    for a in results {
        *status.entry(a.status.to_string()).or_insert(0) += 1;
        for h in &a.heads {
            by_head.insert((a.study_instance_uid.clone(), h.side), h);
        }
    }
    let (mut t, mut p, mut probs, mut keys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut missing, mut indeterminate) = (0, 0);
    for row in truth {
        let Some(h) = by_head.get(&(row.study.clone(), row.side)) else {
            missing += 1;
            continue;
        };
        let pr = [
            h.probabilities.s0 as f64,
            h.probabilities.s1 as f64,
            h.probabilities.s2 as f64,
        ];
        let arg = (0..3).max_by(|&a, &b| pr[a].total_cmp(&pr[b])).unwrap_or(0);
        indeterminate += (h.stage == StageCall::Indeterminate) as usize;
        t.push(row.class);
        p.push(arg);
        probs.push(pr.to_vec());
        keys.push((row.study.clone(), row.side));
    }
    let table = metrics::table(&CLASSES, &t, &p, &probs);
    let roc = (0..3)
        .map(|c| {
            let s: Vec<f64> = probs.iter().map(|x| x[c]).collect();
            let pos: Vec<bool> = t.iter().map(|&x| x == c).collect();
            metrics::roc(&s, &pos)
        })
        .collect();
    let readers = readers
        .iter()
        .map(|(name, dx)| {
            let (mut m, mut r) = (Vec::new(), Vec::new());
            for (i, k) in keys.iter().enumerate() {
                if let Some(&rc) = dx.get(k) {
                    m.push(p[i] == t[i]);
                    r.push(rc == t[i]);
                }
            }
            let acc = |v: &[bool]| v.iter().filter(|x| **x).count() as f64 / v.len().max(1) as f64;
            ReaderComparison {
                reader: name.clone(),
                reader_accuracy: acc(&r),
                model_accuracy: acc(&m),
                mcnemar: metrics::mcnemar(&m, &r),
            }
        })
        .collect();
    let mut studies: Vec<&str> = truth.iter().map(|r| r.study.as_str()).collect();
    studies.sort();
    studies.dedup();
    Report {
        studies: studies.len(),
        heads_with_truth: truth.len(),
        heads_not_analysed: missing,
        heads_indeterminate: indeterminate,
        study_status: status,
        table,
        readers,
        roc,
        intended_use: crate::model::weights::INTENDED_USE.into(),
    }
}

/// Run the pipeline on every phantom study folder under `root`.
pub fn analyze_folders(
    root: &Path,
    models: &pipeline::Models,
    settings: &pipeline::AnalysisSettings,
    rules: &crate::volume::Rules,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<Analysis>> {
    let folders = phantom_folders(root)?;
    let n = folders.len();
    Ok(folders
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            progress(i + 1, n);
            pipeline::analyze(&[f], models, settings, rules, None)
        })
        .collect())
}

/// Draw the ROC curves (one per class against the rest) with their AUC to a PNG.
pub fn write_roc_png(report: &Report, path: &Path) -> std::io::Result<()> {
    use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_6X10};
    use embedded_graphics::pixelcolor::Rgb888;
    use embedded_graphics::prelude::*;
    use embedded_graphics::primitives::{Line, PrimitiveStyle, Rectangle};
    use embedded_graphics::text::Text;

    const W: i32 = 420;
    const H: i32 = 440;
    const X0: i32 = 50;
    const Y0: i32 = 380;
    const S: i32 = 320;
    let mut c = crate::render::Canvas::new(W as usize, H as usize);
    c.fill([255, 255, 255]);
    let black = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
    let axis = PrimitiveStyle::with_stroke(Rgb888::BLACK, 1);
    let grey = PrimitiveStyle::with_stroke(Rgb888::new(190, 190, 190), 1);
    let _ = Rectangle::new(
        Point::new(X0, Y0 - S),
        Size::new(S as u32 + 1, S as u32 + 1),
    )
    .into_styled(axis)
    .draw(&mut c);
    let _ = Line::new(Point::new(X0, Y0), Point::new(X0 + S, Y0 - S))
        .into_styled(grey)
        .draw(&mut c);
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let x = X0 + (v * S as f64) as i32;
        let y = Y0 - (v * S as f64) as i32;
        let _ = Text::new(&format!("{v:.2}"), Point::new(x - 12, Y0 + 14), black).draw(&mut c);
        let _ = Text::new(&format!("{v:.2}"), Point::new(X0 - 32, y + 3), black).draw(&mut c);
    }
    let _ = Text::new("false positive rate", Point::new(X0 + 100, Y0 + 30), black).draw(&mut c);
    let _ = Text::new("true positive rate", Point::new(4, Y0 - S - 8), black).draw(&mut c);
    let _ = Text::new(
        "ROC, one stage against the rest",
        Point::new(X0 + 60, 14),
        black,
    )
    .draw(&mut c);
    let colours = [
        Rgb888::new(30, 110, 200),
        Rgb888::new(230, 140, 20),
        Rgb888::new(200, 30, 40),
    ];
    for (k, pts) in report.roc.iter().enumerate() {
        let style = PrimitiveStyle::with_stroke(colours[k], 2);
        for w in pts.windows(2) {
            let p = |q: (f64, f64)| {
                Point::new(
                    X0 + (q.0 * S as f64).round() as i32,
                    Y0 - (q.1 * S as f64).round() as i32,
                )
            };
            let _ = Line::new(p(w[0]), p(w[1])).into_styled(style).draw(&mut c);
        }
        let auc = report.table.per_class.get(k).map_or(f64::NAN, |f| f.auc);
        let y = Y0 - 60 + 14 * k as i32;
        let _ = Line::new(Point::new(X0 + 170, y - 3), Point::new(X0 + 190, y - 3))
            .into_styled(style)
            .draw(&mut c);
        let _ = Text::new(
            &format!("stage {:<2} AUC {auc:.3}", CLASSES[k]),
            Point::new(X0 + 196, y),
            black,
        )
        .draw(&mut c);
    }
    let foot = "research demo - trained on synthetic phantoms, not for clinical use";
    let _ = Text::new(foot, Point::new(4, H - 8), black).draw(&mut c);
    c.write_png(path)
}
