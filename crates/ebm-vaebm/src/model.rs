//! [`Vaebm`]: a frozen VAE and a data-space IGEBM energy, `p(x) ∝ p_VAE(x) exp(-E(x))`;
//! sampling from the VAE alone and from VAEBM starting at the same `eps`
//! ([`sample_same_eps`]), and scores for out-of-distribution detection.

use candle_core::{DType, Device, Tensor};
use ebm_core::{validate, Energy};
use ebm_nn::Igebm;

use crate::reparam::{EpsLangevin, EpsLayout, ReparamEnergy};
use crate::{Error, Result, Vae};

/// The VAE's samples and the VAEBM's samples from the same starting `eps`.
#[derive(Debug, Clone)]
pub struct SameEps {
    /// The starting point, packed (`[B, total]`, standard normal).
    pub eps_start: Tensor,
    /// The end of the Langevin chains, packed.
    pub eps_end: Tensor,
    /// The VAE's samples without pixel noise: `mean(z(eps_z))` at the start.
    pub vae_mean: Tensor,
    /// The VAEBM's samples without pixel noise: `mean(z(eps_z))` at the end (what the paper
    /// shows and scores).
    pub vaebm_mean: Tensor,
    /// The VAE's samples with pixel noise, `T(eps_start)`.
    pub vae_sample: Tensor,
    /// The VAEBM's samples with pixel noise, `T(eps_end)`.
    pub vaebm_sample: Tensor,
    /// The mean of `E(T(eps)) + ||eps||^2 / 2` before each Langevin step.
    pub energy_trace: Vec<f64>,
    /// Wall-clock seconds per Langevin step.
    pub seconds_per_step: f64,
}

/// Runs `sampler` on `E(T(eps)) + ||eps||^2 / 2` from the packed `eps_start` and returns the
/// VAE's samples at the start beside the VAEBM's at the end. `vae` should be frozen and
/// `energy` a frozen data-space energy (e.g. [`Igebm::frozen`]); with a zero energy the chain
/// leaves `N(0, I)` invariant (up to discretisation).
pub fn sample_same_eps<E, R>(
    vae: &Vae,
    energy: &E,
    eps_start: &Tensor,
    sampler: &EpsLangevin,
    rng: &mut R,
) -> Result<SameEps>
where
    E: Energy + ?Sized,
    R: rand::Rng + ?Sized,
{
    let langevin = sampler.sampler()?;
    let target = ReparamEnergy::new(vae, energy)?;
    let run = langevin.run(&target, eps_start, rng)?;
    let eps_end = run.samples;
    Ok(SameEps {
        vae_mean: target.means(eps_start)?,
        vaebm_mean: target.means(&eps_end)?,
        vae_sample: target.images(eps_start)?,
        vaebm_sample: target.images(&eps_end)?,
        eps_start: eps_start.clone(),
        eps_end,
        energy_trace: run.energy_trace,
        seconds_per_step: run.seconds_per_step,
    })
}

/// Out-of-distribution scores of a batch, one value per image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The ELBO (an estimate of `log p_VAE(x)`, nats).
    pub elbo: Vec<f64>,
    /// The energy `E(x)`.
    pub energy: Vec<f64>,
}

impl Scores {
    /// `-E_VAEBM(x) = log p_VAE(x) - E(x)`, with the ELBO standing in for the intractable
    /// `log p_VAE(x)`: high on likely images.
    pub fn vaebm(&self) -> Vec<f64> {
        self.elbo
            .iter()
            .zip(&self.energy)
            .map(|(l, e)| l - e)
            .collect()
    }

    /// `-E(x)`: the energy's own score.
    pub fn energy_only(&self) -> Vec<f64> {
        self.energy.iter().map(|e| -e).collect()
    }
}

/// A VAEBM: a VAE, never trained again, and a trainable IGEBM energy on data space of the same
/// image shape.
#[derive(Debug, Clone)]
pub struct Vaebm {
    /// The VAE as given (with its parameters, for checkpoints).
    given: Vae,
    /// Its frozen copy, which every computation uses.
    vae: Vae,
    ebm: Igebm,
}

impl Vaebm {
    /// Pairs `vae` with `ebm`. Fails when the energy was built for another image shape than
    /// the VAE makes, or is class-conditional.
    pub fn new(vae: Vae, ebm: Igebm) -> Result<Self> {
        let made = vae.config().sample_shape();
        let taken = ebm.config().sample_shape();
        if made != taken {
            return Err(Error::Mismatch {
                what: "EBM and VAE".into(),
                problem: format!(
                    "the EBM takes images of shape {taken:?} (image_size {}), the VAE makes {made:?} (image_size {}): both must use the same image size and channels",
                    ebm.config().image_size,
                    vae.config().image_size
                ),
            });
        }
        if let Some(k) = ebm.config().num_classes {
            return Err(Error::config(
                "VAEBM energy",
                format!("must be unconditional, got a model conditional on {k} classes"),
            ));
        }
        Ok(Self {
            vae: vae.frozen()?,
            given: vae,
            ebm,
        })
    }

    /// The frozen VAE (no parameters): what sampling and scoring use.
    pub fn vae(&self) -> &Vae {
        &self.vae
    }

    /// The VAE as it was given (with its parameters unless it was itself a frozen copy): what
    /// a checkpoint saves.
    pub fn vae_weights(&self) -> &Vae {
        &self.given
    }

    /// Changes the VAE's weights with `load` (a snapshot being restored) and rebuilds the
    /// frozen copy from them.
    pub(crate) fn reload_vae(&mut self, load: impl FnOnce(&mut Vae) -> Result<()>) -> Result<()> {
        load(&mut self.given)?;
        self.vae = self.given.frozen()?;
        Ok(())
    }

    /// The energy network.
    pub fn ebm(&self) -> &Igebm {
        &self.ebm
    }

    /// Mutable access to the energy network (for loading weights).
    pub fn ebm_mut(&mut self) -> &mut Igebm {
        &mut self.ebm
    }

    /// The layout of packed `eps`.
    pub fn layout(&self) -> EpsLayout {
        EpsLayout::of(&self.vae)
    }

    /// `n` standard normal packed `eps` rows, the starting points of fresh chains.
    pub fn initial_eps<R: rand::Rng + ?Sized>(
        &self,
        n: usize,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        self.layout()
            .standard_normal(n, self.vae.dtype(), device, rng)
    }

    /// Samples from the same `eps_start` by the VAE and by VAEBM (`sampler` steps of Langevin
    /// in `eps`-space on the frozen energy); see [`sample_same_eps`].
    pub fn sample<R: rand::Rng + ?Sized>(
        &self,
        eps_start: &Tensor,
        sampler: &EpsLangevin,
        rng: &mut R,
    ) -> Result<SameEps> {
        sampler.validate()?;
        let frozen = self.ebm.frozen()?;
        sample_same_eps(&self.vae, &frozen, eps_start, sampler, rng)
    }

    /// Energies `E(x)` of images `x`, `chunk` at a time (detached, f64).
    pub fn energies(&self, x: &Tensor, chunk: usize) -> Result<Vec<f64>> {
        validate::at_least_one("chunk", chunk)?;
        let frozen = self.ebm.frozen()?;
        let b = validate::check_batch_shape(x, &self.vae.config().sample_shape(), "VAEBM input")?;
        let mut out = Vec::with_capacity(b);
        for start in (0..b).step_by(chunk) {
            let xb = x.narrow(0, start, chunk.min(b - start))?;
            out.extend(
                frozen
                    .forward(&xb, None)?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?,
            );
        }
        Ok(out)
    }

    /// The ELBO (averaged over `elbo_samples` posterior draws) and the energy of every image
    /// of `x`, `chunk` images at a time.
    pub fn scores<R: rand::Rng + ?Sized>(
        &self,
        x: &Tensor,
        elbo_samples: usize,
        chunk: usize,
        rng: &mut R,
    ) -> Result<Scores> {
        let elbo = self
            .vae
            .elbo_estimate(x, elbo_samples, chunk, rng)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let energy = self.energies(x, chunk)?;
        Ok(Scores { elbo, energy })
    }

    /// The VAE as given and the energy.
    pub fn into_parts(self) -> (Vae, Igebm) {
        (self.given, self.ebm)
    }
}
