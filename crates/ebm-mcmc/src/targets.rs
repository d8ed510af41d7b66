//! Test targets for samplers that `ebm_core::analytic` does not have: the banana (a
//! curved, Rosenbrock-like density whose exact samples are easy to draw), with its closed-form
//! moments, for checking and comparing samplers.

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, validate, Energy};

use crate::Result;

/// The 2-D banana `E(x) = x1^2 / (2 s^2) + (x2 - b x1^2 + b s^2)^2 / 2`: `x1 ~ N(0, s^2)` and,
/// given `x1`, `x2 ~ N(b x1^2 - b s^2, 1)`. So `E[x1] = E[x2] = 0`, `Var x1 = s^2`,
/// `Var x2 = 1 + 2 b^2 s^4`, and exact samples are two normal draws away.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Banana {
    s: f64,
    b: f64,
}

impl Banana {
    /// A banana with scale `s > 0` and curvature `b` (finite; 0 is a Gaussian).
    pub fn new(s: f64, b: f64) -> Result<Self> {
        validate::positive("banana s", s)?;
        if !b.is_finite() {
            return Err(
                ebm_core::Error::invalid("banana b", format!("must be finite, got {b}")).into(),
            );
        }
        Ok(Self { s, b })
    }

    /// The scale `s`.
    pub fn s(&self) -> f64 {
        self.s
    }

    /// The curvature `b`.
    pub fn b(&self) -> f64 {
        self.b
    }

    /// The exact mean, `[0, 0]`.
    pub fn mean(&self) -> [f64; 2] {
        [0.0, 0.0]
    }

    /// The exact variances, `[s^2, 1 + 2 b^2 s^4]`.
    pub fn variance(&self) -> [f64; 2] {
        let s2 = self.s * self.s;
        [s2, 1.0 + 2.0 * self.b * self.b * s2 * s2]
    }

    /// `n` exact samples `[n, 2]` in the given dtype, drawn from `rng`.
    pub fn exact_samples<R: rand::Rng + ?Sized>(
        &self,
        n: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Tensor> {
        validate::at_least_one("n", n)?;
        let z = noise::normal(rng, (n, 2), DType::F64, &Device::Cpu)?.to_vec2::<f64>()?;
        let s2 = self.s * self.s;
        let values: Vec<f64> = z
            .iter()
            .flat_map(|r| {
                let x1 = self.s * r[0];
                [x1, self.b * x1 * x1 - self.b * s2 + r[1]]
            })
            .collect();
        Ok(Tensor::from_vec(values, (n, 2), device)?.to_dtype(dtype)?)
    }

    fn split(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor, Tensor)> {
        let dims = x.dims();
        if dims.len() < 2 || dims[0] == 0 || dims[1..].iter().product::<usize>() != 2 {
            return Err(ebm_core::Error::Shape {
                what: "banana energy input".into(),
                expected: "[batch >= 1, 2]".into(),
                got: dims.to_vec(),
            });
        }
        let flat = x.reshape((dims[0], 2))?;
        let x1 = flat.narrow(1, 0, 1)?.squeeze(1)?;
        let x2 = flat.narrow(1, 1, 1)?.squeeze(1)?;
        // r = x2 - b x1^2 + b s^2
        let r = ((x2 - (x1.sqr()? * self.b)?)? + self.b * self.s * self.s)?;
        Ok((x1, r, flat))
    }
}

impl Energy for Banana {
    fn energy(&self, x: &Tensor) -> ebm_core::Result<Tensor> {
        let (x1, r, _) = self.split(x)?;
        let inv_s2 = 1.0 / (self.s * self.s);
        Ok(((x1.sqr()? * (0.5 * inv_s2))? + (r.sqr()? * 0.5)?)?)
    }

    fn energy_and_grad(&self, x: &Tensor) -> ebm_core::Result<(Tensor, Tensor)> {
        let (x1, r, _) = self.split(x)?;
        let inv_s2 = 1.0 / (self.s * self.s);
        let e = ((x1.sqr()? * (0.5 * inv_s2))? + (r.sqr()? * 0.5)?)?;
        // dE/dx1 = x1 / s^2 - 2 b x1 r, dE/dx2 = r.
        let g1 = ((&x1 * inv_s2)? - ((&x1 * &r)? * (2.0 * self.b))?)?;
        let g = Tensor::stack(&[&g1, &r], 1)?.reshape(x.shape())?;
        Ok((e, g))
    }

    fn sample_shape(&self) -> Option<Vec<usize>> {
        Some(vec![2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banana_gradient_matches_autograd_and_exact_moments_match() -> Result<()> {
        let banana = Banana::new(1.3, 0.7)?;
        let x = Tensor::new(&[[0.3f64, -1.0], [-2.0, 0.5], [1.0, 2.0]], &Device::Cpu)?;
        let (e, g) = banana.energy_and_grad(&x)?;
        let (e_auto, g_auto) = ebm_core::autograd_energy_and_grad(|x| banana.energy(x), &x)?;
        assert_eq!(e.to_vec1::<f64>()?, e_auto.to_vec1::<f64>()?);
        for (a, b) in g
            .flatten_all()?
            .to_vec1::<f64>()?
            .iter()
            .zip(g_auto.flatten_all()?.to_vec1::<f64>()?)
        {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // E(0.3, -1) by hand: 0.09 / 3.38 + (-1 - 0.063 + 1.183)^2 / 2 = 0.0266272 + 0.0072
        assert!((e.to_vec1::<f64>()?[0] - (0.09 / 3.38 + 0.12f64.powi(2) / 2.0)).abs() < 1e-12);

        let n = 200_000;
        let xs = banana
            .exact_samples(n, DType::F64, &Device::Cpu, &mut ebm_core::seeded_rng(0))?
            .to_vec2::<f64>()?;
        let var = banana.variance();
        for d in 0..2 {
            let m = xs.iter().map(|r| r[d]).sum::<f64>() / n as f64;
            let v = xs.iter().map(|r| (r[d] - m).powi(2)).sum::<f64>() / n as f64;
            assert!(
                m.abs() < 4.0 * (var[d] / n as f64).sqrt(),
                "dim {d}: mean {m}"
            );
            assert!(
                (v / var[d] - 1.0).abs() < 0.03,
                "dim {d}: variance {v} vs {}",
                var[d]
            );
        }
        Ok(())
    }
}
