//! A training-free reader of shape, beside the learned judges: an image's silhouette (the
//! largest of its channels) against the scene generator's own renders of every shape, size and
//! position on a grid, the shape of the closest render (least squared difference) its reading.
//! It checks the shape judge with an instrument that learned nothing.

use candle_core::{DType, Tensor};
use ebm_data::scenes::{render, Color, ObjectSpec, Shape, Size};

/// Candidate positions per side of the template grid, `x, y = i / (POSITIONS - 1)`: a step of
/// 1/24 of the range of centres, under a pixel at 32x32.
const POSITIONS: usize = 25;

/// Every shape's renders, as silhouettes in [0, 1].
pub struct TemplateReader {
    image_size: usize,
    /// `(shape, silhouette [S*S])` for every shape, size and grid position.
    templates: Vec<(Shape, Vec<f32>)>,
}

impl TemplateReader {
    /// The templates of `image_size` x `image_size` scenes.
    pub fn new(image_size: usize) -> anyhow::Result<Self> {
        let mut templates =
            Vec::with_capacity(Shape::ALL.len() * Size::ALL.len() * POSITIONS * POSITIONS);
        let step = 1.0 / (POSITIONS - 1) as f32;
        for shape in Shape::ALL {
            for size in Size::ALL {
                for i in 0..POSITIONS {
                    for j in 0..POSITIONS {
                        let object = ObjectSpec::new(
                            shape,
                            Color::Red,
                            size,
                            j as f32 * step,
                            i as f32 * step,
                        );
                        let rgb = render(&[object], image_size)?;
                        // Red: the silhouette is the first channel.
                        let red = rgb[..image_size * image_size]
                            .iter()
                            .map(|&v| v as f32 / 255.0)
                            .collect();
                        templates.push((shape, red));
                    }
                }
            }
        }
        Ok(Self {
            image_size,
            templates,
        })
    }

    /// The shape of the closest template to each image of `x [B, 3, S, S]` (values in [0, 1]).
    pub fn read(&self, x: &Tensor) -> anyhow::Result<Vec<Shape>> {
        let dims = x.dims();
        let s = self.image_size;
        if dims.len() != 4 || dims[1] != 3 || dims[2] != s || dims[3] != s {
            anyhow::bail!("template reader: expected images [batch, 3, {s}, {s}], got {dims:?}");
        }
        let silhouettes = x
            .to_dtype(DType::F32)?
            .max(1)?
            .flatten_from(1)?
            .to_vec2::<f32>()?;
        use rayon::prelude::*;
        Ok(silhouettes
            .par_iter()
            .map(|image| {
                let mut best = (f32::INFINITY, Shape::ALL[0]);
                for (shape, t) in &self.templates {
                    let d: f32 = image.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum();
                    if d < best.0 {
                        best = (d, *shape);
                    }
                }
                best.1
            })
            .collect())
    }
}
