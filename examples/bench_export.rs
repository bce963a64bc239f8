//! What returning results to PACS costs per study, beside its peers, in one run.
//!
//! ```text
//! cargo run --release --example bench_export -- [--runs N]
//! ```
//! Needs DCMTK (`/usr/bin/storescp`, `/usr/bin/storescu`) and, for the highdicom column,
//! `python3` with highdicom and nibabel (reference/bench_export_twin.py; skipped when
//! missing). Input: the held-out phantom study seed 9000000, analysed with `--out` as the
//! worker does. Timed, median of N runs:
//! - objects: writing SEG, PM, SR and both Secondary Captures (`timings_ms.objects`, part of
//!   the analysis);
//! - queue: recording the analysis with its five outbox rows minus recording it without
//!   (the outbox shares the analysis' transaction);
//! - send: one `Exporter` pass (one association, five C-STOREs, outcomes recorded) to DCMTK
//!   `storescp` on loopback. It runs on the exporter thread, after the analysis; shown so the
//!   whole cost is visible.
//!
//! Peers: DCMTK `storescu` sending the same five files to the same `storescp` (a process per
//! run, as an integrator would script it), and highdicom building and writing the same SEG
//! and PM (the two objects that carry pixel data) from the same T2 and heatmap.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use onfh_edge::config::Settings;
use onfh_edge::pacs::{Destination, ExportSettings, Exporter, exports_for};
use onfh_edge::pipeline;
use onfh_edge::store::{JobKey, Store};
use onfh_edge::training::data;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!("storescp did not listen on {port}")
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(7), |r| r.parse())?;
    anyhow::ensure!(runs > 0, "--runs must be at least 1");

    let settings = Settings::defaults()?;
    let models = pipeline::Models::load(&settings.analysis, &settings.preprocess)?;
    let dir = tempfile::tempdir()?;
    let study_dir = dir.path().join("study");
    data::phantom_study(
        &study_dir,
        data::TEST_SEED_BASE,
        &data::test_options(),
        false,
    )?;
    let paths = vec![study_dir.clone()];
    let analyse = |out: &Path| {
        pipeline::analyze(
            &paths,
            &models,
            &settings.analysis,
            &settings.selection,
            Some(out),
        )
    };

    // The PACS: DCMTK storescp on loopback (TCP_NODELAY=1, its best setting).
    let port = free_port();
    let received = dir.path().join("pacs");
    std::fs::create_dir_all(&received)?;
    let mut storescp = Command::new("/usr/bin/storescp")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "PACS", "-od"])
        .arg(&received)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("start /usr/bin/storescp (install dcmtk): {e}"))?;
    wait_for_port(port)?;
    let export = ExportSettings {
        destination: vec![Destination {
            name: "pacs".into(),
            ae_title: "PACS".into(),
            host: "127.0.0.1".into(),
            port,
            calling_ae_title: "ONFH_EDGE".into(),
            objects: onfh_edge::pacs::OBJECT_KINDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }],
        ..ExportSettings::default()
    };
    let store = Store::open(&dir.path().join("onfh.sqlite"))?;
    let exporter = Exporter::new(store.clone(), export.clone());

    let warm = analyse(&dir.path().join("warm"));
    anyhow::ensure!(
        warm.heads.len() == 2,
        "analysis found {} heads: {:?}",
        warm.heads.len(),
        warm.reason
    );
    let (mut total, mut objects, mut plain, mut queued, mut send, mut storescu) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut last_out = PathBuf::new();
    for i in 0..runs {
        let out = dir.path().join(format!("run{i}"));
        let t = Instant::now();
        let a = analyse(&out);
        total.push(ms(t));
        objects.push(a.timings_ms.objects as f64);
        let dicom = out.join("dicom");
        anyhow::ensure!(
            files_in(&dicom) == 5,
            "run {i}: {} objects",
            files_in(&dicom)
        );

        let t = Instant::now();
        store.record_job(&JobKey::parse(&format!("plain#{i}")), 0, &a, &[], &[], 0)?;
        plain.push(ms(t));
        let t = Instant::now();
        let rows = exports_for(&export, &dicom);
        store.record_job(&JobKey::parse(&format!("export#{i}")), 0, &a, &[], &rows, 0)?;
        queued.push(ms(t));

        let t = Instant::now();
        let pass = exporter.run_once(i64::MAX / 2)?;
        send.push(ms(t));
        anyhow::ensure!(pass.sent == 5 && pass.dead == 0, "run {i}: {pass:?}");

        let files: Vec<PathBuf> = ["seg", "pm", "sr", "sc-R", "sc-L"]
            .iter()
            .map(|n| dicom.join(format!("{n}.dcm")))
            .collect();
        let t = Instant::now();
        let st = Command::new("/usr/bin/storescu")
            .env("TCP_NODELAY", "1")
            .args(["-R", "-aec", "PACS", "-aet", "STORESCU", "127.0.0.1"])
            .arg(port.to_string())
            .args(&files)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        storescu.push(ms(t));
        anyhow::ensure!(st.success(), "storescu failed: {st}");
        last_out = out;
    }
    let _ = storescp.kill();
    let _ = storescp.wait();
    let object_bytes: u64 = std::fs::read_dir(last_out.join("dicom"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();

    // highdicom: SEG + PM from the same T2, analysis and heatmap.
    let json = dir.path().join("analysis.json");
    let mut a = analyse(&last_out);
    a.timings_ms = Default::default();
    std::fs::write(&json, serde_json::to_vec(&a)?)?;
    let twin = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/bench_export_twin.py");
    let highdicom = Command::new("python3")
        .arg(&twin)
        .arg(&study_dir)
        .arg(&json)
        .arg(last_out.join("heatmap.nii.gz"))
        .arg(dir.path().join("highdicom"))
        .arg(runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["seg_pm_ms"].as_f64()
        });

    let (objects, queue, send, storescu) = (
        median(objects),
        (median(queued.clone()) - median(plain.clone())).max(0.0),
        median(send),
        median(storescu),
    );
    println!(
        "phantom study seed {}: 5 result objects, {:.1} MiB; median of {runs} runs",
        data::TEST_SEED_BASE,
        object_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "analysis with --out (total)            {:>8.1} ms",
        median(total)
    );
    println!("  objects (SEG, PM, SR, 2 SC)          {objects:>8.1} ms");
    println!(
        "  queue (5 outbox rows, same tx)       {queue:>8.1} ms  (recording: {:.1} ms with the rows, {:.1} ms without)",
        median(queued.clone()),
        median(plain.clone())
    );
    println!(
        "added to the analysis                  {:>8.1} ms",
        objects + queue
    );
    println!("send: Exporter pass to storescp        {send:>8.1} ms  (exporter thread)");
    println!(
        "export in all                          {:>8.1} ms",
        objects + queue + send
    );
    println!("peer: DCMTK storescu, same 5 files     {storescu:>8.1} ms  (process per run)");
    match highdicom {
        Some(h) => println!(
            "peer: highdicom SEG + PM only           {h:>8.1} ms  (onfh-edge writes all 5 in {objects:.1} ms)"
        ),
        None => println!(
            "peer: highdicom                         failed or missing (needs python3 with highdicom and nibabel)"
        ),
    }
    Ok(())
}
