//! How command results are printed: tables for people, JSON where asked. Text a peer or
//! a site chose (accession numbers, descriptions, errors) is escaped before it is printed.
//! Printing only: every figure comes from the library.

use std::path::Path;

use super::open_store;
use crate::config::Settings;
use crate::redact::printable;
use crate::result::Analysis;
use crate::store::Store;

/// One analysis as `analyze` prints it without `--json`.
pub(super) fn analysis(a: &Analysis) {
    println!("study     {}", a.study_instance_uid);
    println!("accession {}", printable(&a.accession_number));
    println!("series    {}", a.series_instance_uid);
    if let Some(t1) = &a.t1_series_instance_uid {
        println!("t1        {t1} (read by the stager beside the T2)");
    }
    println!("status    {}{}", a.status, reason(a));
    for line in a.head_table(|_| String::new()) {
        println!("{line}");
    }
    let t = &a.timings_ms;
    println!(
        "time      volume {} ms, detect {} ms, stage {} ms, heatmaps {} ms, PACS objects {} ms, total {} ms",
        t.volume, t.detect, t.stage, t.gradcam, t.objects, t.total
    );
    println!("model     {} — {}", a.model.name, a.model.intended_use);
}

/// " — reason", or nothing.
fn reason(a: &Analysis) -> String {
    a.reason
        .as_ref()
        .map(|r| format!(" — {r}"))
        .unwrap_or_default()
}

/// The phantom studies `phantom` wrote.
pub(super) fn phantoms(truths: &[crate::phantom::StudyTruth], out: &Path) {
    for t in truths {
        let heads: Vec<String> = t
            .heads
            .iter()
            .map(|h| format!("{} stage {}", h.side, h.stage.label()))
            .collect();
        println!(
            "seed {:>6}  {:<20} {} series  {}",
            t.seed,
            t.scanner,
            t.series.len(),
            heads.join(", ")
        );
    }
    println!(
        "{} studies written to {} ({})",
        truths.len(),
        out.display(),
        crate::phantom::DISCLAIMER
    );
}

/// The result objects queued for PACS (`export list`).
pub(super) fn exports(store: &Store) -> anyhow::Result<()> {
    let rows = store.exports(None)?;
    println!(
        "{:>5} {:>8}  {:<12} {:<6} {:<8} {:>8}  last",
        "id", "analysis", "destination", "object", "state", "attempts"
    );
    for r in &rows {
        let last = match (&r.last_error, r.last_status) {
            (Some(e), _) => printable(e),
            (None, Some(s)) => format!("status {s:#06X}"),
            (None, None) => String::new(),
        };
        println!(
            "{:>5} {:>8}  {:<12} {:<6} {:<8} {:>8}  {}",
            r.id, r.analysis_id, r.destination, r.object, r.state, r.attempts, last
        );
    }
    let c = store.export_counts()?;
    println!(
        "exports: {} sent, {} pending, {} dead",
        c.sent, c.pending, c.dead
    );
    Ok(())
}

/// The paper's table (`eval`, and each set of `evaluate-models`).
pub(super) fn evaluation_table(r: &crate::eval::Report) {
    let t = &r.table;
    println!(
        "{} studies, {} heads with truth: {} evaluated, {} not analysed, {} staged indeterminate (arg-max used)",
        r.studies, r.heads_with_truth, t.heads, r.heads_not_analysed, r.heads_indeterminate
    );
    println!("study status: {:?}", r.study_status);
    println!("overall accuracy {:.3}", t.overall_accuracy);
    println!(
        "{:<10} {:>7} {:>8} {:>11} {:>11} {:>9} {:>6} {:>6}",
        "stage", "support", "accuracy", "sensitivity", "specificity", "precision", "F1", "AUC"
    );
    for c in &t.per_class {
        println!(
            "{:<10} {:>7} {:>8.3} {:>11.3} {:>11.3} {:>9.3} {:>6.3} {:>6.3}",
            c.class, c.support, c.accuracy, c.sensitivity, c.specificity, c.precision, c.f1, c.auc
        );
    }
    for (name, a) in [
        ("macro", &t.macro_average),
        ("weighted", &t.weighted_average),
    ] {
        println!(
            "{:<10} {:>7} {:>8.3} {:>11.3} {:>11.3} {:>9} {:>6.3} {:>6.3}",
            name, "", a.accuracy, a.sensitivity, a.specificity, "", a.f1, a.auc
        );
    }
    println!(
        "confusion (rows true 0/I/II, columns predicted): {:?}",
        t.confusion
    );
    for rc in &r.readers {
        println!(
            "reader {}: accuracy {:.3} vs model {:.3} on {} heads; McNemar b={} c={} chi2={:.3} p={:.4} ({})",
            rc.reader,
            rc.reader_accuracy,
            rc.model_accuracy,
            rc.mcnemar.cases,
            rc.mcnemar.model_only_right,
            rc.mcnemar.reader_only_right,
            rc.mcnemar.chi_square,
            rc.mcnemar.p_value,
            rc.mcnemar.method
        );
    }
    println!("{}", r.intended_use);
}

/// `evaluate-models`: every test set, then fp16 against f32.
pub(super) fn model_evaluation(e: &crate::eval::models::Evaluation) {
    for set in [&e.in_distribution, &e.external, &e.dataset]
        .into_iter()
        .flatten()
    {
        set_evaluation(set);
    }
    if let Some(d) = &e.development {
        println!("=== Development (not a test): {}", d.test_set);
        detectors(&d.detector, &d.detector_network_alone);
        stagers(&[("stager at true centres", &d.stager_at_true_centers)]);
    }
    if let Some(a) = &e.fp16_vs_f32 {
        if let (Some(p), Some(n)) = (a.max_probability_difference, a.stage_disagreements) {
            println!(
                "fp16 vs f32 stager weights: max stage probability difference {p:.2e}, {n} stage disagreements"
            );
        }
        if let (Some(s), Some(c)) = (a.max_detection_score_difference, a.max_center_difference_mm) {
            println!(
                "fp16 vs f32 detector weights: max detection score difference {s:.2e}, max centre difference {c:.3} mm"
            );
        }
    }
}

fn set_evaluation(e: &crate::eval::models::SetEvaluation) {
    println!("=== {:?} test: {}", e.family, e.test_set);
    if e.unreadable_studies > 0 {
        println!(
            "{} studies had no readable T2 (their heads count as missed)",
            e.unreadable_studies
        );
    }
    println!("--- the whole pipeline (what `onfh-edge eval` reports)");
    evaluation_table(&e.pipeline);
    println!("--- the networks");
    detectors(&e.detector, &e.detector_network_alone);
    stagers(&[
        ("stager at true centres", &e.stager_at_true_centers),
        ("stager at detected centres", &e.stager_at_detected_centers),
    ]);
    println!("--- by style");
    for s in &e.by_style {
        println!(
            "{}: {} studies, both heads found in {}; stager at true centres {}/{} heads; the pipeline's stage calls {} right, {} wrong",
            s.style,
            s.studies,
            s.both_heads_found,
            s.staged_right_at_true_centers,
            s.heads,
            s.calls_right,
            s.calls_wrong
        );
    }
}

fn detectors(
    fitted: &crate::eval::models::DetectorMetrics,
    alone: &crate::eval::models::DetectorMetrics,
) {
    for (what, d) in [
        (
            "detector (the pipeline's rule without its floor: sphere fits, the image's check)",
            fitted,
        ),
        ("detector network alone", alone),
    ] {
        println!(
            "{what}: both heads found in {}/{} studies ({:.1} %), centre error mean {:.2} mm, max {:.2} mm ({:.2} x radius){}",
            d.both_heads_found,
            d.studies,
            100.0 * d.detection_rate,
            d.mean_center_error_mm,
            d.max_center_error_mm,
            d.max_center_error_over_radius,
            match d.heads_without_candidate {
                0 => String::new(),
                n => format!("; {n} heads without any candidate"),
            }
        );
    }
}

fn stagers(sets: &[(&str, &crate::eval::models::StagerMetrics)]) {
    for (what, m) in sets {
        println!(
            "{what}: accuracy {:.1} % of {} heads",
            100.0 * m.accuracy,
            m.heads
        );
        for c in &m.per_class {
            println!(
                "  {:<9} sensitivity {:.3}  specificity {:.3}",
                c.class, c.sensitivity, c.specificity
            );
        }
        println!(
            "  confusion (rows true 0/I/II, columns predicted): {:?}",
            m.confusion
        );
    }
}

/// Stored results with their alerts and exports (`results`).
pub(super) fn results(settings: &Settings, json: bool, since: Option<&str>) -> anyhow::Result<()> {
    let store = open_store(settings, true)?;
    let since_ms = match since {
        Some(s) => crate::clock::parse_since(s, crate::clock::now_ms())
            .map_err(|e| anyhow::anyhow!("--since {e}"))?,
        None => i64::MIN,
    };
    let rows = store.analyses_since(since_ms)?;
    let counts = store.alert_counts()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} result(s); alerts: {} sent, {} pending, {} dead",
        rows.len(),
        counts.sent,
        counts.pending,
        counts.dead
    );
    for r in &rows {
        let a = &r.analysis;
        println!();
        println!(
            "#{} {}  accession {}  {}{}",
            r.id,
            crate::clock::rfc3339(r.analysed_ms),
            printable(&a.accession_number),
            a.status,
            reason(a)
        );
        for line in a.head_table(|_| String::new()) {
            println!("  {line}");
        }
        for al in &r.alerts {
            println!(
                "  alert {} {} {} via {}: {} after {} attempt(s){}",
                al.id,
                al.side,
                al.idempotency_key,
                al.channel,
                al.state,
                al.attempts,
                al.last_error
                    .as_ref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        for e in store.exports(Some(r.id))? {
            println!(
                "  export {} {} to {}: {} after {} attempt(s){}",
                e.id,
                e.object,
                e.destination,
                e.state,
                e.attempts,
                e.last_error
                    .as_ref()
                    .map(|x| format!(" (last error: {})", printable(x)))
                    .unwrap_or_default()
            );
        }
        println!("  {}", a.model.intended_use);
    }
    Ok(())
}

/// What the receiver holds (`status`).
pub(super) fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = open_store(settings, true)?;
    let summary = store.summary()?;
    let series = store.series_rows()?;
    if json {
        let out = serde_json::json!({
            "state_dir": settings.storage.state_dir,
            "summary": summary,
            "series": series,
        });
        println!("{out}");
        return Ok(());
    }
    println!("state directory   {}", settings.storage.state_dir.display());
    println!("studies           {}", summary.studies);
    println!("series            {}", summary.series);
    println!(
        "instances         {} ({:.1} MiB)",
        summary.instances,
        summary.instance_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "series jobs       {} collecting (pending), {} complete",
        summary.jobs_collecting, summary.jobs_complete
    );
    if !series.is_empty() {
        println!();
        println!(
            "{:<10} {:>6} {:>9} {:>4}  {:<24} series UID",
            "state", "number", "instances", "gen", "description"
        );
        for s in series {
            println!(
                "{:<10} {:>6} {:>9} {:>4}  {:<24} {}",
                s.state,
                s.series_number.map(|n| n.to_string()).unwrap_or_default(),
                s.instance_count,
                s.generation,
                // Text the sender chose: control characters escaped.
                printable(&s.series_description.unwrap_or_default())
                    .chars()
                    .take(24)
                    .collect::<String>(),
                s.series_uid
            );
        }
    }
    Ok(())
}
