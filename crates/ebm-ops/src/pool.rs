//! [`avg_pool2x2`]: 2x2 average pooling with stride 2, the IGEBM ResNet's downsampling.

use candle_core::{Result, Tensor};

/// Averages each 2x2 block of `x [B, C, H, W]`, giving `[B, C, H/2, W/2]`. Height and width
/// must be even: candle's pooling gradient is only right when the windows tile the input.
pub fn avg_pool2x2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!(
            "avg_pool2x2: height and width must be even, got {h}x{w} (input shape {:?})",
            x.dims()
        );
    }
    x.avg_pool2d(2)
}
