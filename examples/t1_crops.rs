//! Write `t1_crops.png` into OUT_DIR (default `target`): what a stager that reads the T1
//! companion sees — for each stage (rows: 0, I, II), head crops as T2 | T1 pairs, the
//! middle slice of the crop, right heads mirrored. The left half are domain-randomised
//! training crops, the right half crops of the external evaluation family at the true
//! centres. Prints per external study its style and whether a T1 was attached.
//!
//! ```text
//! cargo run --example t1_crops [-- OUT_DIR [FIRST_EXTERNAL_SEED]]
//! ```

use std::path::PathBuf;

use onfh_edge::model::crop::{Channel, CropConfig, crop_channels};
use onfh_edge::render::Canvas;
use onfh_edge::result::Side;
use onfh_edge::training::data;

const PER_ROW: usize = 4;

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "target".into()));
    let first: u64 = args.next().map_or(7_000_000, |s| s.parse().expect("seed"));
    std::fs::create_dir_all(&out).expect("output folder");
    let mut crop = CropConfig::small();
    crop.channels = vec![Channel::T2, Channel::T1];
    let [cd, ch, cw] = crop.shape;
    let pair_w = 2 * cw + 2;
    let half_w = PER_ROW * (pair_w + 6);
    let mut canvas = Canvas::new(2 * half_w + 12, 3 * (ch + 6));
    canvas.fill([40, 40, 40]);
    let draw = |canvas: &mut Canvas, voxels: &[f32], x0: usize, y0: usize| {
        let mid = cd / 2;
        for c in 0..2 {
            for j in 0..ch {
                for i in 0..cw {
                    let v = voxels[((mid * 2 + c) * ch + j) * cw + i].clamp(0.0, 1.0);
                    let g = (v * 255.0) as u8;
                    canvas.set(x0 + c * (cw + 2) + i, y0 + j, [g, g, g]);
                }
            }
        }
    };
    // Randomised training crops with a T1 (the seeds whose T1 is drawn).
    let mut filled = [0usize; 3];
    let mut seed = 5000u64;
    while filled.iter().any(|&n| n < PER_ROW) && seed < 6000 {
        for s in data::randomised_head_samples(seed, &crop, 1, 0.0) {
            let k = s.class as usize;
            let t1_present = s
                .voxels
                .chunks(ch * cw)
                .skip(1)
                .step_by(2)
                .flatten()
                .any(|&v| v != 0.0);
            if t1_present && filled[k] < PER_ROW {
                draw(
                    &mut canvas,
                    &s.voxels,
                    filled[k] * (pair_w + 6),
                    k * (ch + 6) + 3,
                );
                filled[k] += 1;
            }
        }
        seed += 1;
    }
    // External studies at the true centres.
    let tmp = out.join("t1_crops_studies");
    let mut filled = [0usize; 3];
    let mut n = 0u64;
    while filled.iter().any(|&f| f < PER_ROW) && n < 30 {
        let seed = first + n;
        let dir = tmp.join(format!("{seed}"));
        let truth = onfh_edge::evalphantom::generate_study(
            &dir,
            seed,
            &onfh_edge::evalphantom::Options::default(),
        )
        .expect("external study");
        let style = truth.scanner.clone();
        let study = data::assemble_study(&dir, truth, true).expect("assemble");
        println!(
            "seed {seed} {style}: T1 {}",
            if study.t1.is_some() {
                "attached"
            } else {
                "none"
            }
        );
        for h in &study.truth.heads {
            let k = data::class_of(h.stage) as usize;
            if filled[k] < PER_ROW {
                let mirror = h.side == Side::Right;
                let (v, _, read) = crop_channels(
                    &study.volume,
                    study.t1.as_ref(),
                    h.center_lps_mm,
                    mirror,
                    &crop,
                );
                if !read {
                    println!("  {:?} head: T1 not read (coverage)", h.side);
                }
                draw(
                    &mut canvas,
                    &v,
                    half_w + 12 + filled[k] * (pair_w + 6),
                    k * (ch + 6) + 3,
                );
                filled[k] += 1;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        n += 1;
    }
    let path = out.join("t1_crops.png");
    canvas.write_png(&path).expect("write png");
    println!("wrote {}", path.display());
}
