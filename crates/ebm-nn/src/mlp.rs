//! A fully connected energy: `x -> dense -> act -> ... -> dense -> E`, e.g. the latent-space
//! prior of Pang et al. 2020 (`100 -> 200 -> 200 -> 1`, leaky ReLU).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::fused_mlp::{HostDense, HostMlp};
use crate::layers::{Activation, Dense, Init};
use crate::{Error, ParamStore, Result, Trainable};

/// The architecture of an [`Mlp`] energy. Unknown keys are rejected when read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Values per sample (samples of any shape are flattened).
    pub input_dim: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    /// The non-linearity between layers.
    pub activation: Activation,
    /// Spectral normalisation of every layer.
    #[serde(default)]
    pub spectral_norm: bool,
}

impl MlpConfig {
    /// The latent-prior energy of Pang et al. 2020: `dim -> 200 -> 200 -> 1`, leaky ReLU 0.2.
    pub fn latent_prior(dim: usize) -> Self {
        Self {
            input_dim: dim,
            hidden: vec![200, 200],
            activation: Activation::LeakyRelu,
            spectral_norm: false,
        }
    }

    /// Checks that the network can be built.
    pub fn validate(&self) -> Result<()> {
        if self.input_dim == 0 || self.hidden.contains(&0) {
            return Err(Error::Config(format!(
                "MLP widths must be at least 1, got input_dim {} and hidden {:?}",
                self.input_dim, self.hidden
            )));
        }
        Ok(())
    }
}

/// A fully connected energy network.
#[derive(Debug, Clone)]
pub struct Mlp {
    config: MlpConfig,
    params: ParamStore,
    layers: Vec<Dense>,
    /// The fused CPU path of a frozen f32 model on the CPU.
    host: Option<std::sync::Arc<HostMlp>>,
}

impl Mlp {
    /// A freshly initialised f32 network.
    pub fn new(config: &MlpConfig, device: &Device, rng: &mut dyn rand::RngCore) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised network of the given dtype.
    pub fn with_dtype(
        config: &MlpConfig,
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
        let mut widths = vec![config.input_dim];
        widths.extend(&config.hidden);
        widths.push(1);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                Dense::new(
                    &mut init,
                    &format!("layers.{i}"),
                    w[0],
                    w[1],
                    config.spectral_norm,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: config.clone(),
            params,
            layers,
            host: None,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// A copy with detached weights, for sampling. On the CPU in f32 it also carries the
    /// weights on the host for the fused pass of [`ebm_core::Energy::energy_and_grad`].
    pub fn frozen(&self) -> Result<Self> {
        let layers: Vec<Dense> = self
            .layers
            .iter()
            .map(|l| l.frozen())
            .collect::<Result<_>>()?;
        let w0 = layers[0].raw_weight();
        let host = if w0.device().is_cpu() && w0.dtype() == DType::F32 {
            let host_layers = layers
                .iter()
                .map(|l| {
                    let (out, inp) = l.raw_weight().dims2()?;
                    Ok(HostDense::new(
                        l.raw_weight().flatten_all()?.to_vec1::<f32>()?,
                        l.raw_bias().to_vec1::<f32>()?,
                        out,
                        inp,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Some(std::sync::Arc::new(HostMlp {
                layers: host_layers,
                activation: self.config.activation,
            }))
        } else {
            None
        };
        Ok(Self {
            config: self.config.clone(),
            params: ParamStore::new(),
            layers,
            host,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let batch = x.dim(0)?;
        let mut h = x.reshape((batch, self.config.input_dim))?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = self.config.activation.apply(&h)?;
            }
        }
        Ok(h.squeeze(1)?)
    }
}

impl ebm_core::Energy for Mlp {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let dims = x.dims();
        let per_sample: usize = dims.iter().skip(1).product();
        if dims.len() < 2 || dims[0] == 0 || per_sample != self.config.input_dim {
            return Err(ebm_core::Error::Shape {
                what: "MLP energy input".into(),
                expected: format!("[batch >= 1, {}]", self.config.input_dim),
                got: dims.to_vec(),
            });
        }
        ebm_core::validate::check_finite(x, "MLP energy input")?;
        self.forward(x).map_err(|e| match e {
            Error::Core(c) => c,
            Error::Candle(c) => ebm_core::Error::Candle(c),
            other => ebm_core::Error::invalid("MLP", other.to_string()),
        })
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        match &self.host {
            Some(host) if x.device().is_cpu() && x.dtype() == DType::F32 => {
                let dims = x.dims();
                let per_sample: usize = dims.iter().skip(1).product();
                if dims.len() < 2 || dims[0] == 0 || per_sample != self.config.input_dim {
                    return Err(ebm_core::Error::Shape {
                        what: "MLP energy input".into(),
                        expected: format!("[batch >= 1, {}]", self.config.input_dim),
                        got: dims.to_vec(),
                    });
                }
                let values = x.flatten_all()?.to_vec1::<f32>()?;
                let (e, g) = host.energy_and_grad(&values);
                Ok((
                    Tensor::from_vec(e, dims[0], x.device())?,
                    Tensor::from_vec(g, x.shape(), x.device())?,
                ))
            }
            _ => ebm_core::autograd_energy_and_grad(|x| self.energy(x), x),
        }
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![self.config.input_dim])
    }
}

impl Trainable for Mlp {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn update_spectral_norm(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            if let Some((w, sn)) = layer.spectral_norm_mut() {
                sn.power_iteration(w, 1)?;
            }
        }
        Ok(())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .filter_map(|l| l.spectral_norm().map(|sn| (l.name(), sn)))
            .flat_map(|(name, sn)| {
                let (u, v) = sn.vectors();
                [
                    (format!("{name}.weight_u"), u.clone()),
                    (format!("{name}.weight_v"), v.clone()),
                ]
            })
            .collect()
    }

    fn set_buffers(&mut self, buffers: &HashMap<String, Tensor>) -> Result<()> {
        for layer in &mut self.layers {
            let name = layer.name().to_string();
            if let Some((_, sn)) = layer.spectral_norm_mut() {
                let get = |suffix: &str| {
                    buffers
                        .get(&format!("{name}.{suffix}"))
                        .cloned()
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "spectral-norm vector {name}.{suffix} is missing"
                            ))
                        })
                };
                sn.set_vectors(get("weight_u")?, get("weight_v")?)?;
            }
        }
        Ok(())
    }
}
