//! The [`Energy`] trait: a batch of samples in, one scalar energy per sample out, and the gradient
//! of the energies with respect to the samples.

use candle_core::{Tensor, Var};

use crate::Result;

/// An energy function `E(x)`, low on likely samples. The density it defines is
/// `p(x) ∝ exp(-E(x))`.
///
/// Implementations take a batch `x` of shape `[B, ...]` and return energies of shape `[B]`.
/// Samplers see nothing but this trait: they know neither networks nor compositions.
pub trait Energy {
    /// Energies of a batch, shape `[B]`. Differentiable with respect to `x` (and to the
    /// parameters of a trainable model) through candle's autograd.
    fn energy(&self, x: &Tensor) -> Result<Tensor>;

    /// Energies of a batch (detached, shape `[B]`) and the gradient of their sum with respect
    /// to `x` (shape of `x`). Each row of the gradient is `dE_b / dx_b`, since samples do not
    /// interact.
    ///
    /// The default wraps `x` in a fresh [`Var`] and runs autograd, so the graph never grows
    /// across calls; implementations with an analytic or hand-fused gradient override it.
    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        autograd_energy_and_grad(|x| self.energy(x), x)
    }

    /// The shape of one sample (without the batch dimension) when the energy only accepts one,
    /// e.g. `[1, 28, 28]` for a network trained on Fashion-MNIST. Samplers use it to reject
    /// mismatched starting points with a clear error.
    fn sample_shape(&self) -> Option<Vec<usize>> {
        None
    }
}

/// Energies of `x` under `energy` (detached) and the gradient of their sum with respect to `x`,
/// by candle's autograd on a fresh [`Var`]: the default of [`Energy::energy_and_grad`].
pub fn autograd_energy_and_grad<F>(energy: F, x: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: FnOnce(&Tensor) -> Result<Tensor>,
{
    let var = Var::from_tensor(&x.detach())?;
    let energies = energy(var.as_tensor())?;
    let grads = energies.sum_all()?.backward()?;
    let grad = match grads.get(var.as_tensor()) {
        Some(g) => g.clone(),
        // The energy does not depend on x at all.
        None => x.zeros_like()?,
    };
    Ok((energies.detach(), grad))
}

/// An energy conditioned on one class label per sample, `E(x, y)`: a class-conditional model.
/// Bind labels with [`LabelledEnergy::with_labels`] to get a plain [`Energy`] for a sampler.
pub trait LabelledEnergy {
    /// Energies of a batch given integer labels of shape `[B]` (dtype u32), shape `[B]`.
    fn energy_given(&self, x: &Tensor, labels: &Tensor) -> Result<Tensor>;

    /// Energies (detached) and their input gradient given labels; by default through autograd.
    fn energy_and_grad_given(&self, x: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        autograd_energy_and_grad(|x| self.energy_given(x, labels), x)
    }

    /// The number of classes the model was built for.
    fn num_classes(&self) -> usize;

    /// The shape of one sample, as in [`Energy::sample_shape`].
    fn sample_shape(&self) -> Option<Vec<usize>> {
        None
    }

    /// Binds one label per sample, so that samplers see an ordinary [`Energy`].
    fn with_labels<'a>(&'a self, labels: &Tensor) -> WithLabels<'a, Self>
    where
        Self: Sized,
    {
        WithLabels {
            model: self,
            labels: labels.clone(),
        }
    }
}

/// A [`LabelledEnergy`] with its labels bound: an [`Energy`] over `x` alone.
pub struct WithLabels<'a, M> {
    model: &'a M,
    labels: Tensor,
}

impl<M: LabelledEnergy> Energy for WithLabels<'_, M> {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        self.model.energy_given(x, &self.labels)
    }

    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.model.energy_and_grad_given(x, &self.labels)
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        self.model.sample_shape()
    }
}

impl<E: Energy + ?Sized> Energy for &E {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        (**self).energy(x)
    }
    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        (**self).energy_and_grad(x)
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        (**self).sample_shape()
    }
}

impl<E: Energy + ?Sized> Energy for Box<E> {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        (**self).energy(x)
    }
    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        (**self).energy_and_grad(x)
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        (**self).sample_shape()
    }
}

impl<E: Energy + ?Sized> Energy for std::sync::Arc<E> {
    fn energy(&self, x: &Tensor) -> Result<Tensor> {
        (**self).energy(x)
    }
    fn energy_and_grad(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        (**self).energy_and_grad(x)
    }
    fn sample_shape(&self) -> Option<Vec<usize>> {
        (**self).sample_shape()
    }
}
