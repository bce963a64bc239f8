//! Write the phantom pictures under `docs/`: for each stage, a study whose right head is
//! normal and whose left head has that stage, and the coronal T1 and fat-suppressed T2
//! slices through the left head's centre, side by side (T1 left, T2 right; patient right
//! on the image's left, as radiologists view it).
//!
//! ```text
//! cargo run --release --example phantom_docs [-- OUT_DIR]
//! ```

use std::path::{Path, PathBuf};

use onfh_edge::phantom::anatomy::Stage;
use onfh_edge::phantom::{self, Options, Orientation};
use onfh_edge::volume::{self, Volume};

fn slice_through(v: &Volume, p: [f64; 3], window: (f32, f32)) -> (usize, usize, Vec<u8>) {
    let k = v.patient_to_voxel(p)[2]
        .round()
        .clamp(0.0, (v.dims[2] - 1) as f64) as usize;
    let (lo, width) = (window.0 - window.1 / 2.0, window.1);
    let mut out = Vec::with_capacity(v.dims[0] * v.dims[1]);
    for j in 0..v.dims[1] {
        for i in 0..v.dims[0] {
            out.push((((v.get(i, j, k) - lo) / width).clamp(0.0, 1.0) * 255.0) as u8);
        }
    }
    (v.dims[0], v.dims[1], out)
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs".into()));
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();
    for (seed, stage) in [(101u64, Stage::S0), (102, Stage::S1), (103, Stage::S2)] {
        let dir = work.path().join(stage.label());
        let truth = phantom::generate_study(
            &dir,
            seed,
            &Options {
                stages: Some([Stage::S0, stage]),
                t2_orientation: Some(Orientation::Coronal),
                reverse_numbering: Some(false),
                enhanced_t2: Some(false),
                style: None,
            },
        )
        .unwrap();
        let load = |kind: &str| -> Volume {
            let s = truth.series.iter().find(|s| s.kind == kind).unwrap();
            let files = volume::collect_files(&[dir.join(&s.folder)]).unwrap();
            let refs: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
            volume::assemble_files(&refs).unwrap()
        };
        let left = truth
            .heads
            .iter()
            .find(|h| h.side == onfh_edge::result::Side::Left)
            .unwrap()
            .center_lps_mm;
        let (w, h, t1) = slice_through(&load("t1"), left, (700.0, 1600.0));
        let (_, _, t2) = slice_through(&load("t2"), left, (700.0, 1600.0));
        let mut both = Vec::with_capacity(2 * w * h);
        for j in 0..h {
            both.extend_from_slice(&t1[j * w..(j + 1) * w]);
            both.extend_from_slice(&t2[j * w..(j + 1) * w]);
        }
        let path = out.join(format!("phantom_stage_{}.png", stage.label()));
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut enc = png::Encoder::new(file, (2 * w) as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&both).unwrap();
        println!("{} ({}, seed {seed})", path.display(), truth.scanner);
    }
}
