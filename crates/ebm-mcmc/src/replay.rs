//! A replay buffer of past samples: persistent chains for contrastive-divergence training.

use candle_core::{DType, Device, Tensor};
use ebm_core::validate;

use crate::Result;

/// A first-in-first-out store of past samples (and their labels, for conditional models).
/// Each batch it hands out starts a fraction of its chains (5% by default) from uniform noise
/// and the rest from stored samples drawn uniformly with replacement; when it is empty every
/// chain starts from noise.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    sample_shape: Vec<usize>,
    sample_len: usize,
    restart_probability: f64,
    range: (f64, f64),
    data: Vec<f32>,
    labels: Vec<u32>,
    len: usize,
    next: usize,
}

/// Starting points for a batch of chains.
#[derive(Debug, Clone)]
pub struct ReplayBatch {
    /// `[B, ...]` starting samples.
    pub x: Tensor,
    /// `[B]` u32 labels, for a conditional model: stored labels for replayed chains, uniform
    /// random ones for restarted chains.
    pub labels: Option<Tensor>,
    /// Which chains were restarted from noise.
    pub restarted: Vec<bool>,
}

impl ReplayBuffer {
    /// A buffer of `capacity` samples of shape `sample_shape`, restarting each chain from
    /// `U(range)` with probability `restart_probability`.
    pub fn new(
        capacity: usize,
        sample_shape: &[usize],
        restart_probability: f64,
        range: (f64, f64),
    ) -> Result<Self> {
        validate::at_least_one("replay buffer capacity", capacity)?;
        validate::in_unit_range("restart_probability", restart_probability, 0.0, 1.0)?;
        if !(range.0.is_finite() && range.1.is_finite() && range.0 < range.1) {
            return Err(ebm_core::Error::invalid(
                "replay buffer range",
                format!("needs finite low < high, got {range:?}"),
            )
            .into());
        }
        let sample_len = sample_shape.iter().product();
        validate::at_least_one("replay buffer sample size", sample_len)?;
        Ok(Self {
            capacity,
            sample_shape: sample_shape.to_vec(),
            sample_len,
            restart_probability,
            range,
            data: Vec::new(),
            labels: Vec::new(),
            len: 0,
            next: 0,
        })
    }

    /// The IGEBM buffer: 10,000 samples, 5% restarts from `U(0, 1)`.
    pub fn igebm(sample_shape: &[usize]) -> Result<Self> {
        Self::new(10_000, sample_shape, 0.05, (0.0, 1.0))
    }

    /// The number of stored samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of stored samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Starting points for `batch` chains. `num_classes` is `Some(k)` for a conditional model,
    /// whose restarted chains get uniform random labels in `0..k`.
    pub fn sample<R: rand::Rng + ?Sized>(
        &self,
        batch: usize,
        num_classes: Option<usize>,
        device: &Device,
        rng: &mut R,
    ) -> Result<ReplayBatch> {
        validate::at_least_one("batch", batch)?;
        if let Some(k) = num_classes {
            validate::at_least_one("num_classes", k)?;
        }
        let (lo, hi) = (self.range.0 as f32, self.range.1 as f32);
        let mut x = Vec::with_capacity(batch * self.sample_len);
        let mut labels = Vec::with_capacity(batch);
        let mut restarted = Vec::with_capacity(batch);
        for _ in 0..batch {
            let restart = self.is_empty() || rng.random::<f64>() < self.restart_probability;
            if restart {
                x.extend((0..self.sample_len).map(|_| lo + (hi - lo) * rng.random::<f32>()));
                labels.push(num_classes.map_or(0, |k| rng.random_range(0..k as u32)));
            } else {
                let i = rng.random_range(0..self.len);
                x.extend_from_slice(&self.data[i * self.sample_len..(i + 1) * self.sample_len]);
                labels.push(self.labels[i]);
            }
            restarted.push(restart);
        }
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.sample_shape);
        Ok(ReplayBatch {
            x: Tensor::from_vec(x, shape, device)?,
            labels: match num_classes {
                Some(_) => Some(Tensor::from_vec(labels, batch, device)?),
                None => None,
            },
            restarted,
        })
    }

    /// Stores a batch of samples `[B, ...]` (and their labels), overwriting the oldest ones
    /// when full.
    pub fn push(&mut self, x: &Tensor, labels: Option<&Tensor>) -> Result<()> {
        let batch = validate::check_batch_shape(x, &self.sample_shape, "replay buffer samples")?;
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let labels = match labels {
            Some(l) => l.to_dtype(DType::U32)?.to_vec1::<u32>()?,
            None => vec![0; batch],
        };
        if labels.len() != batch {
            return Err(ebm_core::Error::Shape {
                what: "replay buffer labels".into(),
                expected: format!("[{batch}]"),
                got: vec![labels.len()],
            }
            .into());
        }
        for (sample, label) in values.chunks(self.sample_len).zip(labels) {
            if self.len < self.capacity {
                self.data.extend_from_slice(sample);
                self.labels.push(label);
                self.len += 1;
            } else {
                let at = self.next * self.sample_len;
                self.data[at..at + self.sample_len].copy_from_slice(sample);
                self.labels[self.next] = label;
            }
            self.next = (self.next + 1) % self.capacity;
        }
        Ok(())
    }

    /// The stored samples (`len x sample size`, in storage order), their labels, and the slot
    /// the next sample goes into: everything [`ReplayBuffer::restore`] needs.
    pub fn contents(&self) -> (&[f32], &[u32], usize) {
        (&self.data, &self.labels, self.next)
    }

    /// Refills the buffer with saved [`ReplayBuffer::contents`]; sizes are checked.
    pub fn restore(&mut self, data: Vec<f32>, labels: Vec<u32>, next: usize) -> Result<()> {
        let len = labels.len();
        if len > self.capacity
            || data.len() != len * self.sample_len
            || (len > 0 && next >= self.capacity)
            || (len < self.capacity && next != len % self.capacity)
        {
            return Err(ebm_core::Error::invalid(
                "replay buffer contents",
                format!(
                    "{} values and {len} labels with next slot {next} do not fit a buffer of {} samples of {} values",
                    data.len(),
                    self.capacity,
                    self.sample_len
                ),
            )
            .into());
        }
        self.data = data;
        self.labels = labels;
        self.len = len;
        self.next = next;
        Ok(())
    }

    /// The storage slot of the `k`-th most recent sample (`k < len`).
    fn nth_recent(&self, k: usize) -> usize {
        (self.next + self.capacity - 1 - k) % self.capacity
    }

    /// Up to `count` stored samples (the most recent first) with their labels, for pictures.
    pub fn recent(&self, count: usize, device: &Device) -> Result<(Tensor, Vec<u32>)> {
        if self.is_empty() {
            return Err(ebm_core::Error::invalid("replay buffer", "is empty").into());
        }
        let count = count.min(self.len);
        let mut x = Vec::with_capacity(count * self.sample_len);
        let mut labels = Vec::with_capacity(count);
        for k in 0..count {
            let i = self.nth_recent(k);
            x.extend_from_slice(&self.data[i * self.sample_len..(i + 1) * self.sample_len]);
            labels.push(self.labels[i]);
        }
        let mut shape = vec![count];
        shape.extend_from_slice(&self.sample_shape);
        Ok((Tensor::from_vec(x, shape, device)?, labels))
    }

    /// Stored samples of one label, the most recent first, at most `count`; `None` when the
    /// buffer holds none of that label.
    pub fn recent_of_label(
        &self,
        label: u32,
        count: usize,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let mut x = Vec::new();
        let mut found = 0;
        for k in 0..self.len {
            if found == count {
                break;
            }
            let i = self.nth_recent(k);
            if self.labels[i] == label {
                x.extend_from_slice(&self.data[i * self.sample_len..(i + 1) * self.sample_len]);
                found += 1;
            }
        }
        if found == 0 {
            return Ok(None);
        }
        let mut shape = vec![found];
        shape.extend_from_slice(&self.sample_shape);
        Ok(Some(Tensor::from_vec(x, shape, device)?))
    }
}
