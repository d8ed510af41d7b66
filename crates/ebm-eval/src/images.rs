//! Folders of images as pytorch-fid reads them: sorted file names, RGB, values in [0, 1].
//!
//! pytorch-fid takes the files of a folder whose names end in one of its extensions
//! ([`IMAGE_EXTENSIONS`], lower case, matched as `glob('*.png')` matches: not recursive, hidden
//! files skipped), sorts them by name, opens each with PIL's `.convert('RGB')` (grey is repeated
//! to three channels, alpha is dropped, palettes are looked up) and `ToTensor` (bytes / 255).
//! [`ImageFolder`] does the same, so the rows of a feature matrix are in pytorch-fid's order.
//! This build decodes PNG only (the workspace's `image` has only that feature): a file with
//! another image extension is an error naming it, never silently skipped, since skipping would
//! change the statistics. 16-bit PNGs are scaled to 8 bits (`v / 257`).
//!
//! ```no_run
//! use candle_core::Device;
//! use ebm_eval::images::ImageFolder;
//!
//! let folder = ImageFolder::open("samples/")?;
//! let first = folder.load(0..folder.len().min(50), &Device::Cpu)?; // [n, 3, H, W] in [0, 1]
//! # Ok::<(), ebm_eval::Error>(())
//! ```

use std::ffi::OsStr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The file name extensions pytorch-fid's `fid_score.py` takes from a folder (`IMAGE_EXTENSIONS`),
/// matched case-sensitively as its `glob` does on Linux.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// The image files of a folder, in pytorch-fid's order, all of one size (checked when opened,
/// from the file headers); pixels are read batch by batch with [`ImageFolder::load`].
#[derive(Debug, Clone)]
pub struct ImageFolder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    height: usize,
    width: usize,
}

fn file_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Whether pytorch-fid's `path.glob('*.<ext>')` over its extensions would take this name.
fn is_image_name(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    if name.starts_with('.') {
        return false; // glob's `*` does not match a leading dot
    }
    match name.rsplit_once('.') {
        Some((_, ext)) => IMAGE_EXTENSIONS.contains(&ext),
        None => false,
    }
}

fn open_reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    image::ImageReader::open(path)
        .map_err(|e| file_error(path, format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| file_error(path, format!("cannot read: {e}")))
}

fn decode_problem(e: &image::ImageError) -> String {
    match e {
        image::ImageError::Unsupported(_) => {
            format!("cannot decode: {e} (this build of ebm-eval reads PNG only)")
        }
        _ => format!("cannot decode: {e}"),
    }
}

/// `(height, width)` of an image file, from its header.
pub fn image_size(path: impl AsRef<Path>) -> Result<(usize, usize)> {
    let path = path.as_ref();
    let (w, h) = open_reader(path)?
        .into_dimensions()
        .map_err(|e| file_error(path, decode_problem(&e)))?;
    if w == 0 || h == 0 {
        return Err(file_error(path, format!("the image is empty ({w}x{h})")));
    }
    Ok((h as usize, w as usize))
}

/// One image file as PIL's `.convert('RGB')` and torchvision's `ToTensor` give it: `[3, H, W]`
/// values `byte / 255` in channel-major order, with its `(height, width)`.
pub fn read_rgb(path: impl AsRef<Path>) -> Result<(Vec<f32>, usize, usize)> {
    let path = path.as_ref();
    let img = open_reader(path)?
        .decode()
        .map_err(|e| file_error(path, decode_problem(&e)))?;
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut chw = vec![0f32; 3 * h * w];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * h * w + i] = f32::from(px.0[c]) / 255.0;
        }
    }
    Ok((chw, h, w))
}

impl ImageFolder {
    /// Lists the image files of `dir` (see [`IMAGE_EXTENSIONS`]) sorted by file name, and checks
    /// from their headers that each can be read and that all have one size. Errors name the
    /// folder or the file: a path that is not a folder, a folder without image files, a file
    /// that cannot be read, two files of different sizes (both named, with their sizes).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let meta = std::fs::metadata(dir)
            .map_err(|e| file_error(dir, format!("cannot open the folder: {e}")))?;
        if !meta.is_dir() {
            return Err(file_error(
                dir,
                "not a folder (expected a folder of images)",
            ));
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|e| file_error(dir, format!("cannot list the folder: {e}")))?;
        let mut files = Vec::new();
        let mut upper_case = 0usize;
        for entry in entries {
            let entry =
                entry.map_err(|e| file_error(dir, format!("cannot list the folder: {e}")))?;
            let name = entry.file_name();
            let path = entry.path();
            if is_image_name(&name) {
                if !path.is_dir() {
                    files.push(path);
                }
            } else if is_image_name(OsStr::new(&name.to_string_lossy().to_lowercase())) {
                upper_case += 1;
            }
        }
        if files.is_empty() {
            let hint = if upper_case > 0 {
                format!(
                    "; {upper_case} file(s) have an upper-case extension, which pytorch-fid does not take either"
                )
            } else {
                String::new()
            };
            return Err(file_error(
                dir,
                format!(
                    "no image files in the folder (pytorch-fid's extensions: .{}){hint}",
                    IMAGE_EXTENSIONS.join(", .")
                ),
            ));
        }
        // pytorch-fid sorts the paths; in one folder that is the file names, by code point
        // (byte order of UTF-8 on Unix).
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let (height, width) = image_size(&files[0])?;
        for f in &files[1..] {
            let (h, w) = image_size(f)?;
            if (h, w) != (height, width) {
                return Err(file_error(
                    dir,
                    format!(
                        "images of different sizes: {} is {width}x{height} but {} is {w}x{h} (width x height); pytorch-fid needs one size per folder",
                        files[0].display(),
                        f.display()
                    ),
                ));
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            height,
            width,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image files, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The number of images (at least one).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Always `false`: an open folder has at least one image.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// `(height, width)` of every image.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// The images `range` as `[n, 3, H, W]` f32 in [0, 1] on `device`.
    pub fn load(&self, range: Range<usize>, device: &Device) -> Result<Tensor> {
        if range.start >= range.end || range.end > self.files.len() {
            return Err(Error::Input(format!(
                "{}: image range {}..{} is empty or outside the {} images",
                self.dir.display(),
                range.start,
                range.end,
                self.files.len()
            )));
        }
        let (h, w) = (self.height, self.width);
        let n = range.len();
        let mut data = Vec::with_capacity(n * 3 * h * w);
        for path in &self.files[range] {
            let (chw, ih, iw) = read_rgb(path)?;
            if (ih, iw) != (h, w) {
                return Err(file_error(
                    path,
                    format!(
                        "is {iw}x{ih} (width x height), the other images of the folder are {w}x{h}"
                    ),
                ));
            }
            data.extend_from_slice(&chw);
        }
        Ok(Tensor::from_vec(data, (n, 3, h, w), device)?)
    }

    /// Every image, `[N, 3, H, W]` f32 in [0, 1] on `device`.
    pub fn load_all(&self, device: &Device) -> Result<Tensor> {
        self.load(0..self.files.len(), device)
    }
}

/// The images of a folder as `[N, 3, H, W]` f32 in [0, 1], in pytorch-fid's order (see
/// [`ImageFolder::open`] for the errors).
pub fn load_image_folder(dir: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
    ImageFolder::open(dir)?.load_all(device)
}
