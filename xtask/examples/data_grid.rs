//! Writes a grid of the first 100 Fashion-MNIST training images (a check of the data path).
fn main() -> anyhow::Result<()> {
    let set = ebm_data::load(
        ebm_data::DataSet::FashionMnist,
        ebm_data::Split::Train,
        None,
    )?;
    let idx: Vec<usize> = (0..100).collect();
    let mut rng = ebm_core::seeded_rng(0);
    let x = set.dequantized(&idx, &mut rng, &candle_core::Device::Cpu)?;
    ebm_viz::save_grid(
        &x,
        std::path::Path::new("/tmp/chk/data.png"),
        ebm_viz::GridOptions::default(),
    )?;
    Ok(())
}
