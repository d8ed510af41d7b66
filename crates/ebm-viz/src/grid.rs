//! [`save_grid`]: image samples tiled into one PNG.

use std::path::Path;

use candle_core::{DType, Tensor};
use image::{Rgb, RgbImage};

use crate::{Error, Result};

/// How to lay out a grid.
#[derive(Debug, Clone, Copy)]
pub struct GridOptions {
    /// Images per row.
    pub columns: usize,
    /// Each pixel becomes a `scale x scale` block (small images read better enlarged).
    pub scale: u32,
    /// Pixels of background between images.
    pub padding: u32,
}

impl Default for GridOptions {
    fn default() -> Self {
        Self {
            columns: 10,
            scale: 2,
            padding: 2,
        }
    }
}

/// Tiles `images [N, C, H, W]` (C = 1 or 3, values in [0, 1], clamped) into an RGB image,
/// row by row.
pub fn grid_image(images: &Tensor, options: GridOptions) -> Result<RgbImage> {
    let (n, c, h, w) = images
        .dims4()
        .map_err(|_| Error::Shape(format!("expected [N, C, H, W], got {:?}", images.dims())))?;
    if n == 0 || !(c == 1 || c == 3) || options.columns == 0 || options.scale == 0 {
        return Err(Error::Shape(format!(
            "need at least one image of 1 or 3 channels and a positive column count and scale, got shape {:?}, {} columns, scale {}",
            images.dims(),
            options.columns,
            options.scale
        )));
    }
    let data = images
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let cols = options.columns.min(n);
    let rows = n.div_ceil(cols);
    let (s, p) = (options.scale, options.padding);
    let cell_w = w as u32 * s + p;
    let cell_h = h as u32 * s + p;
    let mut img = RgbImage::from_pixel(
        cols as u32 * cell_w + p,
        rows as u32 * cell_h + p,
        Rgb([255, 255, 255]),
    );
    let to_byte = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for k in 0..n {
        let (r, col) = ((k / cols) as u32, (k % cols) as u32);
        let base = k * c * h * w;
        for y in 0..h {
            for x in 0..w {
                let at = |ch: usize| to_byte(data[base + ch * h * w + y * w + x]);
                let px = if c == 1 {
                    Rgb([at(0); 3])
                } else {
                    Rgb([at(0), at(1), at(2)])
                };
                for dy in 0..s {
                    for dx in 0..s {
                        img.put_pixel(
                            p + col * cell_w + x as u32 * s + dx,
                            p + r * cell_h + y as u32 * s + dy,
                            px,
                        );
                    }
                }
            }
        }
    }
    Ok(img)
}

/// Writes a grid of `images` to a PNG file (creating its folder).
pub fn save_grid(images: &Tensor, path: &Path, options: GridOptions) -> Result<()> {
    crate::error::save(&grid_image(images, options)?, path)
}
