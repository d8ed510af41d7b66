//! Evaluation metrics that give the numbers of the reference tools, so that a figure from this
//! project can sit in a table beside theirs:
//!
//! - [`roc_auc`]: scikit-learn's `roc_auc_score` (area under the ROC curve by the trapezoid rule
//!   over distinct thresholds, so a tied positive/negative pair counts one half);
//! - [`average_precision`]: scikit-learn's `average_precision_score` (the step-wise sum of
//!   `(R_n - R_{n-1}) P_n` over distinct thresholds, no interpolation);
//! - [`frechet_distance`]: pytorch-fid's `calculate_frechet_distance` in f64, and
//!   [`FeatureStats`] (mean and unbiased covariance of a feature matrix, as `np.cov`);
//! - [`FidInception`]: pytorch-fid's FID Inception-v3 on candle (pool3 features for the FID,
//!   the 1008 logits of its `fc` layer), loading pytorch-fid's `.pth` weights or safetensors, and
//!   [`inception_score`] (Salimans et al. 2016, 10 splits as their code);
//! - [`ImageFolder`]: a folder of images read as pytorch-fid reads it (its extensions, sorted
//!   file names, RGB, [0, 1]).
//!
//! The positive class is explicit in every API; input with one class, no rows, or a NaN is an
//! error, never a number. Weights that do not fit the network (a missing tensor, a wrong shape,
//! an unknown name) are an error naming the tensor, never loaded silently.

mod error;
mod frechet;
pub mod images;
pub mod inception;
mod ranking;

pub use error::{Error, Result};
pub use frechet::{frechet_distance, FeatureStats};
pub use images::{load_image_folder, ImageFolder};
pub use inception::{inception_score, FidInception, InceptionOutputs};
pub use ranking::{average_precision, roc_auc};
