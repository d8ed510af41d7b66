//! The generator against its definition: gradients with respect to the latent and to every
//! weight and bias against central finite differences in f64, for the 28x28, 32x32 and 64x64
//! architectures; the layer plans; and bad configs and inputs.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise::normal, seeded_rng};
use ebm_latent::{Decoder, Generator, GeneratorConfig, LinearDecoder};
use ebm_nn::Trainable;
use ebm_ops::gradcheck::{assert_gradients, gradient_errors};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    normal(&mut seeded_rng(seed), shape, DType::F64, &Device::Cpu).unwrap()
}

/// A fixed random projection to a scalar, so that every output element gets its own weight.
fn project(y: &Tensor, seed: u64) -> candle_core::Result<Tensor> {
    (y * randn(seed, y.dims()))?.sum_all()
}

/// The generator's forward with candle's error type, for the gradient checker.
fn fwd(g: &Generator, z: &Tensor) -> candle_core::Result<Tensor> {
    g.forward(z)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
}

fn tiny(image_size: usize, width: usize) -> Generator {
    let config = GeneratorConfig {
        latent_dim: 3,
        channels: 2,
        image_size,
        width,
    };
    Generator::with_dtype(&config, &Device::Cpu, DType::F64, &mut seeded_rng(1)).unwrap()
}

/// Central differences of `loss` with respect to every element of every parameter, against
/// autograd; returns the largest relative error (floored at absolute for small gradients).
fn parameter_gradient_error(generator: &Generator, z: &Tensor) -> f64 {
    let loss = |g: &Generator| -> f64 {
        project(&g.forward(z).unwrap(), 7)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = project(&generator.forward(z).unwrap(), 7)
        .unwrap()
        .backward()
        .unwrap();
    let eps = 1e-6;
    let mut worst = 0f64;
    for (name, var) in generator.params().iter() {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.shape().clone();
        let set = |v: Vec<f64>| {
            var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                .unwrap()
        };
        for j in 0..base.len() {
            let mut plus = base.clone();
            plus[j] += eps;
            set(plus);
            let up = loss(generator);
            let mut minus = base.clone();
            minus[j] -= eps;
            set(minus);
            let down = loss(generator);
            let numeric = (up - down) / (2.0 * eps);
            let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            assert!(
                err < 1e-5,
                "{name}[{j}]: autograd {} vs finite differences {numeric}",
                analytic[j]
            );
            worst = worst.max(err);
        }
        set(base);
    }
    worst
}

#[test]
fn gradients_match_finite_differences_for_every_architecture() {
    for (size, width) in [(28, 2), (32, 1), (64, 1)] {
        let generator = tiny(size, width);
        let z = randn(2, &[2, 3]);
        assert_gradients(
            &format!("{size}x{size} generator, latent gradient"),
            |t| project(&fwd(&generator, &t[0])?, 7),
            std::slice::from_ref(&z),
            1e-6,
        );
        let worst = parameter_gradient_error(&generator, &z);
        assert!(worst < 1e-5, "{size}x{size}: worst parameter error {worst}");
    }
}

/// The frozen copy computes the same images and the same latent gradient, and no parameter
/// gradient.
#[test]
fn frozen_generator_gives_the_latent_gradient_alone() -> candle_core::Result<()> {
    let generator = tiny(28, 2);
    let frozen = generator.frozen();
    assert!(frozen.params().is_empty());
    let z = randn(3, &[2, 3]);
    let (a, b) = (generator.forward(&z).unwrap(), frozen.forward(&z).unwrap());
    assert_eq!(
        a.flatten_all()?.to_vec1::<f64>()?,
        b.flatten_all()?.to_vec1::<f64>()?
    );
    let errors = gradient_errors(|t| project(&fwd(&frozen, &t[0])?, 4), &[z], 1e-6)?;
    assert!(errors[0].max_rel < 1e-6, "{errors:?}");
    Ok(())
}

#[test]
fn outputs_are_images_in_the_tanh_range() -> candle_core::Result<()> {
    for (size, width) in [(28, 4), (32, 2), (64, 1)] {
        let config = GeneratorConfig {
            latent_dim: 5,
            channels: 3,
            image_size: size,
            width,
        };
        let g = Generator::new(&config, &Device::Cpu, &mut seeded_rng(0)).unwrap();
        let z = normal(&mut seeded_rng(1), (4, 5), DType::F32, &Device::Cpu).unwrap();
        let x = g.forward(&z).unwrap();
        assert_eq!(x.dims(), &[4, 3, size, size]);
        let v = x.flatten_all()?.to_vec1::<f32>()?;
        assert!(v.iter().all(|v| v.abs() < 1.0));
        // Not collapsed to a constant at initialisation.
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(var > 1e-3, "{size}: output variance {var}");
    }
    Ok(())
}

#[test]
fn the_svhn_plan_is_the_papers() {
    let layers = GeneratorConfig::svhn().layers().unwrap();
    let plan: Vec<(usize, usize, usize, usize, usize, bool)> = layers
        .iter()
        .map(|l| {
            (
                l.in_channels,
                l.out_channels,
                l.kernel,
                l.stride,
                l.padding,
                l.bias,
            )
        })
        .collect();
    assert_eq!(
        plan,
        vec![
            (100, 512, 4, 1, 0, false),
            (512, 256, 4, 2, 1, false),
            (256, 128, 4, 2, 1, false),
            (128, 3, 4, 2, 1, true),
        ]
    );
    let sizes: Vec<usize> = layers.iter().map(|l| l.input_size).collect();
    assert_eq!(sizes, vec![1, 4, 8, 16]);
    let mnist = GeneratorConfig::mnist_like(16, 32).layers().unwrap();
    assert_eq!(mnist.len(), 3);
    assert_eq!((mnist[0].kernel, mnist[0].out_channels), (7, 64));
}

#[test]
fn bad_configs_and_inputs_are_errors() {
    let mut config = GeneratorConfig::mnist_like(8, 4);
    config.image_size = 30;
    let err = Generator::new(&config, &Device::Cpu, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image_size must be 28, 32 or 64, got 30"),
        "{err}"
    );
    config.image_size = 28;
    config.latent_dim = 0;
    assert!(Generator::new(&config, &Device::Cpu, &mut seeded_rng(0)).is_err());

    let g = Generator::new(
        &GeneratorConfig::mnist_like(8, 4),
        &Device::Cpu,
        &mut seeded_rng(0),
    )
    .unwrap();
    let z = Tensor::zeros((2, 9), DType::F32, &Device::Cpu).unwrap();
    let err = g.forward(&z).unwrap_err().to_string();
    assert!(
        err.contains("generator input z: expected shape [batch >= 1, 8], got [2, 9]"),
        "{err}"
    );
    let bad = LinearDecoder::new(randn(1, &[3, 2]), randn(2, &[4]));
    assert!(bad.unwrap_err().to_string().contains("bias [D]"));
}

#[test]
fn linear_decoder_is_w_z_plus_b() -> candle_core::Result<()> {
    let w = Tensor::new(&[[1f64, 2.0], [0.0, -1.0], [3.0, 0.5]], &Device::Cpu)?;
    let b = Tensor::new(&[0.5f64, 0.0, -1.0], &Device::Cpu)?;
    let d = LinearDecoder::new(w, b).unwrap();
    assert_eq!((d.latent_dim(), d.output_shape()), (2, vec![3]));
    let x = d
        .decode(&Tensor::new(&[[1f64, 1.0]], &Device::Cpu)?)
        .unwrap();
    assert_eq!(x.to_vec2::<f64>()?, vec![vec![3.5, -1.0, 2.5]]);
    Ok(())
}

/// The posterior sampler's hand-written backward pass equals autograd (itself held to finite
/// differences above), in f64 and, through the packed f32 kernels, in f32.
#[test]
fn hand_written_latent_gradient_equals_autograd() {
    for (size, width) in [(28, 2), (32, 1), (64, 1)] {
        for dtype in [DType::F64, DType::F32] {
            let config = GeneratorConfig {
                latent_dim: 3,
                channels: 2,
                image_size: size,
                width,
            };
            let g =
                Generator::with_dtype(&config, &Device::Cpu, dtype, &mut seeded_rng(4)).unwrap();
            let z = randn(5, &[3, 3]).to_dtype(dtype).unwrap();
            let x = randn(6, &[3, 2, size, size])
                .tanh()
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let (e, grad) = g.reconstruction_energy_and_grad(&x, &z, 0.3).unwrap();
            let var = candle_core::Var::from_tensor(&z).unwrap();
            let diff = (g.forward(var.as_tensor()).unwrap() - &x).unwrap();
            let auto_e = (diff
                .sqr()
                .unwrap()
                .reshape((3, ()))
                .unwrap()
                .sum(1)
                .unwrap()
                / (2.0 * 0.09))
                .unwrap();
            let auto_g = auto_e.sum_all().unwrap().backward().unwrap();
            let auto_g = auto_g.get(var.as_tensor()).unwrap();
            let close = |a: &Tensor, b: &Tensor, what: &str| {
                let (a, b) = (
                    a.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                    b.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f64>()
                        .unwrap(),
                );
                let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
                let tol = if dtype == DType::F64 { 1e-10 } else { 1e-4 };
                for (a, b) in a.iter().zip(&b) {
                    assert!(
                        (a - b).abs() <= tol * scale,
                        "{size} {dtype:?} {what}: {a} vs {b}"
                    );
                }
            };
            close(&e, &auto_e, "energy");
            close(&grad, auto_g, "gradient");
        }
    }
}
