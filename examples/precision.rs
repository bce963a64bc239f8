//! Both shipped networks in f16 and in f32 on the same input, on one device: the largest
//! difference of their outputs, and the latency of each.
//!
//! ```text
//! cargo run --release --example precision -- [--device cpu|cuda] [--runs N]
//! cargo run --release --features cuda --example precision -- --device cuda   # on a GPU
//! ```
//! The input is a held-out phantom study (seed 9000000, the scanner style not used in
//! training): its preprocessed volume for the detector, and the crop around each true head
//! for the stager. f32 is the CPU product path; f16 is what the appliance runs on CUDA.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use onfh_edge::model::detector::decode;
use onfh_edge::model::weights::{self, Architecture};
use onfh_edge::training::data;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let device = weights::device(&arg("--device").unwrap_or_else(|| "cpu".into()))?;
    let runs: usize = arg("--runs").map_or(Ok(5), |r| r.parse())?;
    let models = Path::new("models");
    let det_m = models.join("3dc-yolox-small.json");
    let stg_m = models.join("3d-muldensenet-small.json");

    let dir = tempfile::tempdir()?;
    let seed = data::TEST_SEED_BASE;
    let study = data::phantom_study(dir.path(), seed, &data::test_options(), true)?;
    let m = weights::read_manifest(&det_m)?;
    let Architecture::Detector { preprocess, .. } = &m.architecture else {
        anyhow::bail!("{} is not a detector manifest", det_m.display());
    };
    let sample = data::detector_sample(&study, preprocess);
    let m = weights::read_manifest(&stg_m)?;
    let Architecture::Stager { crop, .. } = &m.architecture else {
        anyhow::bail!("{} is not a stager manifest", stg_m.display());
    };
    let crops: Vec<f32> = study
        .truth
        .heads
        .iter()
        .flat_map(|h| {
            onfh_edge::model::crop::crop_channels(
                &study.volume,
                study.t1.as_ref(),
                h.center_lps_mm,
                h.side == onfh_edge::result::Side::Right,
                crop,
            )
            .0
        })
        .collect();
    let [w, h, d] = sample.volume.dims;
    let vol = Tensor::from_slice(&sample.volume.data, (1, d, 1, h, w), &Device::Cpu)?;
    let [cd, ch, cw] = crop.shape;
    let heads = Tensor::from_vec(crops, (2, cd, crop.channel_count(), ch, cw), &Device::Cpu)?;

    println!("device {device:?}, {runs} runs each, input: phantom study seed {seed}");
    let mut outputs = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let det = weights::load_detector(&det_m, &device, dtype)?.net;
        let stg = weights::load_stager(&stg_m, &device, dtype)?.net;
        let x = vol.to_device(&device)?.to_dtype(dtype)?;
        let c = heads.to_device(&device)?.to_dtype(dtype)?;
        let (mut td, mut ts) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..runs + 1 {
            let t0 = Instant::now();
            let raw = det.forward_t(&x, false)?;
            let scores: Vec<f32> = decode(&raw)?[0].iter().map(|b| b.score).collect();
            let t1 = Instant::now();
            let p: Vec<f32> = stg.probabilities(&c)?.flatten_all()?.to_vec1()?;
            let t2 = Instant::now();
            td.push((t1 - t0).as_secs_f64() * 1e3);
            ts.push((t2 - t1).as_secs_f64() * 1e3);
            last = Some((scores, p));
        }
        // The first run warms up (kernel compilation, allocations).
        td.remove(0);
        ts.remove(0);
        println!(
            "{dtype:?}: detector {:.1} ms, stager (2 heads) {:.1} ms (medians)",
            median(td),
            median(ts)
        );
        outputs.push(last.expect("ran at least once"));
    }
    let (s32, p32) = &outputs[0];
    let (s16, p16) = &outputs[1];
    let maxdiff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    println!(
        "f16 vs f32: max detection score difference {:.2e}, max stage probability difference {:.2e}",
        maxdiff(s32, s16),
        maxdiff(p32, p16)
    );
    println!("stage probabilities f32 {p32:?}");
    println!("stage probabilities f16 {p16:?}");
    Ok(())
}
