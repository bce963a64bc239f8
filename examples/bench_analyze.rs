//! `analyze` of one bilateral study on CPU against a PyTorch CPU twin of the same networks
//! with the same weights, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_analyze -- [--runs N] [--threads T]
//! ```
//! Needs `python3` with `torch` and `safetensors` (reference/bench_twin.py). Both sides get
//! the same thread count (RAYON_NUM_THREADS for Candle, torch.set_num_threads for PyTorch)
//! and the same input: the held-out phantom study seed 9000000, preprocessed, with the two
//! head crops at the detected centres. Timed:
//! - networks: detector forward + 2 × (stager forward + Grad-CAM backward), both sides;
//! - analyze: the whole `pipeline::analyze` (files → result, no heatmap files), Rust only.
//!
//! Peak RSS is each process's VmHWM / ru_maxrss. The outputs of the two sides are compared
//! (largest difference of the detector's raw output and of any stage probability).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use onfh_edge::config::Settings;
use onfh_edge::model::{crop, gradcam};
use onfh_edge::pipeline;
use onfh_edge::training::data;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runs: usize = arg("--runs").map_or(Ok(7), |r| r.parse())?;
    let threads: usize = match arg("--threads") {
        Some(t) => t.parse()?,
        None => std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    };
    // Candle's CPU kernels run on rayon's global pool; set before first use.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };

    let settings = Settings::defaults()?;
    let models = pipeline::Models::load(&settings.analysis, &settings.preprocess)?;
    let dir = tempfile::tempdir()?;
    let seed = data::TEST_SEED_BASE;
    let study_dir = dir.path().join("study");
    let onfh_edge::model::weights::Architecture::Stager { crop: crop_cfg, .. } =
        &models.stager_manifest.architecture
    else {
        anyhow::bail!("the stager manifest is not a stager's");
    };
    let crop_cfg = crop_cfg.clone();
    let study = data::phantom_study(&study_dir, seed, &data::test_options(), crop_cfg.uses_t1())?;
    let paths = vec![study_dir.clone()];

    // The networks' inputs, exactly as the pipeline makes them.
    let a = pipeline::analyze(
        &paths,
        &models,
        &settings.analysis,
        &settings.selection,
        None,
    );
    anyhow::ensure!(
        a.heads.len() == 2,
        "analysis found {} heads: {:?}",
        a.heads.len(),
        a.reason
    );
    let input = onfh_edge::volume::preprocess(&study.volume, &settings.preprocess);
    let [w, h, d] = input.dims;
    let vol = Tensor::from_slice(&input.data, (1, d, 1, h, w), &Device::Cpu)?;
    let [cd, ch, cw] = crop_cfg.shape;
    let crops: Vec<f32> = a
        .heads
        .iter()
        .flat_map(|hd| {
            crop::crop_channels(
                &study.volume,
                study.t1.as_ref(),
                hd.center_lps_mm,
                hd.side == onfh_edge::result::Side::Right,
                &crop_cfg,
            )
            .0
        })
        .collect();
    let cc = crop_cfg.channel_count();
    let crops = Tensor::from_vec(crops, (2, cd, cc, ch, cw), &Device::Cpu)?;
    let inputs = dir.path().join("inputs.safetensors");
    let mut t = HashMap::new();
    t.insert("volume".to_string(), vol.transpose(1, 2)?.contiguous()?);
    t.insert("crops".to_string(), crops.transpose(1, 2)?.contiguous()?);
    candle_core::safetensors::save(&t, &inputs)?;

    // Rust: networks only.
    let (det, stg) = (models.detector(), models.stager());
    let net_run = || -> anyhow::Result<(Vec<f32>, Vec<Vec<f32>>, Vec<f32>)> {
        let raw = det.forward_t(&vol, false)?;
        let mut probs = Vec::new();
        let mut sums = Vec::new();
        for s in gradcam::stage_and_explain_batch(stg, &crops, gradcam::CamMethod::GradCam)? {
            probs.push(s.probabilities);
            sums.push(s.heatmap.iter().sum::<f32>());
        }
        Ok((
            raw.tensor.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            probs,
            sums,
        ))
    };
    net_run()?;
    let mut net_ms = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let t0 = Instant::now();
        out = Some(net_run()?);
        net_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (raw, probs, sums) = out.expect("runs > 0");
    let mut all_ms = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        let r = pipeline::analyze(
            &paths,
            &models,
            &settings.analysis,
            &settings.selection,
            None,
        );
        all_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(r.heads.len() == 2);
    }
    let rust_rss = peak_rss_mib();

    // PyTorch.
    let py = std::process::Command::new("python3")
        .arg(PathBuf::from("reference").join("bench_twin.py"))
        .arg(&inputs)
        .args([
            "--threads",
            &threads.to_string(),
            "--runs",
            &runs.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        py.status.success(),
        "reference/bench_twin.py failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&py.stdout)?;
    let py_ms = v["median_ms"].as_f64().unwrap_or(f64::NAN);
    let py_raw: Vec<f32> = serde_json::from_value(v["detector_output"].clone())?;
    let py_probs: Vec<Vec<f32>> = serde_json::from_value(v["probabilities"].clone())?;
    let py_sums: Vec<f32> = serde_json::from_value(v["heatmap_sums"].clone())?;
    anyhow::ensure!(
        py_raw.len() == raw.len() && py_probs.len() == probs.len() && py_sums.len() == sums.len(),
        "the PyTorch twin's outputs have other shapes ({} vs {} detector values)",
        py_raw.len(),
        raw.len()
    );
    let max_diff = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "output lengths differ");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let rust_net = median(net_ms);
    println!(
        "bench_analyze: phantom study seed {seed} (held-out style), {threads} thread(s), {runs} runs, median"
    );
    println!("{:<44} {:>10} {:>14}", "", "time ms", "peak RSS MiB");
    println!(
        "{:<44} {:>10.1} {:>14.0}",
        "onfh-edge networks (detect + 2 x stage+CAM)", rust_net, rust_rss
    );
    println!(
        "{:<44} {:>10.1} {:>14}",
        "onfh-edge analyze (files -> result)",
        median(all_ms),
        "(same process)"
    );
    println!(
        "{:<44} {:>10.1} {:>14.0}",
        format!(
            "PyTorch {} eager, same networks",
            v["torch"].as_str().unwrap_or("?")
        ),
        py_ms,
        v["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "ratio onfh-edge / PyTorch (networks): {:.2}x",
        rust_net / py_ms
    );
    println!(
        "outputs: max |detector output difference| {:.2e}, max relative heatmap mass difference {:.2e}, max |stage probability difference| {:.2e}",
        max_diff(&raw, &py_raw),
        sums.iter()
            .zip(&py_sums)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-6))
            .fold(0f32, f32::max),
        probs
            .iter()
            .zip(&py_probs)
            .map(|(a, b)| max_diff(a, b))
            .fold(0f32, f32::max)
    );
    Ok(())
}
