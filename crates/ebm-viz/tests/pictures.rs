//! Grids and plots: pixel positions, sizes, and errors for bad input.

use candle_core::{Device, Tensor};
use ebm_viz::{grid_image, save_grid, GridOptions, LinePlot, Series};

#[test]
fn grid_places_each_image_and_clamps_values() {
    // Three 1x2x2 images: all 0, all 1, and out-of-range 2.0 (clamped to white).
    let data: Vec<f32> = [0.0f32; 4]
        .iter()
        .chain(&[1.0; 4])
        .chain(&[2.0; 4])
        .copied()
        .collect();
    let images = Tensor::from_vec(data, (3, 1, 2, 2), &Device::Cpu).unwrap();
    let img = grid_image(
        &images,
        GridOptions {
            columns: 2,
            scale: 1,
            padding: 1,
        },
    )
    .unwrap();
    // Two columns of (2 + 1) pixels plus the leading pad; two rows.
    assert_eq!((img.width(), img.height()), (7, 7));
    assert_eq!(img.get_pixel(1, 1).0, [0, 0, 0]);
    assert_eq!(img.get_pixel(4, 1).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(1, 4).0, [255, 255, 255]);
    let rgb = Tensor::from_vec(vec![1f32, 0.0, 0.5], (1, 3, 1, 1), &Device::Cpu).unwrap();
    let img = grid_image(
        &rgb,
        GridOptions {
            columns: 1,
            scale: 3,
            padding: 0,
        },
    )
    .unwrap();
    assert_eq!((img.width(), img.get_pixel(2, 2).0), (3, [255, 0, 128]));
}

#[test]
fn grid_and_plot_errors() {
    let bad = Tensor::zeros((2, 2, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = grid_image(&bad, GridOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 or 3 channels"), "{err}");
    let empty = LinePlot::new("loss", "step", "value", vec![]);
    assert!(empty
        .render()
        .unwrap_err()
        .to_string()
        .contains("no points"));
    let nan = LinePlot::new(
        "loss",
        "step",
        "value",
        vec![Series::from_values("a", &[1.0, f64::NAN])],
    );
    assert!(nan.render().unwrap_err().to_string().contains("NaN"));
}

#[test]
fn plot_and_grid_write_png_files() {
    let dir = tempfile::tempdir().unwrap();
    let plot = LinePlot::new(
        "Training",
        "step",
        "energy",
        vec![
            Series::from_values("E+", &[0.5, 0.1, -0.2, -0.1]),
            Series::from_values("E-", &[0.4, 0.3, 0.1, 0.2]),
        ],
    );
    let path = dir.path().join("plots/curve.png");
    plot.save(&path).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!((back.width(), back.height()), (800, 480));
    // Both series' colours appear.
    let has = |c: [u8; 3]| back.pixels().any(|p| p.0 == c);
    assert!(has([31, 119, 180]) && has([214, 39, 40]));
    let images = Tensor::ones((4, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    save_grid(
        &images,
        &dir.path().join("grid.png"),
        GridOptions::default(),
    )
    .unwrap();
    assert!(dir.path().join("grid.png").exists());
}
