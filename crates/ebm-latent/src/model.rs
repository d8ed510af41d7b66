//! [`LatentModel`]: a generator with a latent-space energy-based prior (or the Gaussian prior),
//! its samplers, reconstructions and the log-density score used for anomaly detection.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, Energy};
use ebm_nn::{Mlp, MlpConfig};
use serde::{Deserialize, Serialize};

use crate::generator::{check_latent, reconstruction_energy, Generator, GeneratorConfig};
use crate::langevin::{
    check_images, check_sigma, posterior_langevin, prior_langevin, LatentLangevin,
};
use crate::{Error, Result};

/// Everything that defines a [`LatentModel`]. Unknown keys are rejected when read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentConfig {
    /// The prior's energy network `E(z) = -f(z)`; `None` for the Gaussian prior (`f = 0`).
    pub prior: Option<MlpConfig>,
    /// The generator.
    pub generator: GeneratorConfig,
    /// `sigma` of the reference distribution `N(0, sigma^2 I)` (the paper's 1).
    pub prior_sigma: f64,
    /// `sigma_x` of the likelihood `N(x; g(z), sigma_x^2 I)` (the paper's 0.3).
    pub likelihood_sigma: f64,
}

impl LatentConfig {
    /// The paper's model around `generator`: the prior MLP `nz -> 200 -> 200 -> 1` with leaky
    /// ReLU 0.2, `sigma = 1`, `sigma_x = 0.3`.
    pub fn ebm_prior(generator: GeneratorConfig) -> Self {
        Self {
            prior: Some(MlpConfig::latent_prior(generator.latent_dim)),
            generator,
            prior_sigma: 1.0,
            likelihood_sigma: 0.3,
        }
    }

    /// The same generator with the Gaussian prior `N(0, I)`: the alternating back-propagation
    /// baseline (Han et al. 2017).
    pub fn gaussian_prior(generator: GeneratorConfig) -> Self {
        Self {
            prior: None,
            ..Self::ebm_prior(generator)
        }
    }

    /// The size of `z`.
    pub fn latent_dim(&self) -> usize {
        self.generator.latent_dim
    }

    /// Checks that the model can be built: the prior takes the generator's latent size, and
    /// both sigmas are positive.
    pub fn validate(&self) -> Result<()> {
        self.generator.validate()?;
        if let Some(p) = &self.prior {
            p.validate()?;
            if p.input_dim != self.generator.latent_dim {
                return Err(Error::Config(format!(
                    "the prior takes a latent of size {}, the generator {}",
                    p.input_dim, self.generator.latent_dim
                )));
            }
        }
        check_sigma("prior_sigma", self.prior_sigma)?;
        check_sigma("likelihood_sigma", self.likelihood_sigma)?;
        Ok(())
    }
}

/// A top-down generator `x = g(z) + N(0, sigma_x^2 I)` with the prior
/// `p(z) ∝ exp(-E(z)) N(z; 0, sigma^2 I)`, `E` an MLP (or `E = 0`, the Gaussian prior).
///
/// Images are in the generator's range [-1, 1] (see [`to_signed`] and [`to_unit`]). For
/// sampling, take a [`LatentModel::frozen`] copy: its prior uses the fused CPU pass of
/// [`Mlp`] and its generator holds detached weights.
#[derive(Debug, Clone)]
pub struct LatentModel {
    config: LatentConfig,
    prior: Option<Mlp>,
    generator: Generator,
}

impl LatentModel {
    /// A freshly initialised f32 model.
    pub fn new(
        config: &LatentConfig,
        device: &Device,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        Self::with_dtype(config, device, DType::F32, rng)
    }

    /// A freshly initialised model of the given dtype. The generator is built first, then the
    /// prior, from the same generator of random numbers: an EBM-prior model and its
    /// Gaussian-prior baseline built from the same seed start from the same generator.
    pub fn with_dtype(
        config: &LatentConfig,
        device: &Device,
        dtype: DType,
        rng: &mut dyn rand::RngCore,
    ) -> Result<Self> {
        config.validate()?;
        let generator = Generator::with_dtype(&config.generator, device, dtype, rng)?;
        let prior = match &config.prior {
            Some(p) => Some(Mlp::with_dtype(p, device, dtype, rng)?),
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            prior,
            generator,
        })
    }

    /// The config.
    pub fn config(&self) -> &LatentConfig {
        &self.config
    }

    /// The prior's energy network, `None` for the Gaussian prior.
    pub fn prior(&self) -> Option<&Mlp> {
        self.prior.as_ref()
    }

    /// The generator.
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    pub(crate) fn parts_mut(&mut self) -> (Option<&mut Mlp>, &mut Generator) {
        (self.prior.as_mut(), &mut self.generator)
    }

    /// The size of `z`.
    pub fn latent_dim(&self) -> usize {
        self.config.latent_dim()
    }

    /// The shape of one image, `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.config.generator.output_shape()
    }

    /// A copy for sampling: the prior frozen (fused CPU pass), the generator's weights detached.
    pub fn frozen(&self) -> Result<Self> {
        Ok(Self {
            config: self.config.clone(),
            prior: self.prior.as_ref().map(|p| p.frozen()).transpose()?,
            generator: self.generator.frozen(),
        })
    }

    /// The prior's energy as a sampler sees it (`None` for the Gaussian prior).
    pub fn prior_energy_fn(&self) -> Option<&dyn Energy> {
        self.prior.as_ref().map(|p| p as &dyn Energy)
    }

    /// `E(z) = -f(z)` for `z [B, latent_dim]`, shape `[B]`; zeros for the Gaussian prior.
    /// Differentiable with respect to the prior's parameters.
    pub fn prior_energy(&self, z: &Tensor) -> Result<Tensor> {
        let batch = check_latent(z, self.latent_dim(), "latent z")?;
        match &self.prior {
            Some(p) => Ok(p.energy(z)?),
            None => Ok(Tensor::zeros(batch, z.dtype(), z.device())?),
        }
    }

    /// `n` draws from `N(0, I)` (where every chain of the paper starts).
    pub fn initial_latents<R: rand::Rng + ?Sized>(
        &self,
        n: usize,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        let dtype = self.generator.dtype();
        Ok(noise::normal(rng, (n, self.latent_dim()), dtype, device)?)
    }

    /// `n` latents from the prior: short-run Langevin from `N(0, I)` for the EBM prior, exact
    /// draws from `N(0, sigma^2 I)` for the Gaussian prior.
    pub fn sample_prior<R: rand::Rng + Send + ?Sized>(
        &self,
        n: usize,
        settings: &LatentLangevin,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        ebm_core::validate::at_least_one("number of samples", n)?;
        let z0 = self.initial_latents(n, device, rng)?;
        match &self.prior {
            Some(p) => prior_langevin(Some(p), &z0, self.config.prior_sigma, settings, rng),
            None => Ok((z0 * self.config.prior_sigma)?),
        }
    }

    /// Continues prior chains from `z` for `settings.steps` steps (long-run chains). For the
    /// Gaussian prior this is the Langevin chain of `N(0, sigma^2 I)`.
    pub fn continue_prior<R: rand::Rng + Send + ?Sized>(
        &self,
        z: &Tensor,
        settings: &LatentLangevin,
        rng: &mut R,
    ) -> Result<Tensor> {
        check_latent(z, self.latent_dim(), "prior chain start z")?;
        prior_langevin(
            self.prior_energy_fn(),
            z,
            self.config.prior_sigma,
            settings,
            rng,
        )
    }

    /// Posterior latents of images `x [B, C, H, W]` in [-1, 1] by short-run Langevin from
    /// `N(0, I)`, as the paper infers them at every training iteration.
    pub fn infer<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        settings: &LatentLangevin,
        rng: &mut R,
    ) -> Result<Tensor> {
        let batch = check_images(&self.generator, x, "images x")?;
        let z0 = self
            .initial_latents(batch, x.device(), rng)?
            .to_dtype(x.dtype())?;
        self.infer_from(x, &z0, settings, rng)
    }

    /// Posterior latents of `x` by short-run Langevin from the given `z0`.
    pub fn infer_from<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        z0: &Tensor,
        settings: &LatentLangevin,
        rng: &mut R,
    ) -> Result<Tensor> {
        posterior_langevin(
            self.prior_energy_fn(),
            &self.generator,
            x,
            z0,
            self.config.prior_sigma,
            self.config.likelihood_sigma,
            settings,
            rng,
        )
    }

    /// `g(z)`: images `[B, C, H, W]` in (-1, 1).
    pub fn generate(&self, z: &Tensor) -> Result<Tensor> {
        self.generator.forward(z)
    }

    /// `log p(x, z)` up to its constant: `-|x - g(z)|^2 / (2 sigma_x^2) - E(z) - |z|^2 /
    /// (2 sigma^2)`, shape `[B]`, for images `x` in [-1, 1] and latents `z`.
    pub fn log_joint(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let batch = check_images(&self.generator, x, "images x")?;
        let zb = check_latent(z, self.latent_dim(), "latent z")?;
        if zb != batch {
            return Err(ebm_core::Error::invalid(
                "latent z",
                format!("has {zb} latents for {batch} images"),
            )
            .into());
        }
        let rec = reconstruction_energy(&self.generator, x, z, self.config.likelihood_sigma)?;
        let gauss = (z.sqr()?.sum(1)? * (0.5 / (self.config.prior_sigma.powi(2))))?;
        let energy = self.prior_energy(z)?;
        Ok(((rec + gauss)? + energy)?.neg()?.detach())
    }

    /// Anomaly scores of images `x` in [-1, 1] (higher = more anomalous): minus the log joint
    /// density `log p(x, z)` at posterior samples `z` (short-run Langevin from `N(0, I)`),
    /// averaged over `chains` independent chains per image, with its two parts. This is the
    /// approximation of `-log p(x)` by posterior samples, up to a constant that does not change
    /// the ranking.
    pub fn anomaly_scores<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        settings: &LatentLangevin,
        chains: usize,
        rng: &mut R,
    ) -> Result<AnomalyScores> {
        ebm_core::validate::at_least_one("chains", chains)?;
        let batch = check_images(&self.generator, x, "images x")?;
        let mut scores = AnomalyScores {
            score: vec![0.0; batch],
            reconstruction: vec![0.0; batch],
            prior: vec![0.0; batch],
        };
        let to_vec =
            |t: Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
        for _ in 0..chains {
            let z = self.infer(x, settings, rng)?;
            let rec = to_vec(reconstruction_energy(
                &self.generator,
                x,
                &z,
                self.config.likelihood_sigma,
            )?)?;
            let gauss = to_vec((z.sqr()?.sum(1)? * (0.5 / self.config.prior_sigma.powi(2)))?)?;
            let energy = to_vec(self.prior_energy(&z)?)?;
            for i in 0..batch {
                let prior = energy[i] + gauss[i];
                scores.reconstruction[i] += rec[i] / chains as f64;
                scores.prior[i] += prior / chains as f64;
                scores.score[i] += (rec[i] + prior) / chains as f64;
            }
        }
        Ok(scores)
    }

    /// Reconstructions `g(z)` of `x` at posterior samples `z` (inferred from `N(0, I)`).
    pub fn reconstruct<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        settings: &LatentLangevin,
        rng: &mut R,
    ) -> Result<Tensor> {
        let z = self.infer(x, settings, rng)?;
        self.generate(&z)
    }
}

/// Per-image anomaly scores (higher = more anomalous) and their two parts, each averaged over
/// the posterior chains.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyScores {
    /// `-log p(x, z)` up to its constant: `reconstruction + prior`.
    pub score: Vec<f64>,
    /// `|x - g(z)|^2 / (2 sigma_x^2)`: minus the log-likelihood up to its constant.
    pub reconstruction: Vec<f64>,
    /// `E(z) + |z|^2 / (2 sigma^2)`: minus the log prior density up to its constant.
    pub prior: Vec<f64>,
}

/// Maps images in [0, 1] to the generator's range [-1, 1]: `2 x - 1`.
pub fn to_signed(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(2.0, -1.0)?)
}

/// Maps images in [-1, 1] back to [0, 1]: `(x + 1) / 2`, clamped.
pub fn to_unit(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(0.5, 0.5)?.clamp(0.0, 1.0)?)
}
