//! Checks of tensors and hyper-parameters that turn bad input into clear errors instead of
//! panics or NaNs ten minutes later.

use candle_core::{DType, Tensor};

use crate::{Error, Result};

/// Fails with [`Error::NonFinite`] when `t` holds a NaN or an infinity.
///
/// `t - t` is zero for finite values and NaN otherwise, so one subtraction and one sum decide,
/// on any device and without an overflow for large finite values.
pub fn check_finite(t: &Tensor, what: &str) -> Result<()> {
    let probe = t
        .to_dtype(DType::F32)?
        .sub(&t.to_dtype(DType::F32)?)?
        .sum_all()?;
    if probe.to_scalar::<f32>()?.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.into() })
    }
}

/// Fails unless `t` is a batch `[B, ...]` with `B >= 1` whose sample shape equals `sample`.
pub fn check_batch_shape(t: &Tensor, sample: &[usize], what: &str) -> Result<usize> {
    let dims = t.dims();
    if dims.len() != sample.len() + 1 || dims[1..] != *sample || dims[0] == 0 {
        return Err(Error::Shape {
            what: what.into(),
            expected: format!(
                "[batch >= 1, {}]",
                sample
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            got: dims.to_vec(),
        });
    }
    Ok(dims[0])
}

/// Fails unless `value` is finite and strictly positive.
pub fn positive(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(
            name,
            format!("must be a finite number > 0, got {value}"),
        ))
    }
}

/// Fails unless `value` is finite and at least zero.
pub fn non_negative(name: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(
            name,
            format!("must be a finite number >= 0, got {value}"),
        ))
    }
}

/// Fails unless `value` lies in the closed interval `[low, high]`.
pub fn in_unit_range(name: &str, value: f64, low: f64, high: f64) -> Result<f64> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            name,
            format!("must lie in [{low}, {high}], got {value}"),
        ))
    }
}

/// Fails unless `value >= 1`.
pub fn at_least_one(name: &str, value: usize) -> Result<usize> {
    if value >= 1 {
        Ok(value)
    } else {
        Err(Error::invalid(name, "must be at least 1, got 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finite_check_catches_nan_and_inf_only() -> Result<()> {
        let ok = Tensor::new(&[1f32, -3e38, 3e38], &Device::Cpu)?;
        check_finite(&ok, "x")?;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[1f32, bad], &Device::Cpu)?;
            let err = check_finite(&t, "Langevin start").unwrap_err();
            assert_eq!(
                err.to_string(),
                "Langevin start contains NaN or infinite values"
            );
        }
        Ok(())
    }

    #[test]
    fn batch_shape_names_expectation() -> Result<()> {
        let t = Tensor::zeros((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
        assert_eq!(check_batch_shape(&t, &[3, 32, 32], "x")?, 2);
        let err = check_batch_shape(&t, &[1, 28, 28], "IGEBM input").unwrap_err();
        assert_eq!(
            err.to_string(),
            "IGEBM input: expected shape [batch >= 1, 1, 28, 28], got [2, 3, 32, 32]"
        );
        Ok(())
    }

    #[test]
    fn parameter_checks() {
        assert!(positive("step_size", 0.1).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = positive("step_size", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid step_size: must be a finite number > 0"));
        }
        assert!(non_negative("noise", 0.0).is_ok());
        assert!(in_unit_range("p", 1.5, 0.0, 1.0).is_err());
        assert!(at_least_one("steps", 0).is_err());
    }
}
