//! Write a PNG of the middle slice of a phantom series (or any single-frame DICOM series).
//!
//! ```text
//! cargo run --example phantom_png -- SERIES_DIR OUT.png [window_center window_width]
//! ```

use std::path::PathBuf;

use dicom_pixeldata::PixelDecoder;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    let (center, width): (f32, f32) = if args.len() >= 4 {
        (args[2].parse().unwrap(), args[3].parse().unwrap())
    } else {
        (700.0, 1600.0)
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    // Middle by position along the slice normal (the tag is enough for a picture).
    files.sort_by_key(|p| {
        let o = dicom_object::open_file(p).unwrap();
        let s: f64 = o
            .element(dicom_dictionary_std::tags::SLICE_LOCATION)
            .unwrap()
            .to_float64()
            .unwrap();
        (s * 1000.0) as i64
    });
    let mid = &files[files.len() / 2];
    let obj = dicom_object::open_file(mid).unwrap();
    let px = obj.decode_pixel_data().unwrap();
    let (w, h) = (px.columns(), px.rows());
    let vals: Vec<f32> = px.to_vec::<f32>().unwrap();
    let lo = center - width / 2.0;
    let bytes: Vec<u8> = vals
        .iter()
        .map(|v| (((v - lo) / width).clamp(0.0, 1.0) * 255.0) as u8)
        .collect();
    let file = std::fs::File::create(&out).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&bytes)
        .unwrap();
    eprintln!("{} -> {}", mid.display(), out.display());
}
