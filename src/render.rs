//! An RGB raster that embedded-graphics draws on (text, lines), written as PNG. Used for
//! heatmap montages and plots.
//!
//! Pixels and PNG encoding only; what is drawn is the caller's business.

use std::path::Path;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;

/// An RGB image, 8 bits per channel, row-major.
pub struct Canvas {
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// RGB bytes.
    pub px: Vec<u8>,
}

impl Canvas {
    /// A black canvas.
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![0; w * h * 3],
        }
    }

    /// Set one pixel (outside is ignored).
    pub fn set(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        if x < self.w && y < self.h {
            let o = (y * self.w + x) * 3;
            self.px[o..o + 3].copy_from_slice(&rgb);
        }
    }

    /// Fill with one colour.
    pub fn fill(&mut self, rgb: [u8; 3]) {
        for p in self.px.chunks_mut(3) {
            p.copy_from_slice(&rgb);
        }
    }

    /// Write as PNG (temporary file, then rename).
    pub fn write_png(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("png.tmp");
        let file = std::fs::File::create(&tmp)?;
        let mut enc =
            png::Encoder::new(std::io::BufWriter::new(file), self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(&self.px)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)?;
        std::fs::rename(&tmp, path)
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.w as u32, self.h as u32)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = std::convert::Infallible;
    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 {
                self.set(p.x as usize, p.y as usize, [c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}
