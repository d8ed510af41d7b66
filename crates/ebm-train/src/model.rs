//! [`EnergyModel`]: what the trainer needs of a network, and [`Conditioned`], which turns a
//! model plus optional labels into a plain `Energy` for the sampler.

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use ebm_core::Energy;
use ebm_nn::{Igebm, Mlp, Trainable};

/// A trainable energy network, unconditional or class-conditional.
pub trait EnergyModel: Trainable + Sized {
    /// `Some(k)` for a model conditioned on `k` classes.
    fn num_classes(&self) -> Option<usize>;
    /// The shape of one sample.
    fn sample_shape(&self) -> Vec<usize>;
    /// Energies `[B]` of `x`, with labels for a conditional model; differentiable with respect
    /// to the parameters.
    fn energies(&self, x: &Tensor, labels: Option<&Tensor>) -> ebm_core::Result<Tensor>;
    /// A detached copy for sampling (weights normalised once, no parameter gradients).
    fn frozen(&self) -> ebm_nn::Result<Self>;
    /// Energies (detached) and their input gradient: what a sampler needs. By default through
    /// autograd; models with a fused path override it.
    fn energies_and_grad(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        ebm_core::autograd_energy_and_grad(|x| self.energies(x, labels), x)
    }
    /// Energies `[B]` and the parameter gradients of `sum_i l_i(E_i)` (`dloss(i, E_i)` =
    /// `dl_i/dE_i`) from a fused pass, or `None` to have the trainer use autograd.
    fn fused_loss_grads(
        &self,
        _x: &Tensor,
        _labels: Option<&Tensor>,
        _dloss: &(dyn Fn(usize, f32) -> f32 + Sync),
    ) -> ebm_nn::Result<Option<(Tensor, GradStore)>> {
        Ok(None)
    }
}

impl EnergyModel for Igebm {
    fn num_classes(&self) -> Option<usize> {
        self.config().num_classes
    }
    fn sample_shape(&self) -> Vec<usize> {
        self.config().sample_shape()
    }
    fn energies(&self, x: &Tensor, labels: Option<&Tensor>) -> ebm_core::Result<Tensor> {
        self.forward(x, labels)
    }
    fn frozen(&self) -> ebm_nn::Result<Self> {
        Igebm::frozen(self)
    }
    fn energies_and_grad(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
    ) -> ebm_core::Result<(Tensor, Tensor)> {
        self.energy_and_input_grad(x, labels)
    }
    fn fused_loss_grads(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        dloss: &(dyn Fn(usize, f32) -> f32 + Sync),
    ) -> ebm_nn::Result<Option<(Tensor, GradStore)>> {
        Igebm::fused_loss_grads(self, x, labels, dloss)
    }
}

impl EnergyModel for Mlp {
    fn num_classes(&self) -> Option<usize> {
        None
    }
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.config().input_dim]
    }
    fn energies(&self, x: &Tensor, labels: Option<&Tensor>) -> ebm_core::Result<Tensor> {
        if labels.is_some() {
            return Err(ebm_core::Error::invalid(
                "labels",
                "an MLP energy takes no labels",
            ));
        }
        self.energy(x)
    }
    fn frozen(&self) -> ebm_nn::Result<Self> {
        Mlp::frozen(self)
    }
}

/// A model with its labels (if any) bound: an [`Energy`] over samples alone.
pub struct Conditioned<'a, M> {
    model: &'a M,
    labels: Option<Tensor>,
}

impl<'a, M: EnergyModel> Conditioned<'a, M> {
    /// Binds `labels` (one per sample, or none for an unconditional model).
    pub fn new(model: &'a M, labels: Option<&Tensor>) -> Self {
        Self {
            model,
            labels: labels.cloned(),
        }
    }
}

impl<M: EnergyModel> Energy for Conditioned<'_, M> {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        self.model.energies(x, self.labels.as_ref())
    }
    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        self.model.energies_and_grad(x, self.labels.as_ref())
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(self.model.sample_shape())
    }
}
