//! The MLP energy's value and input gradient in one hand-written CPU pass, on activations stored
//! feature-major (a column per sample) so that every layer is one `W · X` product with weights
//! packed once. What a frozen f32 [`crate::Mlp`] on the CPU uses for Langevin steps; a test
//! checks it against autograd to 1e-5.

use ebm_ops::kernels::{matmul_wx, Real};
use ebm_ops::packed_gemm::PackedWeights;
use ebm_ops::simd;
use rayon::prelude::*;

use crate::Activation;

/// One dense layer on the host: `W [out, in]`, its transpose, both packed when possible.
#[derive(Debug, Clone)]
pub(crate) struct HostDense {
    pub weight: Vec<f32>,
    pub weight_t: Vec<f32>,
    pub packed: Option<PackedWeights>,
    pub packed_t: Option<PackedWeights>,
    pub bias: Vec<f32>,
    pub inputs: usize,
    pub outputs: usize,
}

impl HostDense {
    pub(crate) fn new(weight: Vec<f32>, bias: Vec<f32>, outputs: usize, inputs: usize) -> Self {
        let mut weight_t = vec![0f32; weight.len()];
        for o in 0..outputs {
            for i in 0..inputs {
                weight_t[i * outputs + o] = weight[o * inputs + i];
            }
        }
        Self {
            packed: f32::pack(&weight, outputs, inputs),
            packed_t: f32::pack(&weight_t, inputs, outputs),
            weight,
            weight_t,
            bias,
            inputs,
            outputs,
        }
    }
}

/// The whole MLP on the host.
#[derive(Debug, Clone)]
pub(crate) struct HostMlp {
    pub layers: Vec<HostDense>,
    pub activation: Activation,
}

fn act_forward(a: Activation, h: &[f32], out: &mut [f32]) {
    match a {
        Activation::Swish => simd::swish_add(h, 0.0, out),
        Activation::LeakyRelu => simd::leaky_relu(h, out),
    }
}

fn act_backward(a: Activation, h: &[f32], g: &mut [f32]) {
    match a {
        Activation::Swish => simd::mul_swish_grad(g, h),
        Activation::LeakyRelu => simd::mul_leaky_relu_grad(g, h),
    }
}

impl HostMlp {
    /// Energies `[B]` and input gradients `[B, D]` of a row-major batch `x [B, D]`.
    pub(crate) fn energy_and_grad(&self, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let d = self.layers[0].inputs;
        let batch = x.len() / d;
        let threads = rayon::current_num_threads().max(1);
        let chunk = batch.div_ceil(threads).max(1);
        let mut energies = vec![0f32; batch];
        let mut grads = vec![0f32; x.len()];
        energies
            .par_chunks_mut(chunk)
            .zip(grads.par_chunks_mut(chunk * d))
            .zip(x.par_chunks(chunk * d))
            .for_each(|((e, g), x)| self.columns(x, e, g));
        (energies, grads)
    }

    /// One block of samples: `x [n, D]` row-major in, energies and `dE/dx [n, D]` out.
    fn columns(&self, x: &[f32], energies: &mut [f32], grad: &mut [f32]) {
        let n = energies.len();
        let d = self.layers[0].inputs;
        // Feature-major input.
        let mut a = vec![0f32; d * n];
        for s in 0..n {
            for f in 0..d {
                a[f * n + s] = x[s * d + f];
            }
        }
        let last = self.layers.len() - 1;
        let mut pre: Vec<Vec<f32>> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let mut h = vec![0f32; layer.outputs * n];
            matmul_wx(
                &layer.weight,
                layer.packed.as_ref(),
                Some(&layer.bias),
                layer.outputs,
                layer.inputs,
                &a,
                n,
                &mut h,
            );
            if l < last {
                let mut next = vec![0f32; h.len()];
                act_forward(self.activation, &h, &mut next);
                a = next;
            } else {
                energies.copy_from_slice(&h[..n]);
            }
            pre.push(h);
        }
        // Backward: dE/dh_last = 1 for every sample.
        let mut g = vec![1f32; n];
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let mut g_in = vec![0f32; layer.inputs * n];
            matmul_wx(
                &layer.weight_t,
                layer.packed_t.as_ref(),
                None,
                layer.inputs,
                layer.outputs,
                &g,
                n,
                &mut g_in,
            );
            if l > 0 {
                act_backward(self.activation, &pre[l - 1], &mut g_in);
            }
            g = g_in;
        }
        for s in 0..n {
            for f in 0..d {
                grad[s * d + f] = g[f * n + s];
            }
        }
    }
}
