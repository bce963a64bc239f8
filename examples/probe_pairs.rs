//! Print, per study, the detector's candidates (score at least 0.1) each on its fitted
//! sphere, which head each is (`R`, `L`, or `-` for none: centre within half a radius),
//! the pair `model::sphere::locate_heads` takes with the pipeline's floor (or FLOOR) and
//! the detector's own pair with how well it mirrors, and for every
//! pair of candidates its right-left distance, whether it lies and agrees as a head and its
//! partner (`sphere::partner_lies`, `sphere::agree`) and how well the image around one
//! mirrors the other (`sphere::symmetry`). What `sphere::SYMMETRIC` was set on.
//!
//! ```text
//! cargo run --release --example probe_pairs -- dev|classic|external FIRST_SEED N [FLOOR]
//! ```
//!
//! `dev`: domain-randomised studies rendered straight onto the detector's grid; `classic`:
//! classic phantom studies in the held-out style; `external`: the independent evaluation
//! family (style by seed, as `evaluate-models` draws it for a range starting at a multiple
//! of 1000) — to read failures, never to set a constant.

use candle_core::{DType, Device};
use onfh_edge::eval::models::{Family, write_test_study};
use onfh_edge::model::{sphere, weights};
use onfh_edge::phantom::HeadTruth;
use onfh_edge::training::data;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: probe_pairs dev|classic|external FIRST_SEED N [FLOOR]";
    let family = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let first: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let n: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let floor: f32 = match args.next() {
        Some(f) => f.parse()?,
        None => onfh_edge::pipeline::AnalysisSettings::default().min_detection_score,
    };
    let dev = Device::Cpu;
    let settings = onfh_edge::pipeline::AnalysisSettings::default();
    let source = weights::ModelSource::Embedded(settings.detector.clone());
    let det = weights::load_detector(source, &dev, DType::F32)?;
    let tmp = std::env::temp_dir().join(format!("probe_pairs.{}", std::process::id()));
    for seed in first..first + n {
        let (heads, input, t2, style) = match family.as_str() {
            "dev" => {
                let sample = data::randomised_detector_sample(seed, &det.preprocess);
                let t2 = data::randomised_t2(seed, &det.preprocess);
                (sample.heads, sample.volume, t2, "randomised".to_string())
            }
            "classic" | "external" => {
                let which = if family == "external" {
                    Family::External
                } else {
                    Family::InDistribution
                };
                let dir = tmp.join(seed.to_string());
                let truth = write_test_study(which, &dir, (seed % 1000) as usize, seed)?;
                let study = data::assemble_study(&dir, truth, false);
                std::fs::remove_dir_all(&dir)?;
                let study = study?;
                let sample = data::detector_sample(&study, &det.preprocess);
                (
                    sample.heads,
                    sample.volume,
                    study.volume,
                    study.truth.scanner,
                )
            }
            _ => anyhow::bail!(usage),
        };
        let dets = det.net.candidates(&input, &dev, DType::F32)?;
        let fits: Vec<sphere::Located> = dets
            .iter()
            .filter(|d| d.score >= 0.1)
            .map(|d| sphere::locate(d, &t2, &input))
            .collect();
        let which = |c: [f64; 3]| which_head(&heads, c);
        let taken = match sphere::locate_heads(&dets, &t2, &input, floor) {
            Ok((r, l)) => format!(
                "{}{}",
                which(r.detection.center_lps_mm),
                which(l.detection.center_lps_mm)
            ),
            Err(_) => "none".into(),
        };
        // The detector's own pair, and how well it mirrors (rule 6 looks further below
        // sphere::SYMMETRIC).
        let own = match onfh_edge::model::detector::pair_heads(&dets, floor) {
            Ok((r, l)) => {
                let (r, l) = (
                    sphere::locate(r, &t2, &input),
                    sphere::locate(l, &t2, &input),
                );
                let s = sphere::symmetry(&t2, &r.fit, &l.fit);
                format!(
                    "{}{} sym {}",
                    which(r.detection.center_lps_mm),
                    which(l.detection.center_lps_mm),
                    s.map_or("none".into(), |s| format!("{s:.3}"))
                )
            }
            Err(_) => "none".into(),
        };
        println!("study {seed} {style} taken={taken} detector's pair={own}");
        for h in &heads {
            println!(
                "  head {} r {:.1} at {:?}",
                h.side,
                h.radius_mm,
                h.center_lps_mm.map(f64::round)
            );
        }
        for (i, (f, d)) in fits.iter().zip(&dets).enumerate() {
            println!(
                "  c{i} score {:.2} r {:.1} edge {:.3} head {} at {:?} (detected {} at {:?})",
                f.detection.score,
                f.fit.radius_mm,
                f.fit.edge,
                which(f.fit.center_lps_mm),
                f.fit.center_lps_mm.map(f64::round),
                which(d.center_lps_mm),
                d.center_lps_mm.map(f64::round),
            );
        }
        for (i, a) in fits.iter().enumerate() {
            for (j, b) in fits.iter().enumerate().skip(i + 1) {
                let (ca, cb) = (a.fit.center_lps_mm, b.fit.center_lps_mm);
                println!(
                    "  pair c{i}-c{j} {}{} dx {:.0} lies {} agree {} sym {}",
                    which(ca),
                    which(cb),
                    (ca[0] - cb[0]).abs(),
                    sphere::partner_lies(&ca, &cb) as u8,
                    sphere::agree(&a.fit, &b.fit) as u8,
                    sphere::symmetry(&t2, &a.fit, &b.fit)
                        .map_or("none".into(), |s| format!("{s:.3}")),
                );
            }
        }
    }
    Ok(())
}

/// `R` or `L` where `c` lies within half a radius of that head's centre, else `-`.
fn which_head(heads: &[HeadTruth], c: [f64; 3]) -> String {
    heads
        .iter()
        .find(|h| {
            let e: f64 = (0..3).map(|x| (h.center_lps_mm[x] - c[x]).powi(2)).sum();
            e.sqrt() < h.radius_mm / 2.0
        })
        .map_or("-".into(), |h| h.side.to_string())
}
