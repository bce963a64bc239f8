//! Volume benchmark: from a 3-series phantom study on disk to the model's input tensor.
//!
//! ```text
//! cargo run --release --example bench_volume [-- --runs 7]
//! ```
//!
//! Each run: list and scan every file of the study, select the T2 series, assemble it
//! (decode, sort, geometry) and preprocess it (resample, crop, resize, window). Prints the
//! median and range of each step over the runs (the files stay in the page cache after the
//! first run, as they would on the appliance right after reception).

use std::time::Instant;

use onfh_edge::phantom::{self, Options};
use onfh_edge::volume::{self, Preprocess, Rules};

fn main() {
    let mut runs = 7usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args[i + 1].parse().expect("--runs N");
    }
    let dir = tempfile::tempdir().unwrap();
    let truth = phantom::generate_study(dir.path(), 21, &Options::default()).unwrap();
    let instances: usize = truth.series.iter().map(|s| s.instances).sum();
    println!(
        "phantom study: {} series, {} instances ({})",
        truth.series.len(),
        instances,
        truth.scanner
    );
    let mut steps: Vec<[f64; 4]> = Vec::new();
    let mut shape = [0usize; 3];
    for _ in 0..runs {
        let t0 = Instant::now();
        let files = volume::collect_files(&[dir.path().to_owned()]).unwrap();
        let report = volume::scan_files(&files);
        let t1 = Instant::now();
        let sel = volume::select(&report.series, &Rules::default());
        let chosen = &report.series[sel.chosen.expect("T2 chosen")];
        let t2 = Instant::now();
        let v = volume::assemble(chosen).unwrap();
        let t3 = Instant::now();
        let p = volume::preprocess(&v, &Preprocess::default());
        let t4 = Instant::now();
        shape = p.dims;
        steps.push([
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t4 - t3).as_secs_f64(),
        ]);
    }
    println!("{runs} runs, tensor {:?} (W, H, D)", shape);
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "step", "median ms", "min ms", "max ms"
    );
    let names = [
        "scan headers (all series)",
        "select",
        "assemble T2 (decode, sort)",
        "preprocess",
    ];
    let mut totals: Vec<f64> = steps.iter().map(|s| s.iter().sum()).collect();
    for (n, name) in names.iter().enumerate() {
        let mut v: Vec<f64> = steps.iter().map(|s| s[n] * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        println!(
            "{:<34} {:>9.1} {:>9.1} {:>9.1}",
            name,
            v[v.len() / 2],
            v[0],
            v[v.len() - 1]
        );
    }
    totals.sort_by(f64::total_cmp);
    println!(
        "{:<34} {:>9.1} {:>9.1} {:>9.1}",
        "total",
        totals[totals.len() / 2] * 1000.0,
        totals[0] * 1000.0,
        totals[totals.len() - 1] * 1000.0
    );
}
