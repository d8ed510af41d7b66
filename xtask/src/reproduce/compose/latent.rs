//! The space the compose experiments sample in: a scene VAE trained once without labels, and
//! concept energies `E(z | c)` over its latent code, each trained on its own by short-run
//! contrastive divergence. Chains run in the latent space; their end points are decoded to
//! images, which the judges read.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use ebm_compose::VectorConditioned;
use ebm_core::{noise, Energy, LabelledEnergy, Rng};
use ebm_latent::{Generator, GeneratorConfig};
use ebm_mcmc::{Langevin, LangevinConfig};
use ebm_nn::{Activation, Classifier, ClassifierConfig, Mlp, MlpConfig, ParamStore, Trainable};
use ebm_train::{Adam, AdamConfig, StepLog};
use serde::{Deserialize, Serialize};

/// How the scene VAE is built and trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderRecipe {
    /// The size of the latent code `z`.
    pub latent_dim: usize,
    /// Convolution widths of the encoder.
    pub encoder_widths: Vec<usize>,
    /// Feature width of the encoder.
    pub encoder_features: usize,
    /// The decoder's base width (a DCGAN-style generator, `ebm_latent::Generator`).
    pub decoder_width: usize,
    /// Adam steps.
    pub iterations: usize,
    /// Scenes per step.
    pub batch_size: usize,
    /// Adam's learning rate, held for the first half of the steps and then brought down
    /// linearly to a tenth of it at the last step.
    pub lr: f64,
    /// Weight of the KL term against the summed squared error of the pixels in [-1, 1].
    pub kl_weight: f64,
    /// The smallest standard deviation the posterior may have in any dimension (0: no floor
    /// beyond numerical safety). Training decodes every code of a ball this wide around each
    /// scene's mean to that scene, so that the codes chains end at near a scene decode to it
    /// rather than to something between scenes.
    pub min_posterior_std: f64,
}

impl AutoencoderRecipe {
    /// The learning rate of step `step` (1-based).
    pub fn lr_at(&self, step: usize) -> f64 {
        held_then_falling(self.lr, step, self.iterations)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.latent_dim == 0 || self.batch_size == 0 || self.decoder_width == 0 {
            anyhow::bail!(
                "autoencoder latent_dim, batch_size and decoder_width must be at least 1, got {}, {} and {}",
                self.latent_dim,
                self.batch_size,
                self.decoder_width
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            anyhow::bail!("autoencoder lr must be a positive number, got {}", self.lr);
        }
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) {
            anyhow::bail!(
                "autoencoder kl_weight must be a number >= 0, got {}",
                self.kl_weight
            );
        }
        if !(self.min_posterior_std >= 0.0 && self.min_posterior_std.is_finite()) {
            anyhow::bail!(
                "autoencoder min_posterior_std must be a number >= 0, got {}",
                self.min_posterior_std
            );
        }
        Ok(())
    }
}

/// `lr` for the first half of `iterations` steps, then down linearly to a tenth of it at the
/// last step (`step` is 1-based).
pub fn held_then_falling(lr: f64, step: usize, iterations: usize) -> f64 {
    let t = step as f64 / iterations.max(1) as f64;
    let fall = ((t - 0.5) / 0.5).clamp(0.0, 1.0);
    lr * (1.0 - 0.9 * fall)
}

/// Contrastive-divergence steps of each concept energy: the concepts train side by side, one
/// per core, so steps the easy concepts do not need can go to the hard ones at no cost in
/// wall time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptIterations {
    /// The shape energy's steps.
    pub shape: usize,
    /// The colour energy's steps.
    pub color: usize,
    /// The size energy's steps.
    pub size: usize,
    /// The position energy's steps.
    pub position: usize,
    /// The steps of the energy of shape and colour jointly (the held-out baseline).
    pub joint: usize,
}

impl ConceptIterations {
    /// The same number of steps for every concept.
    pub fn all(steps: usize) -> Self {
        Self {
            shape: steps,
            color: steps,
            size: steps,
            position: steps,
            joint: steps,
        }
    }

    /// The steps of all concepts together.
    pub fn total(&self) -> usize {
        self.shape + self.color + self.size + self.position + self.joint
    }
}

/// How every concept energy is built and trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConceptRecipe {
    /// Hidden widths of the MLP over `[z, condition features]`.
    pub hidden: Vec<usize>,
    /// Contrastive-divergence steps of each concept.
    pub iterations: ConceptIterations,
    /// Latent codes per step.
    pub batch_size: usize,
    /// Adam's learning rate, held for the first half of the steps and then brought down
    /// linearly to a tenth of it at the last step.
    pub lr: f64,
    /// Adam's first-moment decay (IGEBM trains with 0).
    pub adam_beta1: f64,
    /// Weight of the energy regulariser `mean E(z+)^2 + mean E(z-)^2`.
    pub l2_coeff: f64,
    /// Weight `w` of the Gaussian reference term `w |z|^2 / 2` in every energy.
    pub prior_weight: f64,
    /// Sine and cosine frequencies `2^k pi` (`k < frequencies`) of each position coordinate
    /// given to the position energy beside the coordinate itself.
    pub position_frequencies: usize,
    /// Weight of the conditional term `-log p(c | z)` of each data code, `p(c | z)` the softmax
    /// of `-E(z | c)` over the distinct conditions of the batch (hybrid training in the manner
    /// of JEM, Grathwohl et al. 2020): it teaches the energy which condition a code belongs to,
    /// which contrastive divergence alone learns only slowly. 0 turns it off.
    pub conditional_weight: f64,
    /// The most distinct conditions the conditional term compares (at least 2): codes of the
    /// batch whose condition is not among its first `conditional_candidates` distinct ones
    /// are left out of it. Classes are fewer than this; positions are all distinct, and a
    /// 64 x 64 comparison made the position concept the slowest to train.
    pub conditional_candidates: usize,
    /// Scenes drawn and encoded once, before the concepts train; every step draws its batch
    /// of codes from them, with replacement (each concept from the scenes its training
    /// distribution could have drawn). Encoding a fresh batch of 64 scenes at every step cost
    /// about twice the rest of a shape step (measured: 32 ms against 15 ms on one thread).
    pub code_pool: usize,
    /// Standardise the latent codes per dimension (by the posterior means of 2,048 scenes
    /// the VAE saw) before the energies see them.
    pub standardise_codes: bool,
    /// Where the chains start, in training and in the experiments.
    pub chain_start: ChainStart,
    /// The sampler of negatives.
    pub langevin: LangevinConfig,
}

/// Where the Langevin chains over latent codes start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainStart {
    /// Draws from `N(0, I)`.
    Noise,
    /// Codes of other scenes of the training distribution: in training, each negative chain
    /// starts from the code of another scene of the batch (the batch rolled by one), so the
    /// energy learns to move any scene's code to its condition; in the experiments, from codes
    /// of fresh scenes of the pairs the VAE saw.
    SceneCodes,
}

impl ConceptRecipe {
    fn check(&self) -> anyhow::Result<()> {
        if self.batch_size == 0 || self.hidden.contains(&0) {
            anyhow::bail!(
                "concept batch_size and hidden widths must be at least 1, got {} and {:?}",
                self.batch_size,
                self.hidden
            );
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            anyhow::bail!("concept lr must be a positive number, got {}", self.lr);
        }
        if self.code_pool < self.batch_size {
            anyhow::bail!(
                "concept code_pool must hold at least a batch ({} codes), got {}",
                self.batch_size,
                self.code_pool
            );
        }
        if self.conditional_candidates < 2 {
            anyhow::bail!(
                "concept conditional_candidates must be at least 2, got {}",
                self.conditional_candidates
            );
        }
        if !(0.0..1.0).contains(&self.adam_beta1) {
            anyhow::bail!(
                "concept adam_beta1 must be in [0, 1), got {}",
                self.adam_beta1
            );
        }
        for (name, v) in [
            ("l2_coeff", self.l2_coeff),
            ("conditional_weight", self.conditional_weight),
            ("prior_weight", self.prior_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                anyhow::bail!("concept {name} must be a number >= 0, got {v}");
            }
        }
        Langevin::new(self.langevin.clone())?;
        Ok(())
    }
}

/// Checks both recipes.
pub fn check(autoencoder: &AutoencoderRecipe, concept: &ConceptRecipe) -> anyhow::Result<()> {
    autoencoder.check()?;
    concept.check()
}

/// The decoder's tanh output `(-1, 1)` covers pixel values `[0, 1]` as `[-r, r]`, with
/// `r < 1`: a black background at exactly -1 would drive the tanh into saturation, where its
/// gradient vanishes and the decoder stops learning (measured: stuck at the all-black image).
const DECODER_RANGE: f64 = 0.8;

/// A VAE of scenes: a convolutional encoder to the mean and log-variance of `z`, and a
/// DCGAN-style decoder back to the image.
#[derive(Clone)]
pub struct SceneAutoencoder {
    encoder: Classifier,
    decoder: Generator,
    latent_dim: usize,
    /// The lower bound of the posterior's log-variance.
    min_logvar: f64,
    standardisation: Option<Standardisation>,
}

/// The per-dimension mean and standard deviation `[1, d]` of posterior means: codes outside
/// the VAE are `(mu - mean) / std`.
#[derive(Clone)]
struct Standardisation {
    mean: Tensor,
    std: Tensor,
}

/// The terms of the VAE's loss on one batch (means per scene).
pub struct AutoencoderLoss {
    /// The loss to minimise.
    pub loss: Tensor,
    /// Summed squared error of the pixels (in the decoder's range `[-0.8, 0.8]`).
    pub reconstruction: f64,
    /// KL divergence of the posterior from `N(0, I)`.
    pub kl: f64,
}

impl SceneAutoencoder {
    /// A freshly initialised VAE of `image_size` x `image_size` colour scenes.
    pub fn new(
        recipe: &AutoencoderRecipe,
        image_size: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> anyhow::Result<Self> {
        let encoder = Classifier::new(
            &ClassifierConfig {
                channels: 3,
                image_size,
                widths: recipe.encoder_widths.clone(),
                feature_dim: recipe.encoder_features,
                num_classes: 2 * recipe.latent_dim,
                global_pool: false,
            },
            device,
            rng,
        )?;
        let decoder = Generator::new(
            &GeneratorConfig {
                latent_dim: recipe.latent_dim,
                channels: 3,
                image_size,
                width: recipe.decoder_width,
            },
            device,
            rng,
        )?;
        Ok(Self {
            encoder,
            decoder,
            latent_dim: recipe.latent_dim,
            min_logvar: (2.0 * recipe.min_posterior_std.ln()).max(-10.0),
            standardisation: None,
        })
    }

    /// The size of the latent code.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// The posterior's mean and log-variance `[B, d]` each, for images in [0, 1].
    pub fn encode(&self, x: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
        let h = self.encoder.logits(&x.affine(2.0, -1.0)?)?;
        let mu = h.narrow(1, 0, self.latent_dim)?;
        let logvar = h
            .narrow(1, self.latent_dim, self.latent_dim)?
            .clamp(self.min_logvar, 5.0)?;
        Ok((mu, logvar))
    }

    /// The posterior means of a batch of images in [0, 1], in chunks, detached (standardised
    /// after [`SceneAutoencoder::standardised`]).
    pub fn encode_mean(&self, x: &Tensor) -> anyhow::Result<Tensor> {
        let n = x.dim(0)?;
        let mut out = Vec::new();
        for s in (0..n).step_by(256) {
            let (mu, _) = self.encode(&x.narrow(0, s, 256.min(n - s))?.detach())?;
            out.push(mu.detach());
        }
        let mu = Tensor::cat(&out, 0)?;
        Ok(match &self.standardisation {
            None => mu,
            Some(st) => mu.broadcast_sub(&st.mean)?.broadcast_div(&st.std)?,
        })
    }

    /// The same VAE with codes standardised per dimension by the mean and standard deviation
    /// of the posterior means of `images` (at least two), so that the codes the energies see
    /// are centred where their `|z|^2 / 2` term is and spread alike in every direction, as
    /// one step size for every dimension assumes.
    pub fn standardised(&self, images: &Tensor) -> anyhow::Result<Self> {
        if images.dim(0)? < 2 {
            anyhow::bail!("standardising the latent codes needs at least 2 images");
        }
        let plain = Self {
            standardisation: None,
            ..self.clone()
        };
        let mu = plain.encode_mean(images)?;
        let mean = mu.mean_keepdim(0)?;
        let std = mu
            .broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(0)?
            .sqrt()?
            .clamp(1e-4, f64::INFINITY)?;
        Ok(Self {
            standardisation: Some(Standardisation { mean, std }),
            ..plain
        })
    }

    /// The smallest and largest per-dimension standard deviation of the raw codes, once
    /// standardised.
    pub fn code_std_range(&self) -> anyhow::Result<Option<(f64, f64)>> {
        let Some(st) = &self.standardisation else {
            return Ok(None);
        };
        let v = st.std.flatten_all()?.to_vec1::<f32>()?;
        let min = v.iter().copied().fold(f32::INFINITY, f32::min) as f64;
        let max = v.iter().copied().fold(0f32, f32::max) as f64;
        Ok(Some((min, max)))
    }

    /// The images of latent codes `z [B, d]`, in [0, 1].
    pub fn decode(&self, z: &Tensor) -> anyhow::Result<Tensor> {
        let z = match &self.standardisation {
            None => z.clone(),
            Some(st) => z.broadcast_mul(&st.std)?.broadcast_add(&st.mean)?,
        };
        let g = self.decoder.forward(&z)?;
        Ok(g.affine(0.5 / DECODER_RANGE, 0.5)?.clamp(0.0, 1.0)?)
    }

    /// The negative ELBO (up to constants, with the KL weighted) of images in [0, 1], with
    /// the reparameterisation noise `eps [B, d]`.
    pub fn loss(
        &self,
        x: &Tensor,
        eps: &Tensor,
        kl_weight: f64,
    ) -> anyhow::Result<AutoencoderLoss> {
        let (mu, logvar) = self.encode(x)?;
        let z = (&mu + (logvar.affine(0.5, 0.0)?.exp()? * eps)?)?;
        let target = x.affine(2.0 * DECODER_RANGE, -DECODER_RANGE)?;
        let b = x.dim(0)? as f64;
        let diff = (self.decoder.forward(&z)? - target)?;
        let reconstruction = diff.sqr()?.sum_all()?.affine(1.0 / b, 0.0)?;
        let kl = ebm_vaebm::kl_standard_normal(&mu, &logvar)?.mean_all()?;
        let loss = (&reconstruction + kl.affine(kl_weight, 0.0)?)?;
        Ok(AutoencoderLoss {
            loss,
            reconstruction: reconstruction.to_scalar::<f32>()? as f64,
            kl: kl.to_scalar::<f32>()? as f64,
        })
    }

    /// A copy for decoding and encoding only: the decoder's weights detached, so that chains
    /// through it would differentiate with respect to `z` alone.
    pub fn frozen(&self) -> anyhow::Result<Self> {
        Ok(Self {
            encoder: self.encoder.clone(),
            decoder: self.decoder.frozen(),
            latent_dim: self.latent_dim,
            min_logvar: self.min_logvar,
            standardisation: self.standardisation.clone(),
        })
    }

    /// Writes the weights (`encoder.*`, `decoder.*`) to a safetensors file.
    pub fn save(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut tensors = HashMap::new();
        for (prefix, params) in [
            ("encoder", self.encoder.params()),
            ("decoder", self.decoder.params()),
        ] {
            for (name, var) in params.iter() {
                tensors.insert(format!("{prefix}.{name}"), var.as_tensor().clone());
            }
        }
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
    }

    /// Every trainable variable, encoder first.
    pub fn vars(&self) -> Vec<Var> {
        let mut vars = self.encoder.params().vars();
        vars.extend(self.decoder.params().vars());
        vars
    }

    /// The encoder, to save and restore.
    pub fn encoder_mut(&mut self) -> &mut Classifier {
        &mut self.encoder
    }

    /// The decoder, to save and restore.
    pub fn decoder_mut(&mut self) -> &mut Generator {
        &mut self.decoder
    }

    /// The encoder.
    pub fn encoder(&self) -> &Classifier {
        &self.encoder
    }

    /// The decoder.
    pub fn decoder(&self) -> &Generator {
        &self.decoder
    }
}

/// What a concept energy is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    /// One of `k` classes, given as a one-hot vector.
    Classes(usize),
    /// A position `(x, y)` in the unit square, given with sines and cosines of it.
    Position {
        /// Frequencies `2^k pi`, `k < frequencies`.
        frequencies: usize,
    },
}

impl ConditionKind {
    /// The length of the condition's feature vector.
    pub fn feature_dim(self) -> usize {
        match self {
            ConditionKind::Classes(k) => k,
            ConditionKind::Position { frequencies } => 2 + 4 * frequencies,
        }
    }
}

/// A conditional energy over latent codes: `E(z | c) = f([z, phi(c)]) + w |z|^2 / 2`, `f` an
/// MLP and `phi(c)` the condition's features (one-hot classes, or a position with its sines
/// and cosines).
#[derive(Clone)]
pub struct LatentConcept {
    mlp: Mlp,
    kind: ConditionKind,
    latent_dim: usize,
    prior_weight: f64,
}

impl LatentConcept {
    /// A freshly initialised energy over `latent_dim`-dimensional codes.
    pub fn new(
        kind: ConditionKind,
        latent_dim: usize,
        recipe: &ConceptRecipe,
        device: &Device,
        rng: &mut Rng,
    ) -> anyhow::Result<Self> {
        let mlp = Mlp::new(
            &MlpConfig {
                input_dim: latent_dim + kind.feature_dim(),
                hidden: recipe.hidden.clone(),
                activation: Activation::Swish,
                spectral_norm: false,
            },
            device,
            rng,
        )?;
        Ok(Self {
            mlp,
            kind,
            latent_dim,
            prior_weight: recipe.prior_weight,
        })
    }

    /// The MLP, to save.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// What the energy is conditioned on.
    pub fn kind(&self) -> ConditionKind {
        self.kind
    }

    /// One-hot features `[B, k]` of class labels `[B]`.
    pub fn class_features(&self, labels: &Tensor) -> ebm_core::Result<Tensor> {
        let ConditionKind::Classes(k) = self.kind else {
            return Err(ebm_core::Error::invalid(
                "condition",
                "the position concept takes (x, y), not a class",
            ));
        };
        let labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut values = vec![0f32; labels.len() * k];
        for (i, &l) in labels.iter().enumerate() {
            if l as usize >= k {
                return Err(ebm_core::Error::invalid(
                    "labels",
                    format!("class {l} is out of range for a concept of {k} classes"),
                ));
            }
            values[i * k + l as usize] = 1.0;
        }
        Ok(Tensor::from_vec(values, (labels.len(), k), &Device::Cpu)?)
    }

    /// Features `[B, 2 + 4F]` of positions `[B, 2]`: `x, y`, then `sin, cos (2^k pi x)` and the
    /// same of `y` for `k < F`.
    pub fn position_features(&self, positions: &Tensor) -> ebm_core::Result<Tensor> {
        let ConditionKind::Position { frequencies } = self.kind else {
            return Err(ebm_core::Error::invalid(
                "condition",
                "a class concept takes a class, not (x, y)",
            ));
        };
        let rows = positions.to_dtype(DType::F64)?.to_vec2::<f64>()?;
        let dim = self.kind.feature_dim();
        let mut values = Vec::with_capacity(rows.len() * dim);
        for r in &rows {
            if r.len() != 2 {
                return Err(ebm_core::Error::invalid(
                    "condition",
                    format!("a position is (x, y), got {} numbers", r.len()),
                ));
            }
            values.extend([r[0] as f32, r[1] as f32]);
            for k in 0..frequencies {
                let w = std::f64::consts::PI * (1u64 << k) as f64;
                for &v in &r[..2] {
                    values.extend([(w * v).sin() as f32, (w * v).cos() as f32]);
                }
            }
        }
        Ok(Tensor::from_vec(values, (rows.len(), dim), &Device::Cpu)?)
    }

    /// Energies `[B]` of codes `z [B, d]` under condition features `[B, F]`.
    pub fn energy(&self, z: &Tensor, features: &Tensor) -> ebm_core::Result<Tensor> {
        let input = self.input(z, features)?;
        let prior = (z.sqr()?.sum(1)? * (0.5 * self.prior_weight))?;
        Ok((self.mlp.energy(&input)? + prior)?)
    }

    /// Energies `[B]` and their gradients `[B, d]` with respect to the codes `z [B, d]` under
    /// condition features `[B, F]`. A frozen concept on the CPU takes the MLP's fused pass
    /// (`ebm_nn::Mlp`'s `energy_and_grad`) instead of autograd: what every Langevin step of
    /// training and of the experiments costs.
    pub fn energy_and_grad(
        &self,
        z: &Tensor,
        features: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        let input = self.input(z, features)?;
        let (e, g) = self.mlp.energy_and_grad(&input)?;
        let w = self.prior_weight;
        let prior = (z.sqr()?.sum(1)? * (0.5 * w))?;
        let grad = (g.narrow(1, 0, self.latent_dim)? + (z * w)?)?;
        Ok(((e + prior)?, grad))
    }

    /// `[z, features]` `[B, d + F]`, once the codes' shape is checked.
    fn input(&self, z: &Tensor, features: &Tensor) -> ebm_core::Result<Tensor> {
        let dims = z.dims();
        if dims.len() != 2 || dims[1] != self.latent_dim {
            return Err(ebm_core::Error::Shape {
                what: "latent codes".into(),
                expected: format!("[batch, {}]", self.latent_dim),
                got: dims.to_vec(),
            });
        }
        let features = features.to_device(z.device())?.to_dtype(z.dtype())?;
        Ok(Tensor::cat(&[z, &features], 1)?)
    }

    /// How often the energy itself reads the class of codes `z [B, d]` right: the share of
    /// codes whose lowest-energy class `argmin_c E(z | c)` is their label `[B]`. A ceiling on
    /// what its samples can show: a class the energy cannot tell apart on the data's codes it
    /// cannot draw either.
    pub fn code_accuracy(&self, z: &Tensor, labels: &[u32]) -> anyhow::Result<f64> {
        let ConditionKind::Classes(k) = self.kind else {
            anyhow::bail!("code_accuracy reads classes; the position concept has none");
        };
        let b = z.dim(0)?;
        if labels.len() != b || b == 0 {
            anyhow::bail!("code_accuracy: {b} codes but {} labels", labels.len());
        }
        let classes = Tensor::arange(0u32, k as u32, &Device::Cpu)?;
        let lowest = self
            .energies_against(z, &self.class_features(&classes)?)?
            .argmin(1)?
            .to_vec1::<u32>()?;
        let right = lowest.iter().zip(labels).filter(|(a, b)| a == b).count();
        Ok(right as f64 / b as f64)
    }

    /// The energies `[B, M]` of every code of `z [B, d]` under every condition of
    /// `candidates [M, F]` (condition features), in one pass.
    pub fn energies_against(&self, z: &Tensor, candidates: &Tensor) -> ebm_core::Result<Tensor> {
        let (b, d) = z.dims2()?;
        let (m, f) = candidates.dims2()?;
        let zs = z
            .unsqueeze(1)?
            .broadcast_as((b, m, d))?
            .reshape((b * m, d))?;
        let cs = candidates
            .to_device(z.device())?
            .unsqueeze(0)?
            .broadcast_as((b, m, f))?
            .reshape((b * m, f))?;
        Ok(self.energy(&zs, &cs)?.reshape((b, m))?)
    }

    /// A detached copy for sampling.
    pub fn frozen(&self) -> ebm_core::Result<Self> {
        Ok(Self {
            mlp: self
                .mlp
                .frozen()
                .map_err(|e| ebm_core::Error::invalid("concept energy", e.to_string()))?,
            ..self.clone()
        })
    }
}

/// Everything trainable is the MLP's.
impl Trainable for LatentConcept {
    fn params(&self) -> &ParamStore {
        self.mlp.params()
    }
    fn params_mut(&mut self) -> &mut ParamStore {
        self.mlp.params_mut()
    }
    fn update_spectral_norm(&mut self) -> ebm_nn::Result<()> {
        self.mlp.update_spectral_norm()
    }
    fn buffers(&self) -> Vec<(String, Tensor)> {
        self.mlp.buffers()
    }
    fn set_buffers(&mut self, buffers: &HashMap<String, Tensor>) -> ebm_nn::Result<()> {
        self.mlp.set_buffers(buffers)
    }
}

impl LabelledEnergy for LatentConcept {
    fn energy_given(&self, z: &Tensor, labels: &Tensor) -> ebm_core::Result<Tensor> {
        self.energy(z, &self.class_features(labels)?)
    }
    fn energy_and_grad_given(
        &self,
        z: &Tensor,
        labels: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_grad(z, &self.class_features(labels)?)
    }
    fn num_classes(&self) -> usize {
        match self.kind {
            ConditionKind::Classes(k) => k,
            ConditionKind::Position { .. } => 0,
        }
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![self.latent_dim])
    }
}

impl VectorConditioned for LatentConcept {
    fn energy_given_vector(&self, z: &Tensor, condition: &Tensor) -> ebm_core::Result<Tensor> {
        self.energy(z, &self.position_features(condition)?)
    }
    fn energy_and_grad_given_vector(
        &self,
        z: &Tensor,
        condition: &Tensor,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_grad(z, &self.position_features(condition)?)
    }
    fn condition_dim(&self) -> usize {
        2
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![self.latent_dim])
    }
}

/// A concept energy with one condition per sample bound: what the training chains sample.
struct Bound<'a> {
    concept: &'a LatentConcept,
    features: Tensor,
}

impl Energy for Bound<'_> {
    fn energy(&self, z: &Tensor) -> ebm_core::Result<Tensor> {
        self.concept.energy(z, &self.features)
    }
    fn energy_and_grad(&self, z: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        self.concept.energy_and_grad(z, &self.features)
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![self.concept.latent_dim])
    }
}

/// Short-run contrastive divergence for one concept energy.
pub struct ConceptTrainer {
    concept: LatentConcept,
    adam: Adam,
    sampler: Langevin,
    chain_start: ChainStart,
    conditional_weight: f64,
    conditional_candidates: usize,
    l2_coeff: f64,
    lr: f64,
    iterations: usize,
    history: Vec<StepLog>,
}

impl ConceptTrainer {
    /// A trainer of `concept` under `recipe`, for `iterations` steps (the learning rate's
    /// schedule).
    pub fn new(
        concept: LatentConcept,
        recipe: &ConceptRecipe,
        iterations: usize,
    ) -> anyhow::Result<Self> {
        let adam = Adam::new(
            concept.params().vars(),
            AdamConfig {
                beta1: recipe.adam_beta1,
                ..AdamConfig::kingma_ba(recipe.lr)
            },
        )?;
        Ok(Self {
            concept,
            adam,
            sampler: Langevin::new(recipe.langevin.clone())?,
            chain_start: recipe.chain_start,
            conditional_weight: recipe.conditional_weight,
            conditional_candidates: recipe.conditional_candidates,
            l2_coeff: recipe.l2_coeff,
            lr: recipe.lr,
            iterations,
            history: Vec::new(),
        })
    }

    /// One step on codes of data `positives [B, d]` with their condition features `[B, F]`:
    /// negatives are chains under the same conditions, started where the recipe's
    /// [`ChainStart`] says.
    pub fn step(
        &mut self,
        positives: &Tensor,
        features: &Tensor,
        rng: &mut Rng,
    ) -> anyhow::Result<StepLog> {
        let start = std::time::Instant::now();
        let b = positives.dim(0)?;
        let frozen = self.concept.frozen()?;
        let bound = Bound {
            concept: &frozen,
            features: features.clone(),
        };
        let z0 = match self.chain_start {
            ChainStart::Noise => noise::normal_like(rng, positives)?,
            ChainStart::SceneCodes if b > 1 => Tensor::cat(
                &[positives.narrow(0, 1, b - 1)?, positives.narrow(0, 0, 1)?],
                0,
            )?,
            ChainStart::SceneCodes => positives.clone(),
        };
        let run = self.sampler.run(&bound, &z0, rng)?;
        let negatives = run.samples.detach();
        let z = Tensor::cat(&[positives, &negatives], 0)?;
        let f = Tensor::cat(&[features, features], 0)?;
        let e = self.concept.energy(&z, &f)?;
        let (e_pos, e_neg) = (e.narrow(0, 0, b)?, e.narrow(0, b, b)?);
        let reg = (e_pos.sqr()?.mean_all()? + e_neg.sqr()?.mean_all()?)?;
        let mut loss = ((e_pos.mean_all()? - e_neg.mean_all()?)? + (reg * self.l2_coeff)?)?;
        if self.conditional_weight > 0.0 {
            let nll = conditional_nll(
                &self.concept,
                positives,
                features,
                self.conditional_candidates,
            )?;
            loss = (loss + (nll * self.conditional_weight)?)?;
        }
        let loss_value = loss.to_scalar::<f32>()? as f64;
        let step = self.history.len() + 1;
        if !loss_value.is_finite() {
            anyhow::bail!("concept training diverged at step {step}: the loss is {loss_value}");
        }
        self.adam
            .set_lr(held_then_falling(self.lr, step, self.iterations))?;
        let grad_norm = self.adam.step(&loss.backward()?)?;
        let log = StepLog {
            step,
            loss: loss_value,
            energy_pos: e_pos.mean_all()?.to_scalar::<f32>()? as f64,
            energy_neg: e_neg.mean_all()?.to_scalar::<f32>()? as f64,
            grad_norm,
            seconds_per_sampler_step: run.seconds_per_step,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Weights, Adam's state and the log into `snapshot`.
    pub fn save_state(&self, snapshot: &mut ebm_train::Snapshot) -> anyhow::Result<()> {
        snapshot.put_model("model", &self.concept)?;
        snapshot.put_adam("adam", &self.adam)?;
        snapshot.set_value("history", &self.history)?;
        Ok(())
    }

    /// Restores what [`ConceptTrainer::save_state`] saved.
    pub fn load_state(&mut self, snapshot: &ebm_train::Snapshot) -> anyhow::Result<()> {
        snapshot.restore_model("model", &mut self.concept)?;
        snapshot.restore_adam("adam", &mut self.adam)?;
        self.history = snapshot.value("history")?;
        Ok(())
    }

    /// The energy being trained.
    pub fn concept(&self) -> &LatentConcept {
        &self.concept
    }

    /// The log so far.
    pub fn history(&self) -> &[StepLog] {
        &self.history
    }

    /// The trained energy, detached.
    pub fn into_concept(self) -> anyhow::Result<LatentConcept> {
        Ok(self.concept.frozen()?)
    }
}

/// The mean of `-log p(c_i | z_i)` over codes `z [B, d]` and their condition features
/// `[B, F]`, where `p(c | z) = softmax(-E(z | c))` over the distinct rows of `features` (the
/// conditions present in the batch), at most `max_candidates` of them: codes whose condition
/// is not among the first `max_candidates` distinct rows are left out.
pub fn conditional_nll(
    concept: &LatentConcept,
    z: &Tensor,
    features: &Tensor,
    max_candidates: usize,
) -> anyhow::Result<Tensor> {
    let b = z.dim(0)?;
    let rows = features.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    if rows.len() != b {
        anyhow::bail!(
            "conditional_nll: {b} codes but {} condition rows",
            rows.len()
        );
    }
    let f = rows.first().map_or(0, Vec::len);
    let mut distinct: Vec<&[f32]> = Vec::new();
    let mut targets: Vec<u32> = Vec::with_capacity(b);
    let mut kept: Vec<u32> = Vec::with_capacity(b);
    for (i, r) in rows.iter().enumerate() {
        match distinct.iter().position(|c| *c == r.as_slice()) {
            Some(t) => targets.push(t as u32),
            None if distinct.len() < max_candidates.max(1) => {
                targets.push(distinct.len() as u32);
                distinct.push(r);
            }
            None => continue,
        }
        kept.push(i as u32);
    }
    let m = distinct.len();
    let device = z.device();
    let z = if kept.len() < b {
        let n = kept.len();
        z.index_select(&Tensor::from_vec(kept, n, device)?, 0)?
    } else {
        z.clone()
    };
    let b = z.dim(0)?;
    let candidates = Tensor::from_vec(distinct.concat(), (m, f), device)?;
    let logits = concept.energies_against(&z, &candidates)?.neg()?;
    let targets = Tensor::from_vec(targets, b, device)?;
    Ok(ebm_nn::cross_entropy(&logits, &targets)?)
}

/// Draws `n` starting codes from `N(0, I)`.
pub fn latent_noise(
    rng: &mut Rng,
    n: usize,
    dim: usize,
    device: &Device,
) -> anyhow::Result<Tensor> {
    Ok(noise::normal(rng, (n, dim), DType::F32, device)?)
}
