//! `cargo xtask scenes`: the compose experiment's generated scenes written out, one PNG per scene
//! (`00000.png`, ...) and `labels.json` (each scene's objects: shape, colour, size, x, y).

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Device;
use ebm_data::scenes::{SceneConfig, SceneGenerator};
use ebm_viz::{save_grid, GridOptions};

/// Writes `count` scenes drawn with `seed` into `out`; returns the labels file.
pub fn write(
    seed: u64,
    count: usize,
    size: usize,
    objects: usize,
    out: &Path,
) -> anyhow::Result<PathBuf> {
    if count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    let generator = SceneGenerator::new(SceneConfig::new(size).with_objects(objects))?;
    let mut rng = ebm_core::seeded_rng(seed);
    let batch = generator.sample(count, &mut rng)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let images = batch.tensor(&Device::Cpu)?;
    let one = GridOptions {
        columns: 1,
        scale: 1,
        padding: 0,
    };
    let mut labels = Vec::with_capacity(count);
    for (i, l) in batch.labels().iter().enumerate() {
        let file = format!("{i:05}.png");
        save_grid(&images.narrow(0, i, 1)?, &out.join(&file), one)?;
        let objects: Vec<serde_json::Value> = l
            .objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "shape": o.shape.name(),
                    "color": o.color.name(),
                    "size": o.size.name(),
                    "x": o.x,
                    "y": o.y,
                })
            })
            .collect();
        labels.push(serde_json::json!({"file": file, "objects": objects}));
    }
    let path = out.join("labels.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&serde_json::json!({
            "seed": seed,
            "image_size": size,
            "scenes": labels,
        }))?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
