//! The MLP energy's value and input gradient in one hand-written CPU pass, on activations stored
//! feature-major (a column per sample) so that every layer is one `W · X` product with weights
//! packed once. What a frozen f32 [`crate::Mlp`] on the CPU uses for Langevin steps; a test
//! checks it against autograd to 1e-5.

use ebm_ops::kernels::{matmul_wx, transpose, Real};
use ebm_ops::packed_gemm::PackedWeights;
use ebm_ops::simd;

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
        // The calling thread takes the first block itself and the pool the others: a step of
        // a small batch lasts about 100 us, and handing every block to the pool and sleeping
        // until it is done costs a good part of that in thread wake-ups.
        let mut blocks = energies
            .chunks_mut(chunk)
            .zip(grads.chunks_mut(chunk * d))
            .zip(x.chunks(chunk * d));
        let first = blocks.next();
        rayon::in_place_scope(|scope| {
            for ((e, g), x) in blocks {
                scope.spawn(move |_| self.columns(x, e, g));
            }
            if let Some(((e, g), x)) = first {
                self.columns(x, e, g);
            }
        });
        (energies, grads)
    }

    /// One block of samples: `x [n, D]` row-major in, energies and `dE/dx [n, D]` out. The
    /// activations live in this thread's scratch buffers, reused from call to call: fresh
    /// buffers cost more in page faults and zeroing than the products themselves at these sizes.
    fn columns(&self, x: &[f32], energies: &mut [f32], grad: &mut [f32]) {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            self.columns_in(x, energies, grad, &mut scratch)
        })
    }

    fn columns_in(&self, x: &[f32], energies: &mut [f32], grad: &mut [f32], s: &mut Scratch) {
        let n = energies.len();
        let d = self.layers[0].inputs;
        let last = self.layers.len() - 1;
        let widest = self
            .layers
            .iter()
            .map(|l| l.inputs.max(l.outputs))
            .max()
            .unwrap_or(d);
        let Scratch {
            input,
            pre,
            post,
            back,
            back_next,
        } = s;
        fit(input, d * n);
        fit(back, widest * n);
        fit(back_next, widest * n);
        if pre.len() < self.layers.len() {
            pre.resize_with(self.layers.len(), Vec::new);
            post.resize_with(self.layers.len(), Vec::new);
        }
        // Feature-major input.
        transpose(x, n, d, input);
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = pre.split_at_mut(l);
            let h = &mut rest[0];
            fit(h, layer.outputs * n);
            let a: &[f32] = if l == 0 {
                &input[..d * n]
            } else {
                &post[l - 1]
            };
            let _ = done;
            matmul_wx(
                &layer.weight,
                layer.packed.as_ref(),
                Some(&layer.bias),
                layer.outputs,
                layer.inputs,
                &a[..layer.inputs * n],
                n,
                &mut h[..layer.outputs * n],
            );
            if l < last {
                let next = &mut post[l];
                fit(next, layer.outputs * n);
                act_forward(
                    self.activation,
                    &h[..layer.outputs * n],
                    &mut next[..layer.outputs * n],
                );
            } else {
                energies.copy_from_slice(&h[..n]);
            }
        }
        // Backward: dE/dh_last = 1 for every sample.
        back[..n].fill(1.0);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let g_in = &mut back_next[..layer.inputs * n];
            matmul_wx(
                &layer.weight_t,
                layer.packed_t.as_ref(),
                None,
                layer.inputs,
                layer.outputs,
                &back[..layer.outputs * n],
                n,
                g_in,
            );
            if l > 0 {
                act_backward(self.activation, &pre[l - 1][..layer.inputs * n], g_in);
            }
            std::mem::swap(back, back_next);
        }
        transpose(back, d, n, grad);
    }
}

/// One thread's activations for [`HostMlp::columns`]; grown on demand, never shrunk.
#[derive(Default)]
struct Scratch {
    /// The input, feature-major.
    input: Vec<f32>,
    /// Each layer's output before the activation.
    pre: Vec<Vec<f32>>,
    /// Each hidden layer's output after the activation.
    post: Vec<Vec<f32>>,
    /// The gradient flowing backward, and the next one.
    back: Vec<f32>,
    back_next: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Makes `v` at least `len` long (the products overwrite every element they use).
fn fit(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}
