//! Seeded random noise as tensors. candle's own device RNG cannot be seeded on the CPU, so every
//! stochastic function in the workspace draws from a generator passed in by the caller, and the
//! same seed gives the same numbers on every run.

use candle_core::{DType, Device, Shape, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal, Uniform};

use crate::{Error, Result};

/// The workspace's default generator: ChaCha8, fast, portable, and its state can be saved.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator seeded from a `u64`; the same seed gives the same stream on every platform.
pub fn seeded_rng(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// A generator's whole state (seed, stream, position in the stream): saved with a training
/// checkpoint, it lets a resumed run draw exactly the numbers the uninterrupted run would have.
/// Its text form, `<64 hex digits of seed>:<stream>:<word position>`, goes into JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RngState {
    /// The 32-byte ChaCha key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl RngState {
    /// The state of `rng` now.
    pub fn of(rng: &Rng) -> Self {
        Self {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator in this state: it continues the saved stream exactly.
    pub fn restore(&self) -> Rng {
        let mut rng = Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

impl std::fmt::Display for RngState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.seed {
            write!(f, "{b:02x}")?;
        }
        write!(f, ":{}:{}", self.stream, self.word_pos)
    }
}

impl std::str::FromStr for RngState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("generator state", format!("`{s}`: {why}"));
        let mut parts = s.split(':');
        let (Some(seed), Some(stream), Some(pos), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <seed hex>:<stream>:<word position>"));
        };
        if seed.len() != 64 || !seed.is_ascii() {
            return Err(bad("the seed is not 64 hex digits"));
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&seed[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("the seed is not 64 hex digits"))?;
        }
        Ok(Self {
            seed: bytes,
            stream: stream
                .parse()
                .map_err(|_| bad("the stream is not a number"))?,
            word_pos: pos
                .parse()
                .map_err(|_| bad("the word position is not a number"))?,
        })
    }
}

/// A tensor of independent standard normal draws, of the given shape, dtype and device.
pub fn normal<R: rand::Rng + ?Sized>(
    rng: &mut R,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let mut values = vec![0f32; shape.elem_count()];
    fill_normal(rng, &mut values);
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// Fills `out` with standard normal draws: the numbers [`normal`] puts in a tensor of
/// `out.len()` elements, in the same order, from the same generator state.
pub fn fill_normal<R: rand::Rng + ?Sized>(rng: &mut R, out: &mut [f32]) {
    for v in out {
        *v = StandardNormal.sample(rng);
    }
}

/// Standard normal draws with the shape, dtype and device of `like`.
pub fn normal_like<R: rand::Rng + ?Sized>(rng: &mut R, like: &Tensor) -> Result<Tensor> {
    normal(rng, like.shape(), like.dtype(), like.device())
}

/// A tensor of independent draws from the uniform distribution on `[low, high)`.
pub fn uniform<R: rand::Rng + ?Sized>(
    rng: &mut R,
    shape: impl Into<Shape>,
    low: f64,
    high: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !(low.is_finite() && high.is_finite() && low < high) {
        return Err(Error::invalid(
            "uniform range",
            format!("needs finite low < high, got [{low}, {high})"),
        ));
    }
    let shape = shape.into();
    let dist = Uniform::new(low as f32, high as f32)
        .map_err(|e| Error::invalid("uniform range", e.to_string()))?;
    let values: Vec<f32> = (0..shape.elem_count()).map(|_| dist.sample(rng)).collect();
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// `count` labels drawn uniformly from `0..num_classes`, as a u32 tensor of shape `[count]`.
pub fn random_labels<R: rand::Rng + ?Sized>(
    rng: &mut R,
    count: usize,
    num_classes: usize,
    device: &Device,
) -> Result<Tensor> {
    if num_classes == 0 {
        return Err(Error::invalid("num_classes", "must be at least 1, got 0"));
    }
    let labels: Vec<u32> = (0..count)
        .map(|_| rng.random_range(0..num_classes as u32))
        .collect();
    Ok(Tensor::from_vec(labels, count, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_generator_continues_the_stream() -> Result<()> {
        use rand::Rng as _;
        let mut rng = seeded_rng(42);
        let _: Vec<u64> = (0..37).map(|_| rng.random()).collect();
        let _: f32 = rng.random(); // an odd number of 32-bit words
        let text = RngState::of(&rng).to_string();
        let mut restored: Rng = text.parse::<RngState>()?.restore();
        let expected: Vec<u64> = (0..100).map(|_| rng.random()).collect();
        let got: Vec<u64> = (0..100).map(|_| restored.random()).collect();
        assert_eq!(got, expected);
        // Another generator's state gives other numbers: the test can fail.
        let mut other = seeded_rng(43);
        assert_ne!(
            (0..4).map(|_| other.random()).collect::<Vec<u64>>(),
            got[..4]
        );
        for bad in [
            "",
            "ab:1:2",
            &format!("{}:x:0", "0".repeat(64)),
            &format!("{}:0", "0".repeat(64)),
        ] {
            let err = bad.parse::<RngState>().unwrap_err().to_string();
            assert!(err.contains("generator state"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn same_seed_same_noise() -> Result<()> {
        let a = normal(&mut seeded_rng(7), (3, 4), DType::F32, &Device::Cpu)?;
        let b = normal(&mut seeded_rng(7), (3, 4), DType::F32, &Device::Cpu)?;
        let c = normal(&mut seeded_rng(8), (3, 4), DType::F32, &Device::Cpu)?;
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert_ne!(a.to_vec2::<f32>()?, c.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn normal_moments() -> Result<()> {
        let n = 200_000;
        let x = normal(&mut seeded_rng(1), n, DType::F64, &Device::Cpu)?.to_vec1::<f64>()?;
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        Ok(())
    }

    #[test]
    fn uniform_range_and_bad_range() -> Result<()> {
        let x = uniform(
            &mut seeded_rng(2),
            10_000,
            -1.0,
            3.0,
            DType::F32,
            &Device::Cpu,
        )?;
        let v = x.to_vec1::<f32>()?;
        assert!(v.iter().all(|&u| (-1.0..3.0).contains(&u)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        let err = uniform(&mut seeded_rng(2), 3, 1.0, 1.0, DType::F32, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("low < high"), "{err}");
        Ok(())
    }
}
