//! [`LinePlot`]: line plots for training curves, drawn pixel by pixel.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::{Error, Result};

/// One line: a name for the legend and its points `(x, y)`.
#[derive(Debug, Clone)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series of `y` values at x = 1, 2, 3, ...
    pub fn from_values(name: impl Into<String>, ys: &[f64]) -> Self {
        Self {
            name: name.into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| ((i + 1) as f64, y))
                .collect(),
        }
    }
}

/// A line plot with a title, axis labels, ticks and a legend.
#[derive(Debug, Clone)]
pub struct LinePlot {
    /// Drawn at the top.
    pub title: String,
    /// Drawn under the x axis.
    pub x_label: String,
    /// Drawn above the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

const PALETTE: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [23, 190, 207],
];
const INK: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

fn draw_text(img: &mut RgbImage, text: &str, x: i64, y: i64, color: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let code = if (ch as u32) < 128 {
            ch as usize
        } else {
            '?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    put(img, x + i as i64 * 8 + col, y + row as i64, color);
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    color: Rgb<u8>,
    thick: bool,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for k in 0..=steps {
        let t = k as f64 / steps as f64;
        let (x, y) = (
            (x0 + t * (x1 - x0)).round() as i64,
            (y0 + t * (y1 - y0)).round() as i64,
        );
        put(img, x, y, color);
        if thick {
            put(img, x + 1, y, color);
            put(img, x, y + 1, color);
        }
    }
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    // Integer multiples of the step, so that 0.1 * 3 prints as 0.3.
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last)
        .map(|k| {
            let t = k as f64 * step;
            // Round to the step's own precision to drop binary noise.
            let digits = (-step.log10().floor()).max(0.0) as i32;
            let p = 10f64.powi(digits);
            (t * p).round() / p
        })
        .collect()
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

impl LinePlot {
    /// A plot of the given series, 800x480 pixels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series,
            size: (800, 480),
        }
    }

    /// Draws the plot.
    pub fn render(&self) -> Result<RgbImage> {
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .collect();
        if points.is_empty() {
            return Err(Error::Plot(format!("`{}` has no points", self.title)));
        }
        if points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
            return Err(Error::Plot(format!(
                "`{}` has NaN or infinite points",
                self.title
            )));
        }
        let (mut x0, mut x1, mut y0, mut y1) = points.iter().fold(
            (
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ),
            |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
        );
        if x1 - x0 < 1e-12 {
            x0 -= 0.5;
            x1 += 0.5;
        }
        if y1 - y0 < 1e-12 * y0.abs().max(1.0) {
            y0 -= 0.5 * y0.abs().max(1.0);
            y1 += 0.5 * y1.abs().max(1.0);
        }
        let pad = 0.05 * (y1 - y0);
        let (y0, y1) = (y0 - pad, y1 + pad);

        let (w, h) = self.size;
        let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        let (left, right, top, bottom) = (90.0, w as f64 - 20.0, 50.0, h as f64 - 50.0);
        let px = |x: f64| left + (x - x0) / (x1 - x0) * (right - left);
        let py = |y: f64| bottom - (y - y0) / (y1 - y0) * (bottom - top);

        for t in ticks(y0, y1) {
            line(&mut img, (left, py(t)), (right, py(t)), GRID, false);
            let s = label(t);
            draw_text(
                &mut img,
                &s,
                left as i64 - 8 * s.len() as i64 - 6,
                py(t) as i64 - 4,
                INK,
            );
        }
        for t in ticks(x0, x1) {
            line(&mut img, (px(t), top), (px(t), bottom), GRID, false);
            let s = label(t);
            draw_text(
                &mut img,
                &s,
                px(t) as i64 - 4 * s.len() as i64,
                bottom as i64 + 8,
                INK,
            );
        }
        line(&mut img, (left, top), (left, bottom), INK, false);
        line(&mut img, (left, bottom), (right, bottom), INK, false);
        for (k, s) in self.series.iter().enumerate() {
            let color = Rgb(PALETTE[k % PALETTE.len()]);
            for pair in s.points.windows(2) {
                line(
                    &mut img,
                    (px(pair[0].0), py(pair[0].1)),
                    (px(pair[1].0), py(pair[1].1)),
                    color,
                    true,
                );
            }
            if s.points.len() == 1 {
                let (x, y) = (px(s.points[0].0), py(s.points[0].1));
                line(&mut img, (x - 2.0, y), (x + 2.0, y), color, true);
            }
            let ly = top as i64 + 8 + 14 * k as i64;
            let lx = right as i64 - 8 * s.name.len() as i64 - 40;
            line(
                &mut img,
                (lx as f64, ly as f64 + 3.0),
                (lx as f64 + 24.0, ly as f64 + 3.0),
                color,
                true,
            );
            draw_text(&mut img, &s.name, lx + 30, ly, INK);
        }
        let title_x = (w as i64 - 8 * self.title.len() as i64) / 2;
        draw_text(&mut img, &self.title, title_x.max(0), 16, INK);
        let xl = (left + right) as i64 / 2 - 4 * self.x_label.len() as i64;
        draw_text(&mut img, &self.x_label, xl, h as i64 - 22, INK);
        draw_text(&mut img, &self.y_label, 8, top as i64 - 20, INK);
        Ok(img)
    }

    /// Draws the plot and writes it as PNG (creating its folder).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::error::save(&self.render()?, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(-0.13, 0.41), vec![-0.1, 0.0, 0.1, 0.2, 0.3, 0.4]);
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(1500.0), "1500");
        assert_eq!(label(2e-5), "2.0e-5");
    }
}
