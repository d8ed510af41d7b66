//! [`Classifier`]: a small convolutional image classifier whose penultimate layer gives the
//! features of a domain FID (a Frechet distance in the feature space of a network trained on the
//! data set itself, for when Inception weights are not at hand).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::layers::{Conv, Dense, Init};
use crate::{Error, ParamStore, Result, Trainable};

/// The architecture of a [`Classifier`]: `[conv 3x3 -> swish -> avg-pool 2x2] per width`, then
/// (optionally a global spatial mean) `dense -> swish` (the features) and `dense` (the logits). Unknown keys are rejected in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height and width (square images); divisible by `2^widths.len()`.
    pub image_size: usize,
    /// Output channels of the convolution stages.
    pub widths: Vec<usize>,
    /// Width of the feature layer.
    pub feature_dim: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Average the last stage over its spatial positions before the feature layer (translation
    /// invariant: what a shape classifier wants) instead of flattening it.
    #[serde(default)]
    pub global_pool: bool,
}

impl ClassifierConfig {
    /// For 28x28 grey images of 10 classes (Fashion-MNIST, MNIST): widths 32 and 64, 128 features.
    pub fn mnist_like() -> Self {
        Self {
            channels: 1,
            image_size: 28,
            widths: vec![32, 64],
            feature_dim: 128,
            num_classes: 10,
            global_pool: false,
        }
    }

    /// Checks that the network can be built.
    pub fn validate(&self) -> Result<()> {
        let zero = self.channels == 0
            || self.image_size == 0
            || self.widths.is_empty()
            || self.widths.contains(&0)
            || self.feature_dim == 0
            || self.num_classes < 2;
        if zero {
            return Err(Error::Config(format!(
                "classifier: channels, image_size, widths and feature_dim must be at least 1 and num_classes at least 2, got {self:?}"
            )));
        }
        let factor = 1usize << self.widths.len();
        if !self.image_size.is_multiple_of(factor) {
            return Err(Error::Config(format!(
                "classifier: image_size {} is not divisible by 2^{} (one 2x2 pooling per width)",
                self.image_size,
                self.widths.len()
            )));
        }
        Ok(())
    }

    fn flat_dim(&self) -> usize {
        let side = if self.global_pool {
            1
        } else {
            self.image_size >> self.widths.len()
        };
        side * side * self.widths.last().copied().unwrap_or(0)
    }
}

/// A convolutional classifier; [`Classifier::features`] is its penultimate activation.
#[derive(Debug, Clone)]
pub struct Classifier {
    config: ClassifierConfig,
    params: ParamStore,
    convs: Vec<Conv>,
    hidden: Dense,
    head: Dense,
}

impl Classifier {
    /// A freshly initialised f32 network.
    pub fn new(
        config: &ClassifierConfig,
        device: &Device,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised network of the given dtype.
    pub fn with_dtype(
        config: &ClassifierConfig,
        device: &Device,
        dtype: DType,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        config.validate()?;
        let mut params = ParamStore::new();
        let mut init = Init {
            params: &mut params,
            rng,
            device,
            dtype,
        };
        let mut convs = Vec::new();
        let mut in_ch = config.channels;
        for (i, &w) in config.widths.iter().enumerate() {
            convs.push(Conv::new(
                &mut init,
                &format!("convs.{i}"),
                in_ch,
                w,
                3,
                false,
            )?);
            in_ch = w;
        }
        let hidden = Dense::new(
            &mut init,
            "hidden",
            config.flat_dim(),
            config.feature_dim,
            false,
        )?;
        let head = Dense::new(
            &mut init,
            "head",
            config.feature_dim,
            config.num_classes,
            false,
        )?;
        Ok(Self {
            config: config.clone(),
            params,
            convs,
            hidden,
            head,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = &self.config;
        let expected = [c.channels, c.image_size, c.image_size];
        let dims = x.dims();
        if dims.len() != 4 || dims[0] == 0 || dims[1..] != expected {
            return Err(ebm_core::Error::Shape {
                what: "classifier input".into(),
                expected: format!(
                    "[batch >= 1, {}, {}, {}]",
                    expected[0], expected[1], expected[2]
                ),
                got: dims.to_vec(),
            }
            .into());
        }
        Ok(())
    }

    /// The feature layer's activations `[B, feature_dim]` for images `x [B, C, H, W]` in [0, 1].
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for conv in &self.convs {
            h = ebm_ops::avg_pool2x2(&ebm_ops::swish(&conv.forward(&h)?)?)?;
        }
        let h = if self.config.global_pool {
            h.mean((2, 3))?
        } else {
            h.flatten_from(1)?
        };
        Ok(ebm_ops::swish(&self.hidden.forward(&h)?)?)
    }

    /// Class logits `[B, num_classes]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.features(x)?)
    }

    /// Mean cross-entropy of the logits against integer labels `[B]` (u32).
    pub fn loss(&self, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
        cross_entropy(&self.logits(x)?, labels)
    }

    /// Features of many images, `batch` at a time, without building a gradient graph.
    pub fn features_batched(&self, x: &Tensor, batch: usize) -> Result<Tensor> {
        let n = x.dim(0)?;
        if batch == 0 {
            return Err(Error::Config(
                "classifier: batch size must be at least 1".into(),
            ));
        }
        let parts = (0..n)
            .step_by(batch)
            .map(|s| {
                Ok(self
                    .features(&x.narrow(0, s, batch.min(n - s))?.detach())?
                    .detach())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The fraction of images whose largest logit is their label.
    pub fn accuracy(&self, x: &Tensor, labels: &Tensor, batch: usize) -> Result<f64> {
        let n = x.dim(0)?;
        if batch == 0 || n == 0 {
            return Err(Error::Config(
                "classifier accuracy: no images or batch size 0".into(),
            ));
        }
        let mut correct = 0usize;
        for s in (0..n).step_by(batch) {
            let len = batch.min(n - s);
            let pred = self.logits(&x.narrow(0, s, len)?.detach())?.argmax(1)?;
            let y = labels.narrow(0, s, len)?.to_dtype(DType::U32)?;
            correct += pred
                .eq(&y)?
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()? as usize;
        }
        Ok(correct as f64 / n as f64)
    }
}

/// `log softmax` over the last dimension of `[B, K]`, from primitive ops (candle 0.11's
/// `softmax_last_dim` has no gradient), stable for large logits.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

/// Mean negative log-likelihood of integer `labels [B]` under `logits [B, K]`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (b, k) = logits.dims2()?;
    if labels.dims() != [b] {
        return Err(ebm_core::Error::Shape {
            what: "cross-entropy labels".into(),
            expected: format!("[{b}]"),
            got: labels.dims().to_vec(),
        }
        .into());
    }
    let one_hot = crate::one_hot(labels, k, logits.dtype())?;
    let picked = (log_softmax(logits)? * one_hot)?.sum_all()?;
    Ok((picked * (-1.0 / b as f64))?)
}

impl Trainable for Classifier {
    fn params(&self) -> &ParamStore {
        &self.params
    }
    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }
    fn update_spectral_norm(&mut self) -> Result<()> {
        Ok(())
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    fn set_buffers(&mut self, _buffers: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}
