//! The Linux framebuffer output: a frame written to `/dev/fbN` in the device's pixel
//! format (16-bit RGB565 or 32-bit XRGB8888), line by line with the device's stride, as
//! read from `/sys/class/graphics/fbN/{bits_per_pixel,stride,virtual_size}`. Frames are
//! drawn at the top-left; a larger screen keeps its border.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::Frame;

/// The geometry of a framebuffer device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FbInfo {
    /// Bits per pixel: 16 or 32.
    pub bits_per_pixel: usize,
    /// Bytes per line.
    pub stride: usize,
    /// Visible width and height.
    pub size: (usize, usize),
}

/// Read `/sys/class/graphics/<name>/...` for device `/dev/<name>`.
pub fn info(device: &Path) -> std::io::Result<FbInfo> {
    let name = device
        .file_name()
        .ok_or_else(|| std::io::Error::other("framebuffer path has no name"))?;
    let sys = Path::new("/sys/class/graphics").join(name);
    let read = |f: &str| std::fs::read_to_string(sys.join(f)).map(|s| s.trim().to_string());
    let num = |s: &str| s.parse::<usize>().map_err(std::io::Error::other);
    let bpp = num(&read("bits_per_pixel")?)?;
    let stride = num(&read("stride")?)?;
    let vs = read("virtual_size")?;
    let (w, h) = vs
        .split_once(',')
        .ok_or_else(|| std::io::Error::other("bad virtual_size"))?;
    Ok(FbInfo {
        bits_per_pixel: bpp,
        stride,
        size: (num(w)?, num(h)?),
    })
}

/// `frame` as the bytes of the device's lines (each `stride` long).
pub fn encode(frame: &Frame, fb: FbInfo) -> std::io::Result<Vec<u8>> {
    let bytes_pp = match fb.bits_per_pixel {
        16 => 2,
        32 => 4,
        b => {
            return Err(std::io::Error::other(format!(
                "{b} bits per pixel is not supported"
            )));
        }
    };
    let w = frame.width.min(fb.size.0).min(fb.stride / bytes_pp);
    let h = frame.height.min(fb.size.1);
    let mut out = vec![0u8; fb.stride * h];
    for y in 0..h {
        for x in 0..w {
            let o = y * fb.stride + x * bytes_pp;
            if bytes_pp == 2 {
                out[o..o + 2].copy_from_slice(&frame.pixels[y * frame.width + x].to_le_bytes());
            } else {
                let [r, g, b] = frame.rgb(x, y);
                out[o..o + 4].copy_from_slice(&[b, g, r, 0xFF]);
            }
        }
    }
    Ok(out)
}

/// Draw `frame` on the framebuffer `device` (e.g. `/dev/fb0`).
pub fn write(device: &Path, frame: &Frame) -> std::io::Result<()> {
    let fb = info(device)?;
    let bytes = encode(frame, fb)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(device)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&bytes)
}
