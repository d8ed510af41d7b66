//! The VAE of a VAEBM: a convolutional encoder and decoder with a vector latent code, one group
//! of latents ([`Hierarchy::Single`]) or several groups generated top-down
//! ([`Hierarchy::TopDown`], NVAE's structure at one resolution), and a Gaussian likelihood with a
//! fixed or a learned per-pixel standard deviation ([`Likelihood`]).
//!
//! ```text
//! encoder   e = act(dense(flatten(pool(act(conv3x3(... pool(act(conv3x3(x))) ...))))))   [B, hidden]
//! top-down  h_0 = 0;  for group l = 1..G:
//!             prior      p(z_l | z_<l) = N(mu_p, sigma_p^2)  (l = 1: N(0, I); else dense(act(h_{l-1})))
//!             posterior  q(z_l | x, z_<l) = N(mu_p + dmu, exp(logvar_p + dlogvar)),
//!                        (dmu, dlogvar) = dense([e, h_{l-1}])     (NVAE's residual normal)
//!             h_l = h_{l-1} + dense(z_l)
//! decoder   mean = sigmoid(convT(... act(convT(act(dense(act(h_G))))) ...))  in (0, 1)
//! p(x | z)  = N(mean, sigma_x^2), sigma_x fixed or a learned [C, H, W] tensor
//! ```
//!
//! Each resolution level is one 3x3 convolution and a 2x2 average pool in the encoder
//! (`ebm_ops::conv2d`, `ebm_ops::avg_pool2x2`) and one kernel-4, stride-2 transposed convolution
//! in the decoder (`ebm_ops::conv_transpose2d`), the last of which makes the image's channels
//! (no convolution at full resolution in the decoder, and only the first one, from the image's
//! channels, in the encoder: the full-resolution layers dominate the cost on a CPU). The reparameterisation of a sample is
//! `z_l = mu_p(z_<l) + sigma_p(z_<l) eps_l`, `x = mean(z(eps_z)) + sigma_x eps_x`, with all
//! `eps` standard normal: [`Vae::transform`], the map VAEBM samples through.

use candle_core::{DType, Device, Tensor};
use ebm_core::validate;
use ebm_nn::{Activation, Conv, Dense, Init, ParamStore, Trainable};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Log-variances pass through `c * tanh(v / c)` with this `c`, so that standard deviations stay
/// within `[e^-4, e^4]` (NVAE's soft clamp).
const LOGVAR_BOUND: f64 = 8.0;

/// How the latent code is structured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Hierarchy {
    /// One group of `latent_dim` latents with a standard normal prior: a plain VAE.
    Single,
    /// `groups` groups of `latent_dim` latents, each conditioned on the ones before it, in
    /// the prior (a Gaussian whose mean and variance a dense layer reads off the top-down
    /// state) and in the posterior (a residual correction of that prior): NVAE's hierarchy, at
    /// one resolution. `groups: 1` is the same model as [`Hierarchy::Single`].
    TopDown {
        /// Number of latent groups (>= 1).
        groups: usize,
    },
}

impl Hierarchy {
    /// The number of latent groups.
    pub fn groups(&self) -> usize {
        match self {
            Hierarchy::Single => 1,
            Hierarchy::TopDown { groups } => *groups,
        }
    }
}

/// The decoder's output distribution `p(x | z)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Likelihood {
    /// `N(mean, sigma^2)` with the same fixed `sigma` for every pixel.
    FixedGaussian {
        /// The standard deviation (> 0).
        sigma: f64,
    },
    /// `N(mean, sigma^2)` with a learned standard deviation per pixel and channel (a parameter
    /// of shape `[C, H, W]` that does not depend on `z`), bounded below by `min_sigma`.
    LearnedGaussian {
        /// The starting value of every standard deviation (>= `min_sigma`).
        init_sigma: f64,
        /// The lower bound (> 0): it keeps the likelihood of near-constant pixels finite.
        min_sigma: f64,
    },
}

/// The architecture of a [`Vae`]. Saved as JSON beside every checkpoint; unknown keys are
/// rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaeConfig {
    /// Image channels (1 grey, 3 colour).
    pub channels: usize,
    /// Image height and width; divisible by `2^widths.len()`.
    pub image_size: usize,
    /// Convolution widths, one per resolution level (at least one level): the encoder's level
    /// `i` is a 3x3 convolution to `widths[i]` and a 2x2 average pool; the decoder mirrors it
    /// with stride-2 transposed convolutions from `widths[i]` to `widths[i - 1]` (to the image's
    /// channels for the last one).
    pub widths: Vec<usize>,
    /// Width of the dense layers between the convolutions and the latents (the encoder's
    /// feature vector and the top-down state).
    pub hidden: usize,
    /// Latents per group.
    pub latent_dim: usize,
    /// One group or a top-down hierarchy.
    pub hierarchy: Hierarchy,
    /// The non-linearity (Swish or leaky ReLU 0.2).
    pub activation: Activation,
    /// The decoder's output distribution.
    pub likelihood: Likelihood,
}

impl VaeConfig {
    /// A single-level VAE for 28x28 grey images (Fashion-MNIST, MNIST): two levels (28 -> 14
    /// -> 7), widths `w` and `2w`, a dense layer of `hidden`, `latent_dim` latents, Swish, and a
    /// learned per-pixel standard deviation starting at 0.1, bounded below by 0.03.
    pub fn mnist_like(width: usize, hidden: usize, latent_dim: usize) -> Self {
        Self {
            channels: 1,
            image_size: 28,
            widths: vec![width, 2 * width],
            hidden,
            latent_dim,
            hierarchy: Hierarchy::Single,
            activation: Activation::Swish,
            likelihood: Likelihood::LearnedGaussian {
                init_sigma: 0.1,
                min_sigma: 0.03,
            },
        }
    }

    /// A hierarchical VAE for 32x32 colour images (CIFAR-10): three levels (32 -> 4), widths
    /// 64, 128, 256, 512 hidden units, 4 groups of 32 latents.
    pub fn cifar10() -> Self {
        Self {
            channels: 3,
            image_size: 32,
            widths: vec![64, 128, 256],
            hidden: 512,
            latent_dim: 32,
            hierarchy: Hierarchy::TopDown { groups: 4 },
            activation: Activation::Swish,
            likelihood: Likelihood::LearnedGaussian {
                init_sigma: 0.1,
                min_sigma: 0.01,
            },
        }
    }

    /// A hierarchical VAE for 64x64 colour images (CelebA-64): four levels (64 -> 4), widths
    /// 64, 128, 256, 256, 512 hidden units, 4 groups of 64 latents.
    pub fn celeba64() -> Self {
        Self {
            channels: 3,
            image_size: 64,
            widths: vec![64, 128, 256, 256],
            hidden: 512,
            latent_dim: 64,
            hierarchy: Hierarchy::TopDown { groups: 4 },
            activation: Activation::Swish,
            likelihood: Likelihood::LearnedGaussian {
                init_sigma: 0.1,
                min_sigma: 0.01,
            },
        }
    }

    /// Checks that the network can be built and take its images.
    pub fn validate(&self) -> Result<()> {
        let bad = |p: String| Err(Error::config("VAE config", p));
        if self.channels == 0 || self.image_size == 0 || self.hidden == 0 || self.latent_dim == 0 {
            return bad(format!(
                "channels, image_size, hidden and latent_dim must be at least 1, got {}, {}, {}, {}",
                self.channels, self.image_size, self.hidden, self.latent_dim
            ));
        }
        if self.widths.is_empty() || self.widths.contains(&0) {
            return bad(format!(
                "widths needs at least one level and no zero width, got {:?}",
                self.widths
            ));
        }
        let levels = self.widths.len();
        if levels >= usize::BITS as usize || !self.image_size.is_multiple_of(1 << levels) {
            return bad(format!(
                "image_size {} is not divisible by 2^{levels} (one 2x2 pooling per width in {:?})",
                self.image_size, self.widths
            ));
        }
        if self.hierarchy.groups() == 0 {
            return bad("hierarchy: a top-down hierarchy needs at least 1 group, got 0".into());
        }
        match self.likelihood {
            Likelihood::FixedGaussian { sigma } => {
                if !(sigma.is_finite() && sigma > 0.0) {
                    return bad(format!(
                        "likelihood sigma must be a finite number > 0, got {sigma}"
                    ));
                }
            }
            Likelihood::LearnedGaussian {
                init_sigma,
                min_sigma,
            } => {
                if !(min_sigma.is_finite() && min_sigma > 0.0) {
                    return bad(format!(
                        "likelihood min_sigma must be a finite number > 0, got {min_sigma}"
                    ));
                }
                if !(init_sigma.is_finite() && init_sigma >= min_sigma) {
                    return bad(format!(
                        "likelihood init_sigma must be finite and >= min_sigma {min_sigma}, got {init_sigma}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        vec![self.channels, self.image_size, self.image_size]
    }

    /// The number of latents in all groups together: the length of `eps_z`.
    pub fn total_latent_dim(&self) -> usize {
        self.latent_dim * self.hierarchy.groups()
    }

    /// Height and width of the smallest feature map (after every pooling).
    pub fn bottom_size(&self) -> usize {
        self.image_size >> self.widths.len()
    }

    fn bottom_dim(&self) -> usize {
        let s = self.bottom_size();
        s * s * self.widths[self.widths.len() - 1]
    }
}

/// A stride-2, kernel-4, padding-1 transposed convolution with bias: doubles height and width.
#[derive(Debug, Clone)]
struct UpConv {
    weight: Tensor,
    bias: Tensor,
}

impl UpConv {
    fn new(
        init: &mut Init<'_>,
        name: &str,
        in_channels: usize,
        out_channels: usize,
    ) -> Result<Self> {
        // Each output pixel sums in_channels * (4 / 2)^2 products: scale for unit variance.
        let w = ebm_core::noise::normal(
            &mut *init.rng,
            (in_channels, out_channels, 4, 4),
            init.dtype,
            init.device,
        )?;
        let w = (w * (1.0 / ((4 * in_channels) as f64).sqrt()))?;
        let weight = init.params.add(format!("{name}.weight"), &w)?;
        let bias = init
            .params
            .add(format!("{name}.bias"), &init.zeros(out_channels)?)?;
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ebm_ops::conv_transpose2d(
            x,
            &self.weight,
            Some(&self.bias),
            2,
            1,
        )?)
    }

    fn frozen(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.detach(),
        }
    }
}

/// One latent group's layers.
#[derive(Debug, Clone)]
struct Group {
    /// `[e] -> 2 d` (first group) or `[e, h] -> 2 d`: the posterior's correction of the prior.
    posterior: Dense,
    /// `act(h) -> 2 d`: the prior's mean and log-variance (absent for the first group).
    prior: Option<Dense>,
    /// `z -> hidden`: the group's contribution to the top-down state.
    latent_in: Dense,
}

/// The terms of the evidence lower bound of a batch, each of shape `[B]` (nats per image).
#[derive(Debug, Clone)]
pub struct Elbo {
    /// `log p(x | z) - KL`, the single-sample ELBO.
    pub elbo: Tensor,
    /// `log p(x | z)` at the sampled `z`.
    pub log_likelihood: Tensor,
    /// The KL divergence from the posterior to the prior, summed over groups.
    pub kl: Tensor,
    /// The KL divergence of each group (evaluated at the sampled earlier groups).
    pub kl_groups: Vec<Tensor>,
    /// The decoder's mean at the sampled `z`, `[B, C, H, W]`.
    pub mean: Tensor,
}

/// A convolutional VAE; see the module documentation for the architecture.
#[derive(Debug, Clone)]
pub struct Vae {
    config: VaeConfig,
    params: ParamStore,
    down: Vec<Conv>,
    enc_dense: Dense,
    groups: Vec<Group>,
    dec_dense: Dense,
    up: Vec<UpConv>,
    /// The learned per-pixel log standard deviation, `[C, H, W]`.
    log_sigma: Option<Tensor>,
    dtype: DType,
}

/// `c * tanh(v / c)`: a differentiable clamp of `v` to `(-c, c)`.
fn soft_clamp(v: &Tensor, c: f64) -> Result<Tensor> {
    Ok(((v / c)?.tanh()? * c)?)
}

/// `sigmoid(v) = (tanh(v / 2) + 1) / 2`, stable for any `v` (no overflowing exponential).
fn sigmoid(v: &Tensor) -> Result<Tensor> {
    Ok((((v * 0.5)?.tanh()? + 1.0)? * 0.5)?)
}

/// The first and second halves of `[B, 2d]` along the last dimension.
fn halves(t: &Tensor) -> Result<(Tensor, Tensor)> {
    let d = t.dim(1)? / 2;
    Ok((t.narrow(1, 0, d)?, t.narrow(1, d, d)?))
}

/// `KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))` for diagonal Gaussians, summed over
/// the last dimension of `[B, d]` inputs: shape `[B]`.
///
/// `0.5 * sum(logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1)`.
pub fn kl_normal(
    mu_q: &Tensor,
    logvar_q: &Tensor,
    mu_p: &Tensor,
    logvar_p: &Tensor,
) -> Result<Tensor> {
    let diff = (mu_q - mu_p)?;
    let ratio = ((logvar_q.exp()? + diff.sqr()?)? / logvar_p.exp()?)?;
    let terms = ((logvar_p - logvar_q)? + ratio)?;
    Ok(((terms - 1.0)?.sum(1)? * 0.5)?)
}

/// `KL(N(mu, exp(logvar)) || N(0, I))` summed over the last dimension of `[B, d]`: shape `[B]`.
///
/// `0.5 * sum(exp(logvar) + mu^2 - 1 - logvar)`.
pub fn kl_standard_normal(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let terms = ((logvar.exp()? + mu.sqr()?)? - logvar)?;
    Ok(((terms - 1.0)?.sum(1)? * 0.5)?)
}

/// `log N(x; mean, exp(log_sigma)^2)` summed over every dimension but the first: `x` and `mean`
/// are `[B, ...]`, `log_sigma` broadcasts against them. Shape `[B]`.
pub fn gaussian_log_likelihood(x: &Tensor, mean: &Tensor, log_sigma: &Tensor) -> Result<Tensor> {
    let half_log_two_pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    let z = (x - mean)?.broadcast_div(&log_sigma.exp()?)?;
    let per = ((z.sqr()? * -0.5)?.broadcast_sub(log_sigma)? - half_log_two_pi)?;
    let b = per.dim(0)?;
    Ok(per.reshape((b, ()))?.sum(1)?)
}

impl Vae {
    /// A freshly initialised f32 VAE, its weights drawn from `rng`.
    pub fn new(config: &VaeConfig, device: &Device, rng: &mut dyn rand::RngCore) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised VAE of the given dtype (f64 for gradient checks). The same seed
    /// gives the same weights in every dtype.
    pub fn with_dtype(
        config: &VaeConfig,
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
        let w = &config.widths;
        let levels = w.len();
        let mut down = Vec::with_capacity(levels);
        for i in 0..levels {
            let input = if i == 0 { config.channels } else { w[i - 1] };
            down.push(Conv::new(
                &mut init,
                &format!("encoder.down.{i}"),
                input,
                w[i],
                3,
                false,
            )?);
        }
        let enc_dense = Dense::new(
            &mut init,
            "encoder.dense",
            config.bottom_dim(),
            config.hidden,
            false,
        )?;
        let d = config.latent_dim;
        let mut groups = Vec::with_capacity(config.hierarchy.groups());
        for l in 0..config.hierarchy.groups() {
            let name = format!("groups.{l}");
            let posterior_in = if l == 0 {
                config.hidden
            } else {
                2 * config.hidden
            };
            let posterior = Dense::new(
                &mut init,
                &format!("{name}.posterior"),
                posterior_in,
                2 * d,
                false,
            )?;
            let prior = if l == 0 {
                None
            } else {
                Some(Dense::new(
                    &mut init,
                    &format!("{name}.prior"),
                    config.hidden,
                    2 * d,
                    false,
                )?)
            };
            let latent_in = Dense::new(
                &mut init,
                &format!("{name}.latent_in"),
                d,
                config.hidden,
                false,
            )?;
            groups.push(Group {
                posterior,
                prior,
                latent_in,
            });
        }
        let dec_dense = Dense::new(
            &mut init,
            "decoder.dense",
            config.hidden,
            config.bottom_dim(),
            false,
        )?;
        let mut up = Vec::with_capacity(levels);
        for i in (0..levels).rev() {
            let output = if i == 0 { config.channels } else { w[i - 1] };
            up.push(UpConv::new(
                &mut init,
                &format!("decoder.up.{i}"),
                w[i],
                output,
            )?);
        }
        let log_sigma = match config.likelihood {
            Likelihood::FixedGaussian { .. } => None,
            Likelihood::LearnedGaussian { init_sigma, .. } => {
                let shape = config.sample_shape();
                let t = (Tensor::ones(shape, dtype, device)? * init_sigma.ln())?;
                Some(init.params.add("decoder.log_sigma", &t)?)
            }
        };
        Ok(Self {
            config: config.clone(),
            params,
            down,
            enc_dense,
            groups,
            dec_dense,
            up,
            log_sigma,
            dtype,
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.down[0].raw_weight().device()
    }

    /// A copy for sampling and scoring: every weight detached, no parameters. Gradients with
    /// respect to the input or to `eps` still flow through it; parameter gradients are never
    /// computed.
    pub fn frozen(&self) -> Result<Self> {
        Ok(Self {
            config: self.config.clone(),
            params: ParamStore::new(),
            down: self
                .down
                .iter()
                .map(|c| c.frozen())
                .collect::<ebm_nn::Result<_>>()?,
            enc_dense: self.enc_dense.frozen()?,
            groups: self
                .groups
                .iter()
                .map(|g| {
                    Ok(Group {
                        posterior: g.posterior.frozen()?,
                        prior: g.prior.as_ref().map(|p| p.frozen()).transpose()?,
                        latent_in: g.latent_in.frozen()?,
                    })
                })
                .collect::<Result<_>>()?,
            dec_dense: self.dec_dense.frozen()?,
            up: self.up.iter().map(|u| u.frozen()).collect(),
            log_sigma: self.log_sigma.as_ref().map(|t| t.detach()),
            dtype: self.dtype,
        })
    }

    /// True for a copy made by [`Vae::frozen`] (it has no parameters to train or save).
    pub fn is_frozen(&self) -> bool {
        self.params.is_empty()
    }

    fn act(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.config.activation.apply(x)?)
    }

    fn check_images(&self, x: &Tensor, what: &str) -> Result<usize> {
        Ok(validate::check_batch_shape(
            x,
            &self.config.sample_shape(),
            what,
        )?)
    }

    fn check_eps_z(&self, eps_z: &Tensor, batch: Option<usize>) -> Result<usize> {
        let b = validate::check_batch_shape(eps_z, &[self.config.total_latent_dim()], "eps_z")?;
        if let Some(expected) = batch {
            if b != expected {
                return Err(ebm_core::Error::Shape {
                    what: "eps_z".into(),
                    expected: format!("[{expected}, {}]", self.config.total_latent_dim()),
                    got: eps_z.dims().to_vec(),
                }
                .into());
            }
        }
        Ok(b)
    }

    /// The encoder's feature vector `e` of images `x [B, C, H, W]`, shape `[B, hidden]`.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.check_images(x, "VAE input")?;
        let mut a = x.clone();
        for conv in &self.down {
            a = ebm_ops::avg_pool2x2(&self.act(&conv.forward(&a)?)?)?;
        }
        let flat = a.reshape((b, self.config.bottom_dim()))?;
        self.act(&self.enc_dense.forward(&flat)?)
    }

    /// The prior's mean and log-variance of group `l` given the top-down state (`None` for the
    /// first group: a standard normal).
    fn prior_params(&self, l: usize, h: Option<&Tensor>) -> Result<Option<(Tensor, Tensor)>> {
        match (&self.groups[l].prior, h) {
            (Some(prior), Some(h)) => {
                let (mu, lv) = halves(&prior.forward(&self.act(h)?)?)?;
                Ok(Some((mu, soft_clamp(&lv, LOGVAR_BOUND)?)))
            }
            _ => Ok(None),
        }
    }

    fn add_group(&self, l: usize, h: Option<Tensor>, z: &Tensor) -> Result<Tensor> {
        let contribution = self.groups[l].latent_in.forward(z)?;
        Ok(match h {
            None => contribution,
            Some(h) => (h + contribution)?,
        })
    }

    /// The top-down pass of the posterior: the final state `h_G`, the latents and the KL
    /// divergence of each group. With `eps` (`[B, total_latent_dim]`) each `z_l` is the
    /// reparameterised sample `mu_q + sigma_q eps_l`; without, the posterior mean.
    fn posterior(&self, e: &Tensor, eps: Option<&Tensor>) -> Result<(Tensor, Vec<Tensor>)> {
        let d = self.config.latent_dim;
        let mut h: Option<Tensor> = None;
        let mut kls = Vec::with_capacity(self.groups.len());
        for (l, group) in self.groups.iter().enumerate() {
            let prior = self.prior_params(l, h.as_ref())?;
            let input = match &h {
                None => e.clone(),
                Some(h) => Tensor::cat(&[e, h], 1)?,
            };
            let (dmu, dlv) = halves(&group.posterior.forward(&input)?)?;
            let (mu_q, lv_q, kl) = match &prior {
                None => {
                    let lv_q = soft_clamp(&dlv, LOGVAR_BOUND)?;
                    let kl = kl_standard_normal(&dmu, &lv_q)?;
                    (dmu, lv_q, kl)
                }
                Some((mu_p, lv_p)) => {
                    let mu_q = (mu_p + dmu)?;
                    let lv_q = soft_clamp(&(lv_p + dlv)?, LOGVAR_BOUND)?;
                    let kl = kl_normal(&mu_q, &lv_q, mu_p, lv_p)?;
                    (mu_q, lv_q, kl)
                }
            };
            let z = match eps {
                Some(eps) => (mu_q + ((lv_q * 0.5)?.exp()? * eps.narrow(1, l * d, d)?)?)?,
                None => mu_q,
            };
            kls.push(kl);
            h = Some(self.add_group(l, h, &z)?);
        }
        Ok((h.expect("at least one group"), kls))
    }

    /// The top-down state `h_G` of the generative model for `eps_z [B, total_latent_dim]`:
    /// `z_1 = eps_1`, `z_l = mu_p(z_<l) + sigma_p(z_<l) eps_l`.
    pub fn latent_state(&self, eps_z: &Tensor) -> Result<Tensor> {
        self.check_eps_z(eps_z, None)?;
        let d = self.config.latent_dim;
        let mut h: Option<Tensor> = None;
        for l in 0..self.groups.len() {
            let eps = eps_z.narrow(1, l * d, d)?;
            let z = match self.prior_params(l, h.as_ref())? {
                None => eps,
                Some((mu, lv)) => (mu + ((lv * 0.5)?.exp()? * eps)?)?,
            };
            h = Some(self.add_group(l, h, &z)?);
        }
        Ok(h.expect("at least one group"))
    }

    /// The decoder's mean `[B, C, H, W]` (in (0, 1)) for a top-down state `h [B, hidden]`.
    pub fn decode_state(&self, h: &Tensor) -> Result<Tensor> {
        let b = validate::check_batch_shape(h, &[self.config.hidden], "VAE top-down state")?;
        let s = self.config.bottom_size();
        let top = self.config.widths[self.config.widths.len() - 1];
        let mut a = self
            .act(&self.dec_dense.forward(&self.act(h)?)?)?
            .reshape((b, top, s, s))?;
        let last = self.up.len() - 1;
        for (i, up) in self.up.iter().enumerate() {
            a = up.forward(&a)?;
            if i < last {
                a = self.act(&a)?;
            }
        }
        sigmoid(&a)
    }

    /// The decoder's mean for `eps_z`: the VAE's sample without pixel noise.
    pub fn decode_eps(&self, eps_z: &Tensor) -> Result<Tensor> {
        self.decode_state(&self.latent_state(eps_z)?)
    }

    /// The log standard deviation of `p(x | z)`, shape `[C, H, W]` (bounded below by
    /// `ln(min_sigma)` when learned).
    pub fn log_sigma_x(&self) -> Result<Tensor> {
        match (&self.config.likelihood, &self.log_sigma) {
            (Likelihood::LearnedGaussian { min_sigma, .. }, Some(t)) => {
                Ok(t.maximum(min_sigma.ln())?)
            }
            (Likelihood::FixedGaussian { sigma }, _) => Ok((Tensor::ones(
                self.config.sample_shape(),
                self.dtype,
                self.device(),
            )? * sigma.ln())?),
            _ => Err(Error::config(
                "VAE",
                "a learned likelihood without its log_sigma parameter",
            )),
        }
    }

    /// The standard deviation of `p(x | z)`, shape `[C, H, W]`.
    pub fn sigma_x(&self) -> Result<Tensor> {
        Ok(self.log_sigma_x()?.exp()?)
    }

    /// The reparameterised sample `x = T(eps_z, eps_x) = mean(z(eps_z)) + sigma_x * eps_x`,
    /// `eps_z [B, total_latent_dim]`, `eps_x [B, C, H, W]`. Differentiable with respect to both.
    pub fn transform(&self, eps_z: &Tensor, eps_x: &Tensor) -> Result<Tensor> {
        let b = self.check_images(eps_x, "eps_x")?;
        self.check_eps_z(eps_z, Some(b))?;
        let mean = self.decode_eps(eps_z)?;
        Ok((mean + eps_x.broadcast_mul(&self.sigma_x()?)?)?)
    }

    /// `log p(x | z)` of images `x` under the decoder mean `mean`, shape `[B]`.
    pub fn log_likelihood(&self, x: &Tensor, mean: &Tensor) -> Result<Tensor> {
        gaussian_log_likelihood(x, mean, &self.log_sigma_x()?)
    }

    /// The ELBO of images `x [B, C, H, W]` with the posterior noise `eps [B, total_latent_dim]`
    /// given: deterministic, differentiable with respect to `x`, `eps` and the parameters.
    pub fn elbo_with_eps(&self, x: &Tensor, eps: &Tensor) -> Result<Elbo> {
        let b = self.check_images(x, "VAE input")?;
        self.check_eps_z(eps, Some(b))?;
        let e = self.encode(x)?;
        let (h, kl_groups) = self.posterior(&e, Some(eps))?;
        let mean = self.decode_state(&h)?;
        let log_likelihood = self.log_likelihood(x, &mean)?;
        let mut kl = kl_groups[0].clone();
        for k in &kl_groups[1..] {
            kl = (kl + k)?;
        }
        Ok(Elbo {
            elbo: (&log_likelihood - &kl)?,
            log_likelihood,
            kl,
            kl_groups,
            mean,
        })
    }

    /// The single-sample ELBO of `x`, its posterior noise drawn from `rng`.
    pub fn elbo<R: rand::Rng + ?Sized>(&self, x: &Tensor, rng: &mut R) -> Result<Elbo> {
        let b = self.check_images(x, "VAE input")?;
        let eps = ebm_core::noise::normal(
            rng,
            (b, self.config.total_latent_dim()),
            x.dtype(),
            x.device(),
        )?;
        self.elbo_with_eps(x, &eps)
    }

    /// The ELBO of `x` averaged over `samples` posterior draws (detached, `[B]`), computed
    /// `chunk` images at a time: the estimate of `log p_VAE(x)` used to score images.
    pub fn elbo_estimate<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        samples: usize,
        chunk: usize,
        rng: &mut R,
    ) -> Result<Tensor> {
        validate::at_least_one("ELBO samples", samples)?;
        validate::at_least_one("ELBO chunk", chunk)?;
        let b = self.check_images(x, "VAE input")?;
        validate::check_finite(x, "VAE input")?;
        let mut parts = Vec::with_capacity(b.div_ceil(chunk));
        for start in (0..b).step_by(chunk) {
            let xb = x.narrow(0, start, chunk.min(b - start))?.detach();
            let mut total: Option<Tensor> = None;
            for _ in 0..samples {
                let e = self.elbo(&xb, rng)?.elbo.detach();
                total = Some(match total {
                    None => e,
                    Some(t) => (t + e)?,
                });
            }
            parts.push((total.expect("at least one sample") / samples as f64)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Reconstructions of `x`: the decoder mean at the posterior means of every group.
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let e = self.encode(x)?;
        let (h, _) = self.posterior(&e, None)?;
        self.decode_state(&h)
    }
}

impl Trainable for Vae {
    fn params(&self) -> &ParamStore {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.params
    }

    fn update_spectral_norm(&mut self) -> ebm_nn::Result<()> {
        Ok(())
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    fn set_buffers(
        &mut self,
        _buffers: &std::collections::HashMap<String, Tensor>,
    ) -> ebm_nn::Result<()> {
        Ok(())
    }
}

impl ebm_nn::checkpoint::Checkpoint for Vae {
    type Config = VaeConfig;
    const KIND: &'static str = "vaebm-vae";

    fn checkpoint_config(&self) -> &VaeConfig {
        &self.config
    }

    fn build(config: &VaeConfig, device: &Device) -> ebm_nn::Result<Self> {
        Vae::new(config, device, &mut ebm_core::seeded_rng(0))
            .map_err(|e| ebm_nn::Error::Config(e.to_string()))
    }
}
