//! Neural energy functions on candle, built from `ebm-ops`:
//!
//! - [`Igebm`]: the ResNet energy of Du & Mordatch 2019, "Implicit Generation and Modeling with
//!   Energy-Based Models": residual blocks with Swish, average-pool downsampling, spectral
//!   normalisation by power iteration with persistent vectors, and optional class-conditional
//!   gain and bias per class.
//! - [`Mlp`]: a fully connected energy, e.g. the latent-space prior of Pang et al. 2020.
//! - [`Classifier`]: a small convolutional classifier whose penultimate features give the
//!   domain FID of `ebm-eval` (a network trained on the data set itself).
//! - [`energy_classifier`]: a class-conditional energy as a classifier (the class of lowest
//!   energy) and the input gradient of its cross-entropy; [`adversarial`]: PGD attacks in the
//!   L-infinity and L2 balls.
//!
//! Both implement [`ebm_core::Energy`] (and [`ebm_core::LabelledEnergy`] when conditional),
//! keep their trainable tensors in a [`ParamStore`], and save checkpoints as safetensors with
//! their config beside them as JSON ([`checkpoint`]).
//!
//! A model under training holds `Var`s; [`Igebm::frozen`] returns a copy whose spectrally
//! normalised weights are computed once and detached, which is what a Langevin chain should use:
//! its backward then computes the input gradient and nothing else.

pub mod adversarial;
pub mod checkpoint;
mod classifier;
pub mod energy_classifier;
mod error;
mod fused;
mod fused_mlp;
mod igebm;
mod layers;
mod manual_grad;
mod mlp;
mod params;

pub use classifier::{cross_entropy, log_softmax, Classifier, ClassifierConfig};
pub use error::{Error, Result};
pub use igebm::{BlockConfig, Igebm, IgebmConfig};
pub use layers::{one_hot, Activation, ClassTable, Conv, Dense, Init, SpectralNorm};
pub use mlp::{Mlp, MlpConfig};
pub use params::ParamStore;

/// A model whose parameters can be trained and saved: the interface the trainer and the
/// checkpoint functions use.
pub trait Trainable {
    /// The model's trainable parameters.
    fn params(&self) -> &ParamStore;
    /// Mutable access, for loading a checkpoint.
    fn params_mut(&mut self) -> &mut ParamStore;
    /// One power iteration per spectrally normalised layer (no-op without spectral norm). The
    /// trainer calls it once per step, before the forward passes, as PyTorch does per forward.
    fn update_spectral_norm(&mut self) -> Result<()>;
    /// Non-trainable state saved with the weights (spectral-norm vectors), by name.
    fn buffers(&self) -> Vec<(String, candle_core::Tensor)>;
    /// Restores the state returned by [`Trainable::buffers`].
    fn set_buffers(
        &mut self,
        buffers: &std::collections::HashMap<String, candle_core::Tensor>,
    ) -> Result<()>;
}
