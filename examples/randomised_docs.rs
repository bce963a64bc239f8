//! Write `docs/randomised.png`: what the detector and the stager are trained on — twelve
//! domain-randomised studies (`phantom::randomised`), each as the coronal slice of the
//! detector's input through the heads (top) and the two stager crops through each head's
//! centre, right head mirrored (bottom). Prints the time per rendered sample.
//!
//! ```text
//! cargo run --release --example randomised_docs [-- OUT_DIR]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use onfh_edge::model::crop::CropConfig;
use onfh_edge::render::Canvas;
use onfh_edge::training::data;
use onfh_edge::volume::Preprocess;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "docs".into()));
    std::fs::create_dir_all(&out).expect("output folder");
    let pre = Preprocess::default();
    let crop = CropConfig::small();
    let [_, h, w] = pre.shape;
    let [cd, ch, cw] = crop.shape;
    let (cols, rows) = (4usize, 3usize);
    let tile_w = w.max(2 * cw + 4);
    let tile_h = h + ch + 6;
    let mut canvas = Canvas::new(cols * (tile_w + 4), rows * (tile_h + 4));
    canvas.fill([40, 40, 40]);
    let (mut t_det, mut t_crop) = (0f64, 0f64);
    for n in 0..cols * rows {
        let seed = 5000 + n as u64;
        let t = Instant::now();
        let s = data::randomised_detector_sample(seed, &pre);
        t_det += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let crops = data::randomised_head_samples(seed, &crop, 1, 0.0);
        t_crop += t.elapsed().as_secs_f64();
        let (x0, y0) = ((n % cols) * (tile_w + 4), (n / cols) * (tile_h + 4));
        // Slice through the mean of the two heads' depth.
        let k = ((s.boxes[0].center[0] + s.boxes[1].center[0]) / 2.0).round() as usize;
        let k = k.min(s.volume.dims[2] - 1);
        for j in 0..h {
            for i in 0..w {
                let g = (s.volume.get(i, j, k) * 255.0) as u8;
                canvas.set(x0 + i, y0 + j, [g, g, g]);
            }
        }
        for (c, sample) in crops.iter().enumerate() {
            let mid = cd / 2;
            for j in 0..ch {
                for i in 0..cw {
                    let g = (sample.voxels[(mid * ch + j) * cw + i] * 255.0) as u8;
                    canvas.set(x0 + c * (cw + 4) + i, y0 + h + 6 + j, [g, g, g]);
                }
            }
        }
    }
    let n = (cols * rows) as f64;
    println!(
        "per study: detector input {:.0} ms, two head crops {:.0} ms",
        t_det / n * 1000.0,
        t_crop / n * 1000.0
    );
    let path = out.join("randomised.png");
    canvas.write_png(&path).expect("write png");
    println!("wrote {}", path.display());
}
