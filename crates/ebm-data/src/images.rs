//! [`ImageSet`]: 8-bit images and labels in memory, and tensors made from them.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;

use std::path::Path;

use crate::idx::{self, IdxArray};
use crate::{Error, Result};

/// The file of an image/label pair that a problem belongs to.
enum PairFile {
    Images,
    Labels,
}

/// Checks that `images` is `[N, H, W]`, `labels` is `[N]` and every label is `< classes`;
/// otherwise says which of the two is at fault, and what is wrong (`image_name` names the
/// images in the message of a count mismatch).
fn check_pair(
    images: &IdxArray,
    labels: &IdxArray,
    classes: usize,
    image_name: &str,
) -> std::result::Result<(), (PairFile, String)> {
    if images.dims.len() != 3 {
        return Err((
            PairFile::Images,
            format!(
                "expected images of dimensions [N, H, W], got {:?}",
                images.dims
            ),
        ));
    }
    if labels.dims.len() != 1 {
        return Err((
            PairFile::Labels,
            format!("expected labels of dimensions [N], got {:?}", labels.dims),
        ));
    }
    if labels.dims[0] != images.dims[0] {
        return Err((
            PairFile::Labels,
            format!(
                "{} labels for the {} images of {image_name}",
                labels.dims[0], images.dims[0]
            ),
        ));
    }
    match labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= classes)
    {
        Some((i, bad)) => Err((
            PairFile::Labels,
            format!("label {i} is {bad}, out of range for {classes} classes"),
        )),
        None => Ok(()),
    }
}

/// Images `[N, C, H, W]` of unsigned bytes with one label each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    images: Vec<u8>,
    labels: Vec<u8>,
    shape: [usize; 3],
    classes: usize,
}

impl ImageSet {
    /// Checks that `images` holds one `shape` image per label and every label is `< classes`.
    pub fn new(
        images: Vec<u8>,
        labels: Vec<u8>,
        shape: [usize; 3],
        classes: usize,
    ) -> Result<Self> {
        let per = shape.iter().product::<usize>();
        if per == 0 || images.len() != per * labels.len() {
            return Err(Error::Invalid(format!(
                "{} image bytes do not make {} images of shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(Error::Invalid(format!(
                "label {bad} is out of range for {classes} classes"
            )));
        }
        Ok(Self {
            images,
            labels,
            shape,
            classes,
        })
    }

    /// Pairs an IDX image array `[N, H, W]` with an IDX label array `[N]`.
    pub fn from_idx(images: IdxArray, labels: IdxArray, classes: usize) -> Result<Self> {
        check_pair(&images, &labels, classes, "the image array")
            .map_err(|(_, problem)| Error::Invalid(problem))?;
        Self::from_checked_pair(images, labels, classes)
    }

    /// Reads an IDX image file `[N, H, W]` and its IDX label file `[N]` (gzip or plain); a
    /// problem is reported under the name of the file that has it.
    pub fn read_idx_pair(image_path: &Path, label_path: &Path, classes: usize) -> Result<Self> {
        let images = idx::read(image_path)?;
        let labels = idx::read(label_path)?;
        let corrupt = |path: &Path, problem: String| Error::Corrupt {
            path: path.to_path_buf(),
            problem,
        };
        let image_name = image_path.display().to_string();
        check_pair(&images, &labels, classes, &image_name).map_err(|(at_fault, problem)| {
            match at_fault {
                PairFile::Images => corrupt(image_path, problem),
                PairFile::Labels => corrupt(label_path, problem),
            }
        })?;
        Self::from_checked_pair(images, labels, classes).map_err(|e| match e {
            Error::Invalid(problem) => corrupt(image_path, problem),
            other => other,
        })
    }

    fn from_checked_pair(images: IdxArray, labels: IdxArray, classes: usize) -> Result<Self> {
        Self::new(
            images.data,
            labels.data,
            [1, images.dims[1], images.dims[2]],
            classes,
        )
    }

    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[C, H, W]` of one image.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Every label.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.image_len();
        &self.images[i * per..(i + 1) * per]
    }

    fn image_len(&self) -> usize {
        self.shape.iter().product()
    }

    fn check(&self, indices: &[usize]) -> Result<()> {
        if indices.is_empty() {
            return Err(Error::Invalid("an empty batch was asked for".into()));
        }
        if let Some(bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Invalid(format!(
                "image index {bad} is out of range for {} images",
                self.len()
            )));
        }
        Ok(())
    }

    fn batch_shape(&self, n: usize) -> (usize, usize, usize, usize) {
        (n, self.shape[0], self.shape[1], self.shape[2])
    }

    /// Images at `indices` as an f32 tensor `[B, C, H, W]` with values `byte / 255` in [0, 1].
    pub fn tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.check(indices)?;
        let mut v = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            v.extend(self.image(i).iter().map(|&b| b as f32 / 255.0));
        }
        Ok(Tensor::from_vec(
            v,
            self.batch_shape(indices.len()),
            device,
        )?)
    }

    /// Images at `indices` with uniform dequantisation, `(byte + U(0, 1)) / 256`, as IGEBM
    /// trains on them: continuous values in [0, 1).
    pub fn dequantized<R: rand::Rng + ?Sized>(
        &self,
        indices: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Result<Tensor> {
        self.check(indices)?;
        let mut v = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            v.extend(
                self.image(i)
                    .iter()
                    .map(|&b| (b as f32 + rng.random::<f32>()) / 256.0),
            );
        }
        Ok(Tensor::from_vec(
            v,
            self.batch_shape(indices.len()),
            device,
        )?)
    }

    /// Labels at `indices` as a u32 tensor `[B]`.
    pub fn labels_tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        self.check(indices)?;
        let v: Vec<u32> = indices.iter().map(|&i| self.labels[i] as u32).collect();
        Ok(Tensor::from_vec(v, indices.len(), device)?)
    }

    /// The images at `indices`, as a new set.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        self.check(indices)?;
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Self::new(images, labels, self.shape, self.classes)
    }

    /// Concatenates sets of one image shape (e.g. CIFAR-10's five training batches).
    pub fn concat(sets: &[ImageSet]) -> Result<Self> {
        let first = sets
            .first()
            .ok_or_else(|| Error::Invalid("nothing to concatenate".into()))?;
        if let Some(other) = sets
            .iter()
            .find(|s| s.shape != first.shape || s.classes != first.classes)
        {
            return Err(Error::Invalid(format!(
                "cannot concatenate images of shape {:?} with {:?}",
                first.shape, other.shape
            )));
        }
        let images = sets.iter().flat_map(|s| s.images.iter().copied()).collect();
        let labels = sets.iter().flat_map(|s| s.labels.iter().copied()).collect();
        Self::new(images, labels, first.shape, first.classes)
    }
}

/// Endless mini-batches of indices: each epoch is a fresh seeded shuffle of `0..n`, cut into
/// batches of `batch_size` (the last, incomplete batch of an epoch is dropped).
#[derive(Debug, Clone)]
pub struct ShuffledBatches {
    order: Vec<usize>,
    batch_size: usize,
    position: usize,
    epoch: usize,
}

impl ShuffledBatches {
    /// Batches over `0..n`; fails when `batch_size` is 0 or larger than `n`.
    pub fn new(n: usize, batch_size: usize) -> Result<Self> {
        if batch_size == 0 || batch_size > n {
            return Err(Error::Invalid(format!(
                "batch size {batch_size} does not fit a data set of {n} images"
            )));
        }
        Ok(Self {
            order: (0..n).collect(),
            batch_size,
            position: n, // forces a shuffle before the first batch
            epoch: 0,
        })
    }

    /// The next batch of indices, shuffling with `rng` when an epoch starts.
    pub fn next_batch<R: rand::Rng + ?Sized>(&mut self, rng: &mut R) -> &[usize] {
        if self.position + self.batch_size > self.order.len() {
            self.order.shuffle(rng);
            self.position = 0;
            self.epoch += 1;
        }
        let batch = &self.order[self.position..self.position + self.batch_size];
        self.position += self.batch_size;
        batch
    }

    /// Epochs started so far.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The current order, position in it, and epoch: what [`ShuffledBatches::restore`] takes
    /// to continue a saved run exactly.
    pub fn state(&self) -> (&[usize], usize, usize) {
        (&self.order, self.position, self.epoch)
    }

    /// Continues from a saved [`ShuffledBatches::state`]; the order must be a permutation of
    /// the data set's indices and the position inside it.
    pub fn restore(&mut self, order: Vec<usize>, position: usize, epoch: usize) -> Result<()> {
        let n = self.order.len();
        let mut seen = vec![false; n];
        let permutation = order.len() == n
            && order
                .iter()
                .all(|&i| i < n && !std::mem::replace(&mut seen[i], true));
        if !permutation || position > n {
            return Err(Error::Invalid(format!(
                "saved batch order: {} indices at position {position} are not a permutation of the {n} images",
                order.len()
            )));
        }
        self.order = order;
        self.position = position;
        self.epoch = epoch;
        Ok(())
    }
}
