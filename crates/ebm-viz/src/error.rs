//! The error type of `ebm-viz`.

use std::path::PathBuf;

/// What can go wrong drawing or writing a picture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The images tensor does not have a usable shape.
    #[error("cannot draw a grid: {0}")]
    Shape(String),
    /// A plot has nothing to draw or non-finite data.
    #[error("cannot draw the plot: {0}")]
    Plot(String),
    /// The PNG could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: image::ImageError,
    },
    /// A folder could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading the tensor failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn save(img: &image::RgbImage, path: &std::path::Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    img.save(path).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        source,
    })
}
