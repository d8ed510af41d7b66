//! Pictures for reports, written as PNG with the `image` crate:
//!
//! - [`save_grid`]: a grid of image samples `[N, C, H, W]` (grey or RGB, values in [0, 1]);
//! - [`LinePlot`]: line plots with axes, ticks, labels and a legend (training curves), drawn
//!   with an embedded 8x8 bitmap font so that no system font is needed.

mod error;
mod grid;
mod plot;

pub use error::{Error, Result};
pub use grid::{grid_image, save_grid, GridOptions};
pub use plot::{LinePlot, Series};
