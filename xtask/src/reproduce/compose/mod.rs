//! Compositional visual generation (Du, Li & Mordatch 2020) on scenes the project generates
//! itself (`ebm_data::scenes`): one conditional energy per attribute (class-conditional for
//! shape, colour and size, conditioned on `(x, y)` for position), trained independently,
//! composed with `ebm-compose` (AND, OR, NOT) and judged by attribute classifiers trained on the
//! same generator.
//!
//! The energies live in the latent space of a scene VAE trained once without labels
//! ([`latent`]): `E(z | c)` over its code `z`, chains in `z`, and their end points decoded to
//! images for the judges (composition in a generator's latent space, as Nie et al. 2021 do
//! with StyleGAN, and sampling in a VAE's space as VAEBM does). A position sample counts as
//! right when the judged centre lies within `position_tolerance` of the request.

pub mod latent;
pub mod template;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use ebm_compose::ConceptSet;
use ebm_core::{seeded_rng, Rng};
use ebm_data::scenes::{
    Attribute, Color, Combination, ObjectSpec, SceneBatch, SceneConfig, SceneGenerator,
    SceneLabels, Shape, Size,
};
use ebm_mcmc::{Hmc, HmcConfig, Langevin, LangevinConfig, Mala, MalaConfig, Sampler};
use ebm_nn::{checkpoint, Classifier, ClassifierConfig, Trainable};
use ebm_train::{Adam, AdamConfig, StepLog};
use ebm_viz::{save_grid, GridOptions, LinePlot, Series};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use self::latent::{
    latent_noise, AutoencoderRecipe, ChainStart, ConceptIterations, ConceptRecipe, ConceptTrainer,
    ConditionKind, LatentConcept, SceneAutoencoder,
};
use self::template::TemplateReader;
use super::resume::Checkpoints;
use super::{Mode, Options};
use crate::report::{table, Report};

/// How the attribute judges are trained.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeRecipe {
    /// Convolution widths.
    pub widths: Vec<usize>,
    /// Feature width.
    pub feature_dim: usize,
    /// Adam steps of each judge.
    pub iterations: JudgeIterations,
    /// Scenes per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Train on renders made softer at random: blurred 0 to 3 times by a 3x3 binomial kernel,
    /// as likely each, plus a little pixel noise ([`soften`]). Judges trained on crisp renders
    /// only read the VAE's slightly soft small objects as large (size 0.826 on its
    /// reconstructions; by eye they are plainly small), and many soft squares as circles.
    pub soft_renders: bool,
    /// Train the shape judge on varied renders too, before any softening: half the scenes
    /// with their corners rounded ([`round_corners`]) and half unevenly coloured ([`tint`]),
    /// each at random. A judge trained on softened renders alone read the VAE's squares with
    /// slightly rounded corners and a two-tone fill as circles, which the eye reads as
    /// squares plainly. Shape judges of 1,500 steps (scratch probe, one seed), on the 64
    /// single-shape samples of two runs: soft renders only 0.609 / 0.578, these renders too
    /// 0.781 / 0.672 (the template reader 0.812 / 0.656); on the same VAEs' reconstructions
    /// of 500 fresh scenes, whose shapes are known, 0.972 / 0.938 against 0.940 / 0.922; on
    /// 1,000 fresh scenes, crisp and blurred three times, 1.000 both. Tinting is what moves
    /// the samples' reading (rounding alone 0.641 on the first run's samples). In a run, from
    /// the run's seed, it read the samples at 0.641 against 0.609 for the judge of soft
    /// renders, and the VAE's reconstructions at 0.774 against 0.798 (the template reader
    /// 0.962; most misread squares read as circles): how a judge reads decoded images
    /// depends on its seed as much as on these renders. With a VAE trained longer, which draws
    /// small shapes as asked, the judge of these renders read that VAE's reconstructions
    /// better too (0.996 against 0.988) and the samples at 0.930 against 0.844; the quick
    /// recipe turns it on.
    pub varied_shape_renders: bool,
    /// Shape judges trained from seeds of their own, whose class probabilities are averaged:
    /// how one judge reads decoded samples depends on its seed. Three judges of 1,500 steps
    /// (the run's own and two from a scratch probe, the same recipe) read the same 128
    /// single-shape samples at 0.930, 0.945 and 0.969, and another run's at 0.930, 0.961 and
    /// 0.914; every one read fresh scenes at 1.000 (measured).
    pub shape_judges: usize,
}

/// Adam steps of each judge. On soft renders 400 steps left the size judge at 0.836 on crisp
/// scenes and the shape judge needed 1,500 even on crisp ones (0.38 after 400); after 400,
/// colour and position read fresh scenes at 1.000 and 0.998 (measured).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeIterations {
    /// The shape classifier's steps.
    pub shape: usize,
    /// The colour classifier's steps.
    pub color: usize,
    /// The size classifier's steps.
    pub size: usize,
    /// The position regressor's steps.
    pub position: usize,
}

impl JudgeIterations {
    /// The same number of steps for every judge.
    pub fn all(steps: usize) -> Self {
        Self {
            shape: steps,
            color: steps,
            size: steps,
            position: steps,
        }
    }

    /// The steps of the judge of `attribute` (shape, color, size or position).
    fn of(&self, attribute: &str) -> usize {
        match attribute {
            "shape" => self.shape,
            "color" => self.color,
            "size" => self.size,
            _ => self.position,
        }
    }
}

/// Everything that defines a compose run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Scene side in pixels.
    pub image_size: usize,
    /// The scene VAE whose latent space the concepts live in.
    pub autoencoder: AutoencoderRecipe,
    /// Every concept energy (`--iterations N` gives every concept `N` steps).
    pub concept: ConceptRecipe,
    /// A position sample is right within this distance (unit-square coordinates) of the request.
    pub position_tolerance: f64,
    /// (shape, colour) pairs never shown to the shape, colour and joint models.
    pub heldout_pairs: Vec<(String, String)>,
    /// The continual-learning concept (size) is trained later, on scenes of these shapes only.
    pub continual_shapes: Vec<String>,
    /// The sampler of every experiment, from `N(0, I)` in the latent space.
    pub eval_langevin: LangevinConfig,
    /// Guidance `gamma` of every discrete term in the experiments' expressions
    /// ([`ConceptSet::guided`]): `c=v` is sampled from `p(z | v) p(v | z)^gamma`, `p(v | z)`
    /// the softmax of the concept's energies over its values. 0 samples the terms as they are.
    pub guidance: f64,
    /// Samples per requested condition.
    pub samples_per_condition: usize,
    /// Requested conditions per experiment (where they are drawn at random).
    pub conditions: usize,
    /// Scenes whose position is inferred.
    pub infer_images: usize,
    /// The attribute judges.
    pub judge: JudgeRecipe,
    /// The sampler comparison: Langevin against MALA and HMC at the same wall-clock time.
    pub samplers: SamplerComparison,
}

/// Langevin, MALA and HMC on one composed energy, each given the wall-clock time the recipe's
/// Langevin chains take; MALA and HMC adapt their step size to a target acceptance rate in the
/// first `warmup_fraction` of their iterations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerComparison {
    /// MALA's starting step size `eta` (proposal noise `sqrt(2 eta)`).
    pub mala_step_size: f64,
    /// MALA's target acceptance rate.
    pub mala_target_accept: f64,
    /// HMC's starting leapfrog step size.
    pub hmc_step_size: f64,
    /// Leapfrog steps per HMC iteration.
    pub hmc_leapfrog_steps: usize,
    /// HMC's target acceptance rate.
    pub hmc_target_accept: f64,
    /// The share of each budget spent adapting the step size.
    pub warmup_fraction: f64,
}

impl Default for SamplerComparison {
    fn default() -> Self {
        Self {
            mala_step_size: 1e-3,
            mala_target_accept: 0.574,
            hmc_step_size: 0.03,
            hmc_leapfrog_steps: 5,
            hmc_target_accept: 0.8,
            warmup_fraction: 0.3,
        }
    }
}

impl Recipe {
    /// 32x32 scenes, a 16-dimensional latent space and small MLP energies: within 15 minutes
    /// on a 2-core CPU.
    pub fn quick() -> Self {
        let langevin = LangevinConfig {
            step_size: 0.05,
            noise_scale: 0.1,
            steps: 60,
            grad_clip: None,
            clamp: None,
        };
        Self {
            image_size: 32,
            // Small batches, many steps: at batch 64 and 1,500-2,500 steps the VAE drew blobs
            // (shape 0.33 by the judge on its reconstructions); at batch 16 and 6,000 steps, in
            // about the same time, the large shapes are clear but small squares and diamonds
            // come out round (reconstruction error 14.3, the judge 0.798 on reconstructions,
            // single shape 0.641). At 10,000 steps they are drawn as asked: error 6.3, the judge
            // 0.988 on reconstructions, single shape 0.891 on the same judges; 14,000 steps gave
            // 5.6, 0.994 and 0.906 for 130 s more (measured; decoder width 24 instead at 6,000
            // steps: 16.1, 0.798, 0.625). Trained on one core beside the judges, 16,000 steps
            // take about 520 s, less than the judges (error 4.7, single shape 0.969 by three
            // shape judges voting, measured in one fresh run).
            autoencoder: AutoencoderRecipe {
                latent_dim: 16,
                encoder_widths: vec![16, 32, 32],
                encoder_features: 128,
                decoder_width: 16,
                iterations: 16_000,
                batch_size: 16,
                lr: 2e-3,
                kl_weight: 0.01,
                // A floor on the posterior's spread makes the decoder draw a whole ball of
                // codes around each scene's as that scene: single shape 0.547 against 0.422
                // (templates 0.703 against 0.656) on the same judges, at a reconstruction
                // error of 15.2 against 9.0; at 0.4 the reconstructions lose the shapes
                // (0.948) and single shape is 0.500 (measured).
                min_posterior_std: 0.2,
            },
            concept: ConceptRecipe {
                hidden: vec![128, 128],
                // Shape is the concept short of its target: 3,000 steps read its codes at
                // 0.962 against 0.878 after 2,000; colour and size sample at 0.990 / 0.969
                // after 1,000 steps (1.000 / 1.000 after 2,000). Longest first in the work
                // queue, the phase took 480 s on two cores against about 670 s at 2,000 steps
                // each (measured).
                iterations: ConceptIterations {
                    shape: 3000,
                    color: 1000,
                    size: 1000,
                    position: 2000,
                    joint: 2000,
                },
                batch_size: 64,
                lr: 1e-3,
                adam_beta1: 0.9,
                l2_coeff: 0.1,
                prior_weight: 1.0,
                position_frequencies: 3,
                conditional_weight: 1.0,
                conditional_candidates: 32,
                // 32,768 scenes: the shape energy's 3,000 steps of 64 draw each of its
                // share (about 27,000) 7 times on average.
                code_pool: 32_768,
                standardise_codes: true,
                chain_start: ChainStart::SceneCodes,
                langevin: langevin.clone(),
            },
            position_tolerance: 0.2,
            heldout_pairs: vec![
                ("square".into(), "red".into()),
                ("circle".into(), "green".into()),
                ("triangle".into(), "blue".into()),
                ("diamond".into(), "yellow".into()),
            ],
            continual_shapes: vec!["square".into(), "circle".into()],
            // Half the training noise: colour 0.979 against 0.917, shape 0.609 against 0.547
            // on the same models and judges (measured).
            eval_langevin: LangevinConfig {
                noise_scale: 0.05,
                ..langevin
            },
            guidance: 0.0,
            // 32 per request, 128 single-shape samples: on one run's models 16 per request read
            // shape at 0.891 and 32 at 0.844 (binomial spread about 0.04 at 64 samples, 0.03
            // at 128); the experiments then take about 20 s (measured).
            samples_per_condition: 32,
            conditions: 16,
            infer_images: 100,
            judge: JudgeRecipe {
                widths: vec![16, 32, 32],
                feature_dim: 64,
                iterations: JudgeIterations {
                    shape: 1500,
                    color: 400,
                    size: 1500,
                    position: 400,
                },
                batch_size: 64,
                lr: 1e-3,
                soft_renders: true,
                // See the field. On the models of one run with the 10,000-step VAE (the same
                // samples, only the judges trained again): the VAE's reconstructions of scenes
                // of known shape read at 0.996 against 0.988, the single-shape samples at 0.930
                // against 0.844 (measured).
                varied_shape_renders: true,
                shape_judges: 3,
            },
            samplers: SamplerComparison::default(),
        }
    }

    /// 64x64 scenes, a larger VAE and longer training, for a GPU.
    pub fn full() -> Self {
        let quick = Self::quick();
        Self {
            image_size: 64,
            autoencoder: AutoencoderRecipe {
                latent_dim: 32,
                encoder_widths: vec![32, 64, 64, 128],
                encoder_features: 256,
                decoder_width: 32,
                iterations: 40_000,
                batch_size: 32,
                ..quick.autoencoder.clone()
            },
            concept: ConceptRecipe {
                hidden: vec![256, 256, 256],
                iterations: ConceptIterations::all(10_000),
                batch_size: 128,
                ..quick.concept.clone()
            },
            position_tolerance: 0.1,
            samples_per_condition: 32,
            conditions: 32,
            infer_images: 500,
            judge: JudgeRecipe {
                widths: vec![32, 64, 64],
                feature_dim: 128,
                iterations: JudgeIterations::all(4000),
                batch_size: 128,
                lr: 1e-3,
                ..quick.judge.clone()
            },
            ..quick
        }
    }

    /// The recipe for a mode.
    pub fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Quick => Self::quick(),
            Mode::Full => Self::full(),
        }
    }

    /// What a judge's training depends on (the judges are trained first, from the seed): the
    /// key its checkpoints are saved under, so that `--resume` under a recipe that changed
    /// elsewhere reuses them.
    fn judge_key(&self, seed: u64) -> serde_json::Value {
        serde_json::json!({"image_size": self.image_size, "judge": self.judge, "seed": seed})
    }

    /// What the VAE's training depends on: its own recipe, the scenes it sees (their size,
    /// the held-out pairs it never sees) and the seed. It trains first, with a generator of
    /// its own, so it does not depend on the judges.
    fn autoencoder_key(&self, seed: u64) -> serde_json::Value {
        serde_json::json!({
            "image_size": self.image_size,
            "autoencoder": self.autoencoder,
            "heldout_pairs": self.heldout_pairs,
            "seed": seed,
        })
    }

    /// What a concept's training depends on: everything trained before it and the concept
    /// recipe, but not how the experiments sample (so `--resume` reruns only the experiments
    /// after a change to `eval_langevin`, the sample counts, the tolerance or the samplers).
    fn concept_key(&self, seed: u64) -> serde_json::Value {
        serde_json::json!({
            "autoencoder": self.autoencoder_key(seed),
            "concept": self.concept,
            "continual_shapes": self.continual_shapes,
        })
    }

    fn heldout(&self) -> anyhow::Result<Vec<(Shape, Color)>> {
        self.heldout_pairs
            .iter()
            .map(|(s, c)| Ok((Shape::from_name(s)?, Color::from_name(c)?)))
            .collect()
    }

    fn continual(&self) -> anyhow::Result<Vec<Shape>> {
        self.continual_shapes
            .iter()
            .map(|s| Ok(Shape::from_name(s)?))
            .collect()
    }

    fn check(&self) -> anyhow::Result<()> {
        if ![32, 64].contains(&self.image_size) {
            anyhow::bail!(
                "image_size must be 32 or 64 (the decoder's sizes), got {}",
                self.image_size
            );
        }
        latent::check(&self.autoencoder, &self.concept)?;
        if !(self.guidance >= 0.0 && self.guidance.is_finite()) {
            anyhow::bail!("guidance must be a number >= 0, got {}", self.guidance);
        }
        if self.judge.shape_judges == 0 {
            anyhow::bail!("judge shape_judges must be at least 1");
        }
        if self.samples_per_condition == 0 || self.conditions == 0 {
            anyhow::bail!("samples_per_condition and conditions must be at least 1");
        }
        if self.position_tolerance <= 0.0 {
            anyhow::bail!(
                "position_tolerance must be > 0, got {}",
                self.position_tolerance
            );
        }
        let continual = self.continual()?;
        if continual.is_empty() || continual.len() == Shape::ALL.len() {
            anyhow::bail!("continual_shapes must name some shapes but not all of them");
        }
        self.heldout()?;
        Ok(())
    }
}

/// Fresh scenes on which each class concept's own reading of codes is measured.
const CODE_PROBE: usize = 500;

/// The concept models of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Concept {
    Shape,
    Color,
    Size,
    Position,
    /// Shape and colour jointly (the baseline of the held-out experiment).
    Joint,
}

impl Concept {
    fn name(self) -> &'static str {
        match self {
            Concept::Shape => "shape",
            Concept::Color => "color",
            Concept::Size => "size",
            Concept::Position => "position",
            Concept::Joint => "joint",
        }
    }

    /// What the concept's energy is conditioned on.
    fn kind(self, recipe: &ConceptRecipe) -> ConditionKind {
        match self {
            Concept::Shape => ConditionKind::Classes(Shape::ALL.len()),
            Concept::Color => ConditionKind::Classes(Color::ALL.len()),
            Concept::Size => ConditionKind::Classes(Size::ALL.len()),
            Concept::Position => ConditionKind::Position {
                frequencies: recipe.position_frequencies,
            },
            Concept::Joint => ConditionKind::Classes(Shape::ALL.len() * Color::ALL.len()),
        }
    }

    /// The concept's contrastive-divergence steps.
    fn iterations(self, steps: &ConceptIterations) -> usize {
        match self {
            Concept::Shape => steps.shape,
            Concept::Color => steps.color,
            Concept::Size => steps.size,
            Concept::Position => steps.position,
            Concept::Joint => steps.joint,
        }
    }

    /// The class of the (first) object of each scene (an error for position, which has none).
    fn labels(self, scenes: &[SceneLabels]) -> anyhow::Result<Vec<u32>> {
        let class = |attribute| -> anyhow::Result<Vec<u32>> {
            scenes
                .iter()
                .map(|l| Ok(first_object(l)?.combination().class(attribute) as u32))
                .collect()
        };
        match self {
            Concept::Shape => class(Attribute::Shape),
            Concept::Color => class(Attribute::Color),
            Concept::Size => class(Attribute::Size),
            Concept::Position => anyhow::bail!("the position concept has no classes"),
            Concept::Joint => scenes
                .iter()
                .map(|l| {
                    let o = first_object(l)?;
                    Ok(joint_class(o.shape, o.color))
                })
                .collect(),
        }
    }

    /// The condition features of each scene for `model`.
    fn features(self, model: &LatentConcept, scenes: &[SceneLabels]) -> anyhow::Result<Tensor> {
        if self == Concept::Position {
            let mut p = Vec::with_capacity(2 * scenes.len());
            for l in scenes {
                let o = first_object(l)?;
                p.extend([o.x, o.y]);
            }
            let p = Tensor::from_vec(p, (scenes.len(), 2), &Device::Cpu)?;
            return Ok(model.position_features(&p)?);
        }
        let labels = Tensor::from_vec(self.labels(scenes)?, scenes.len(), &Device::Cpu)?;
        Ok(model.class_features(&labels)?)
    }
}

/// The first object of a scene's labels, or an error for a scene without objects.
fn first_object(labels: &SceneLabels) -> anyhow::Result<&ObjectSpec> {
    labels
        .objects
        .first()
        .ok_or_else(|| anyhow::anyhow!("a scene without objects has no attributes to learn"))
}

/// The latent codes of scenes drawn and encoded once, with the scenes' labels: what the
/// concepts draw their batches from ([`ConceptRecipe::code_pool`]).
struct CodePool {
    /// Codes `[N, d]`, standardised as the VAE's codes are.
    codes: Tensor,
    labels: Vec<SceneLabels>,
}

impl CodePool {
    /// `n` scenes from `generator`, encoded by `autoencoder` a chunk at a time.
    fn encode(
        generator: &SceneGenerator,
        n: usize,
        autoencoder: &SceneAutoencoder,
        rng: &mut Rng,
        device: &Device,
    ) -> anyhow::Result<Self> {
        const CHUNK: usize = 1024;
        let mut codes = Vec::with_capacity(n.div_ceil(CHUNK));
        let mut labels = Vec::with_capacity(n);
        for start in (0..n).step_by(CHUNK) {
            let batch = generator.sample(CHUNK.min(n - start), rng)?;
            codes.push(autoencoder.encode_mean(&scene_tensor(&batch, device)?)?);
            labels.extend_from_slice(batch.labels());
        }
        Ok(Self {
            codes: Tensor::cat(&codes, 0)?,
            labels,
        })
    }

    /// The pooled scenes whose objects' combinations `generator` draws from: a pool for
    /// its training distribution (uniform over its combinations, as the whole pool is over
    /// its own).
    fn restricted_to(&self, generator: &SceneGenerator, name: &str) -> anyhow::Result<Self> {
        let allowed = &generator.config().combinations;
        let mut keep = Vec::new();
        for (i, l) in self.labels.iter().enumerate() {
            if l.objects.iter().all(|o| allowed.contains(&o.combination())) {
                keep.push(i as u32);
            }
        }
        if keep.is_empty() {
            anyhow::bail!(
                "none of the {} pooled scenes is one the {name} concept trains on",
                self.labels.len()
            );
        }
        self.rows(&keep)
    }

    /// `n` codes `[n, d]` and their scenes' labels, drawn uniformly with replacement.
    fn batch(&self, n: usize, rng: &mut Rng) -> anyhow::Result<(Tensor, Vec<SceneLabels>)> {
        let picks: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..self.labels.len()) as u32)
            .collect();
        let Self { codes, labels } = self.rows(&picks)?;
        Ok((codes, labels))
    }

    /// The pooled scenes at `picks` (repeats allowed), in that order.
    fn rows(&self, picks: &[u32]) -> anyhow::Result<Self> {
        Ok(Self {
            codes: self
                .codes
                .index_select(&Tensor::new(picks, self.codes.device())?, 0)?,
            labels: picks
                .iter()
                .map(|&i| self.labels[i as usize].clone())
                .collect(),
        })
    }
}

fn joint_class(shape: Shape, color: Color) -> u32 {
    (shape.index() * Color::ALL.len() + color.index()) as u32
}

/// Classifiers (shape, colour, size) and a position regressor that judge samples.
struct Judges {
    /// The shape judges that vote (their class probabilities averaged).
    shape: Vec<Classifier>,
    color: Classifier,
    size: Classifier,
    position: Classifier,
}

/// What the judges see in one image.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    shape: Shape,
    color: Color,
    size: Size,
    position: [f64; 2],
}

fn scene_tensor(batch: &SceneBatch, device: &Device) -> anyhow::Result<Tensor> {
    Ok(batch.tensor(device)?)
}

/// Trains the judge of `kind` (`member` > 0: another shape judge, from its own seed).
fn train_judge(
    kind: &str,
    member: usize,
    recipe: &Recipe,
    generator: &SceneGenerator,
    rng: &mut Rng,
    options: &Options,
) -> anyhow::Result<Classifier> {
    let device = &options.device;
    let j = &recipe.judge;
    let classes = match kind {
        "shape" => Shape::ALL.len(),
        "color" => Color::ALL.len(),
        "size" => Size::ALL.len(),
        _ => 2, // the position regressor's two outputs
    };
    let cfg = ClassifierConfig {
        channels: 3,
        image_size: recipe.image_size,
        widths: j.widths.clone(),
        feature_dim: j.feature_dim,
        num_classes: classes,
        // Shape, colour and size do not depend on where the object is; position does.
        global_pool: kind != "position",
    };
    let mut model = Classifier::new(&cfg, device, rng)?;
    let mut adam = Adam::new(model.params().vars(), AdamConfig::kingma_ba(j.lr))?;
    let iterations = j.iterations.of(kind);
    let checkpoints = Checkpoints::new(
        options,
        options.out.join("checkpoints").join(match member {
            0 => format!("judge-{kind}"),
            m => format!("judge-{kind}-{}", m + 1),
        }),
        format!("compose {kind} judge"),
        &recipe.judge_key(options.seed),
    )?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        snapshot.restore_model("model", &mut model)?;
        snapshot.restore_adam("adam", &mut adam)?;
        *rng = restore_rng(&snapshot)?;
        done = snapshot.step.min(iterations);
    }
    for step in done + 1..=iterations {
        let batch = generator.sample(j.batch_size, rng)?;
        let mut x = scene_tensor(&batch, device)?;
        if j.varied_shape_renders && kind == "shape" {
            x = tint(&round_corners(&x, rng)?, rng)?;
        }
        if j.soft_renders {
            x = soften(&x, rng)?;
        }
        let loss = match kind {
            "shape" | "color" | "size" => {
                let attribute = Attribute::from_name(kind)?;
                let y = Tensor::from_vec(batch.class_indices(0, attribute)?, batch.len(), device)?;
                model.loss(&x, &y)?
            }
            _ => {
                let target: Vec<f32> = batch.positions(0)?.into_iter().flatten().collect();
                let target = Tensor::from_vec(target, (batch.len(), 2), device)?;
                (model.logits(&x)? - target)?.sqr()?.mean_all()?
            }
        };
        adam.step(&loss.backward()?)?;
        checkpoints.after_step(step, iterations, |snapshot| {
            snapshot.put_model("model", &model)?;
            snapshot.put_adam("adam", &adam)?;
            put_rng(snapshot, rng)
        })?;
    }
    Ok(model)
}

/// Scenes `[B, C, H, W]` in [0, 1] made softer at random (see [`JudgeRecipe::soft_renders`]):
/// each blurred 0 to [`SOFTEST`] times by [`binomial_blur`] (as likely each), plus pixel noise
/// of a standard deviation drawn from U(0, 0.05).
pub fn soften(x: &Tensor, rng: &mut Rng) -> anyhow::Result<Tensor> {
    use rand::Rng as _;
    let b = x.dim(0)?;
    let levels: Vec<usize> = (0..b).map(|_| rng.random_range(0..=SOFTEST)).collect();
    let sigmas: Vec<f32> = (0..b).map(|_| 0.05 * rng.random::<f32>()).collect();
    let mut level = x.clone();
    let mut out = x.zeros_like()?;
    for l in 0..=SOFTEST {
        if l > 0 {
            level = binomial_blur(&level)?;
        }
        let mask = scene_mask(levels.iter().map(|&k| k == l), x.device())?;
        out = (out + level.broadcast_mul(&mask)?)?;
    }
    let sigmas = Tensor::from_vec(sigmas, (b, 1, 1, 1), x.device())?;
    let noise = ebm_core::noise::normal_like(rng, x)?.broadcast_mul(&sigmas)?;
    Ok((out + noise)?.clamp(0.0, 1.0)?)
}

/// Scenes `[B, C, H, W]` in [0, 1] of one object on black, each with probability one half
/// with its corners rounded, the others unchanged: the scene's mask (its brightest channel)
/// blurred 0 to [`SOFTEST`] times by [`binomial_blur`] (as likely each) and cut again around
/// one half, `clamp(3 (m - 1/2) + 1/2, 0, 1)`, and the scene, blurred as often, rescaled to
/// the new mask. Blurring and cutting at one half rounds a shape's corners and keeps its
/// straight edges.
pub fn round_corners(x: &Tensor, rng: &mut Rng) -> anyhow::Result<Tensor> {
    use rand::Rng as _;
    let b = x.dim(0)?;
    // `None`: unchanged.
    let levels: Vec<Option<usize>> = (0..b)
        .map(|_| {
            let rounded = rng.random::<f32>() < 0.5;
            let level = rng.random_range(0..=SOFTEST);
            rounded.then_some(level)
        })
        .collect();
    let unchanged = scene_mask(levels.iter().map(|l| l.is_none()), x.device())?;
    let mut mask = x.max_keepdim(1)?;
    let mut scene = x.clone();
    let mut out = x.broadcast_mul(&unchanged)?;
    for l in 0..=SOFTEST {
        if l > 0 {
            mask = binomial_blur(&mask)?;
            scene = binomial_blur(&scene)?;
        }
        let cut = mask.affine(3.0, -1.0)?.clamp(0.0, 1.0)?;
        let scale = (cut / mask.clamp(1e-3, 1.0)?)?;
        let rounded = scene.broadcast_mul(&scale)?.clamp(0.0, 1.0)?;
        let chosen = scene_mask(levels.iter().map(|&k| k == Some(l)), x.device())?;
        out = (out + rounded.broadcast_mul(&chosen)?)?;
    }
    Ok(out)
}

/// Scenes `[B, C, H, W]` in [0, 1], each with probability one half multiplied per channel
/// by a smooth random field (gains uniform in [0.4, 1.2] on a 4x4 grid, enlarged to the
/// scene and blurred [`TINT_BLUR`] times by [`binomial_blur`], renormalised at the borders),
/// the others unchanged: objects of uneven colour, as decoders draw them.
pub fn tint(x: &Tensor, rng: &mut Rng) -> anyhow::Result<Tensor> {
    use rand::Rng as _;
    let (b, c, h, w) = x.dims4()?;
    let chosen: Vec<bool> = (0..b).map(|_| rng.random::<f32>() < 0.5).collect();
    let gains: Vec<f32> = (0..b * c * 16)
        .map(|_| 0.4 + 0.8 * rng.random::<f32>())
        .collect();
    let mut field = Tensor::from_vec(gains, (b, c, 4, 4), x.device())?.upsample_nearest2d(h, w)?;
    let mut border = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
    for _ in 0..TINT_BLUR {
        field = binomial_blur(&field)?;
        border = binomial_blur(&border)?;
    }
    let field = field.broadcast_div(&border)?;
    let chosen = scene_mask(chosen, x.device())?;
    // The field where chosen, 1 elsewhere.
    let gain = field
        .broadcast_mul(&chosen)?
        .broadcast_add(&chosen.affine(-1.0, 1.0)?)?;
    Ok((x * gain)?.clamp(0.0, 1.0)?)
}

/// One weight per scene `[B, 1, 1, 1]`: 1 where `flags` holds, 0 elsewhere.
fn scene_mask(flags: impl IntoIterator<Item = bool>, device: &Device) -> anyhow::Result<Tensor> {
    let weights: Vec<f32> = flags.into_iter().map(|f| f as u8 as f32).collect();
    let b = weights.len();
    Ok(Tensor::from_vec(weights, (b, 1, 1, 1), device)?)
}

/// How many times [`tint`] blurs its colour field.
pub const TINT_BLUR: usize = 6;

/// The most times [`soften`] blurs a scene: three passes of the binomial kernel are a
/// Gaussian blur of standard deviation about 1.2 pixels.
pub const SOFTEST: usize = 3;

/// `x [B, C, H, W]` convolved with the 3x3 kernel `[1, 2, 1]^T [1, 2, 1] / 16`, edges
/// padded with zeros.
pub fn binomial_blur(x: &Tensor) -> anyhow::Result<Tensor> {
    let mut out = x.clone();
    for dim in [2, 3] {
        let n = out.dim(dim)?;
        let padded = out.pad_with_zeros(dim, 1, 1)?;
        out = ((padded.narrow(dim, 0, n)? + padded.narrow(dim, 2, n)?)?
            + (padded.narrow(dim, 1, n)? * 2.0)?)?
            .affine(0.25, 0.0)?;
    }
    Ok(out)
}

/// Where chains start, in words for the report (`training`: the negatives of training).
fn chain_start_words(start: ChainStart, training: bool) -> &'static str {
    match (start, training) {
        (ChainStart::Noise, _) => "N(0, I)",
        (ChainStart::SceneCodes, true) => "the codes of other scenes of the batch",
        (ChainStart::SceneCodes, false) => "the codes of fresh scenes of the seen pairs",
    }
}

/// The generator's state in a snapshot (scenes are drawn fresh: no data order to save).
fn put_rng(snapshot: &mut ebm_train::Snapshot, rng: &Rng) -> anyhow::Result<()> {
    Ok(snapshot.set_value("loop.rng", &ebm_core::RngState::of(rng).to_string())?)
}

fn restore_rng(snapshot: &ebm_train::Snapshot) -> anyhow::Result<Rng> {
    let state: String = snapshot.value("loop.rng")?;
    Ok(state.parse::<ebm_core::RngState>()?.restore())
}

impl Judges {
    /// The fraction of `images` whose first object the judges read as `labels` say, per
    /// attribute (shape, color, size, position within `tolerance`), by [`Request::check`].
    fn accuracy(
        &self,
        images: &Tensor,
        labels: &[SceneLabels],
        tolerance: f64,
    ) -> anyhow::Result<Vec<(&'static str, f64)>> {
        let verdicts = self.judge(images)?;
        let mut tallies: Vec<(&'static str, usize)> = Vec::new();
        for (v, l) in verdicts.iter().zip(labels) {
            let o = &l.objects[0];
            let truth = Request {
                shape: Some(o.shape),
                color: Some(o.color),
                size: Some(o.size),
                position: Some([o.x as f64, o.y as f64]),
                ..Default::default()
            };
            for (i, (name, ok)) in truth.check(v, tolerance).into_iter().enumerate() {
                match tallies.get_mut(i) {
                    Some(t) => t.1 += ok as usize,
                    None => tallies.push((name, ok as usize)),
                }
            }
        }
        Ok(tallies
            .into_iter()
            .map(|(name, ok)| (name, ok as f64 / verdicts.len() as f64))
            .collect())
    }

    fn judge(&self, x: &Tensor) -> anyhow::Result<Vec<Verdict>> {
        let n = x.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for s in (0..n).step_by(200) {
            let xb = x.narrow(0, s, 200.min(n - s))?.detach();
            let arg = |m: &Classifier| -> anyhow::Result<Vec<u32>> {
                Ok(m.logits(&xb)?.argmax(1)?.to_vec1::<u32>()?)
            };
            let shapes = mean_probabilities(&self.shape, &xb)?
                .argmax(1)?
                .to_vec1::<u32>()?;
            let (colors, sizes) = (arg(&self.color)?, arg(&self.size)?);
            let pos = self
                .position
                .logits(&xb)?
                .to_dtype(DType::F64)?
                .to_vec2::<f64>()?;
            for i in 0..shapes.len() {
                out.push(Verdict {
                    shape: Shape::from_index(shapes[i] as usize)?,
                    color: Color::from_index(colors[i] as usize)?,
                    size: Size::from_index(sizes[i] as usize)?,
                    position: [pos[i][0], pos[i][1]],
                });
            }
        }
        Ok(out)
    }
}

/// The mean over `classifiers` of their softmax probabilities of `x`'s classes.
fn mean_probabilities(classifiers: &[Classifier], x: &Tensor) -> anyhow::Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for c in classifiers {
        let p = ebm_nn::log_softmax(&c.logits(x)?)?.exp()?;
        sum = Some(match sum {
            None => p,
            Some(sum) => (sum + p)?,
        });
    }
    let sum = sum.ok_or_else(|| anyhow::anyhow!("no classifiers to average"))?;
    Ok(sum.affine(1.0 / classifiers.len() as f64, 0.0)?)
}

/// One request per value of a class attribute, with its expression `attribute=value`.
fn one_per_value<T: Copy>(
    attribute: &str,
    values: &[T],
    name: impl Fn(T) -> &'static str,
    request: impl Fn(T) -> Request,
) -> Vec<(String, Request)> {
    values
        .iter()
        .map(|&v| (format!("{attribute}={}", name(v)), request(v)))
        .collect()
}

/// What one sample was asked to be. Unset fields are not checked.
#[derive(Debug, Clone, Default)]
struct Request {
    shape: Option<Shape>,
    color: Option<Color>,
    size: Option<Size>,
    position: Option<[f64; 2]>,
    /// The colour must be one of these (OR).
    color_any: Vec<Color>,
    /// The colour must not be this (NOT).
    color_not: Option<Color>,
}

impl Verdict {
    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "shape": self.shape.name(),
            "color": self.color.name(),
            "size": self.size.name(),
            "position": self.position,
        })
    }
}

impl Request {
    fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        if let Some(s) = self.shape {
            m.insert("shape".into(), s.name().into());
        }
        if let Some(c) = self.color {
            m.insert("color".into(), c.name().into());
        }
        if let Some(z) = self.size {
            m.insert("size".into(), z.name().into());
        }
        if let Some(p) = self.position {
            m.insert("position".into(), serde_json::json!(p));
        }
        if !self.color_any.is_empty() {
            let any: Vec<&str> = self.color_any.iter().map(|c| c.name()).collect();
            m.insert("color_any".into(), serde_json::json!(any));
        }
        if let Some(c) = self.color_not {
            m.insert("color_not".into(), c.name().into());
        }
        serde_json::Value::Object(m)
    }

    /// `(criterion, satisfied)` for every criterion the request sets.
    fn check(&self, v: &Verdict, tolerance: f64) -> Vec<(&'static str, bool)> {
        let mut out = Vec::new();
        if let Some(s) = self.shape {
            out.push(("shape", v.shape == s));
        }
        if let Some(c) = self.color {
            out.push(("color", v.color == c));
        }
        if let Some(z) = self.size {
            out.push(("size", v.size == z));
        }
        if let Some(p) = self.position {
            let d = ((v.position[0] - p[0]).powi(2) + (v.position[1] - p[1]).powi(2)).sqrt();
            out.push(("position", d <= tolerance));
        }
        if !self.color_any.is_empty() {
            out.push(("color_any", self.color_any.contains(&v.color)));
        }
        if let Some(c) = self.color_not {
            out.push(("color_not", v.color != c));
        }
        out
    }
}

/// The outcome of one experiment: the fraction satisfied per criterion and for all at once.
#[derive(Debug, Clone, Default)]
struct Outcome {
    per_criterion: Vec<(&'static str, f64)>,
    all: f64,
    samples: usize,
    /// How often the [`TemplateReader`] reads the requested shape (requests with a shape).
    shape_by_template: Option<f64>,
}

impl Outcome {
    fn get(&self, criterion: &str) -> f64 {
        self.per_criterion
            .iter()
            .find(|(c, _)| *c == criterion)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    }
}

/// Candidate positions per side, minus one, of the concept-inference search (a step of 0.025).
const INFER_SEARCH_STEPS: usize = 40;

/// Everything an experiment needs.
struct Bench<'a> {
    recipe: &'a Recipe,
    concepts: &'a ConceptSet<'a>,
    judges: &'a Judges,
    template: &'a TemplateReader,
    autoencoder: &'a SceneAutoencoder,
    starts: &'a ChainStarts,
    out: &'a Path,
}

/// Where the experiments' chains start: `N(0, I)`, or codes of a pool of scenes of the pairs
/// the VAE saw, encoded once (the recipe's [`ChainStart`]).
struct ChainStarts {
    pool: Option<Tensor>,
    dim: usize,
    device: Device,
}

impl ChainStarts {
    /// Scenes in the pool of starting codes.
    const POOL: usize = 1024;

    /// The starts `start` asks for; a pool is drawn from `scenes` with `rng` only when needed.
    fn new(
        start: ChainStart,
        autoencoder: &SceneAutoencoder,
        scenes: &SceneGenerator,
        rng: &mut Rng,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let pool = match start {
            ChainStart::Noise => None,
            ChainStart::SceneCodes => {
                let batch = scenes.sample(Self::POOL, rng)?;
                Some(
                    autoencoder
                        .encode_mean(&scene_tensor(&batch, device)?)?
                        .detach(),
                )
            }
        };
        Ok(Self {
            pool,
            dim: autoencoder.latent_dim(),
            device: device.clone(),
        })
    }

    /// `k` starting codes `[k, d]`.
    fn draw(&self, rng: &mut Rng, k: usize) -> anyhow::Result<Tensor> {
        match &self.pool {
            None => latent_noise(rng, k, self.dim, &self.device),
            Some(pool) => {
                use rand::Rng as _;
                let n = pool.dim(0)?;
                let idx: Vec<u32> = (0..k).map(|_| rng.random_range(0..n) as u32).collect();
                let idx = Tensor::from_vec(idx, k, &self.device)?;
                Ok(pool.index_select(&idx, 0)?)
            }
        }
    }
}

impl Bench<'_> {
    /// Samples every `(expression, request)` pair `samples_per_condition` times from latent
    /// noise, decodes and judges the samples, saves `{name}.png` (one row per request), `.npy` and `.json`.
    fn run(
        &self,
        name: &str,
        requests: &[(String, Request)],
        rng: &mut Rng,
    ) -> anyhow::Result<Outcome> {
        let langevin = Langevin::new(self.recipe.eval_langevin.clone())?;
        self.run_with(
            name,
            requests,
            &|_: &str| Ok(Box::new(langevin.clone()) as Box<dyn Sampler>),
            rng,
        )
    }

    /// [`Bench::run`] with the sampler `make(expression)` returns for each request.
    fn run_with(
        &self,
        name: &str,
        requests: &[(String, Request)],
        make: &dyn Fn(&str) -> anyhow::Result<Box<dyn Sampler>>,
        rng: &mut Rng,
    ) -> anyhow::Result<Outcome> {
        let r = self.recipe;
        let k = r.samples_per_condition;
        let mut all_samples = Vec::new();
        let mut records = Vec::new();
        let mut tallies: Vec<(&'static str, usize, usize)> = Vec::new();
        let mut all_ok = 0usize;
        let (mut template_right, mut template_total) = (0usize, 0usize);
        for (expr, request) in requests {
            let energy = guided(self.concepts, expr, r.guidance)
                .with_context(|| format!("experiment {name}"))?;
            let z0 = self.starts.draw(rng, k)?;
            let codes = make(expr)?.run(&energy, &z0, rng)?.samples;
            let samples = self.autoencoder.decode(&codes)?.detach();
            let template_shapes = match request.shape {
                Some(shape) => {
                    let read = self.template.read(&samples)?;
                    template_right += read.iter().filter(|s| **s == shape).count();
                    template_total += read.len();
                    read.into_iter().map(Some).collect()
                }
                None => vec![None; k],
            };
            for (v, template_shape) in self
                .judges
                .judge(&samples)?
                .into_iter()
                .zip(template_shapes)
            {
                let checks = request.check(&v, r.position_tolerance);
                all_ok += checks.iter().all(|(_, ok)| *ok) as usize;
                for (c, ok) in checks {
                    match tallies.iter_mut().find(|(n, _, _)| *n == c) {
                        Some(t) => {
                            t.1 += ok as usize;
                            t.2 += 1;
                        }
                        None => tallies.push((c, ok as usize, 1)),
                    }
                }
                let mut record = serde_json::json!({"expression": expr, "request": request.to_json(), "judged": v.to_json()});
                if let Some(shape) = template_shape {
                    record["template_shape"] = shape.name().into();
                }
                records.push(record);
            }
            all_samples.push(samples);
        }
        let samples = Tensor::cat(&all_samples, 0)?;
        save_grid(
            &samples,
            &self.out.join(format!("{name}.png")),
            GridOptions {
                columns: k,
                scale: 2,
                padding: 2,
            },
        )?;
        samples
            .write_npy(self.out.join(format!("{name}.npy")))
            .with_context(|| format!("writing {name}.npy"))?;
        std::fs::write(
            self.out.join(format!("{name}.json")),
            serde_json::to_string_pretty(&records)?,
        )?;
        let n = samples.dim(0)?;
        Ok(Outcome {
            per_criterion: tallies
                .into_iter()
                .map(|(c, ok, total)| (c, ok as f64 / total as f64))
                .collect(),
            all: all_ok as f64 / n as f64,
            samples: n,
            shape_by_template: (template_total > 0)
                .then(|| template_right as f64 / template_total as f64),
        })
    }
}

/// The share of positions where `a` and `b` agree.
fn share_equal<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// The energy of the text expression `expr` with its discrete terms guided by `gamma`.
fn guided<'m>(
    concepts: &ConceptSet<'m>,
    expr: &str,
    gamma: f64,
) -> anyhow::Result<ebm_compose::Composition<'m>> {
    Ok(concepts.compose(&concepts.guided(&concepts.parse_expr(expr)?, gamma)?)?)
}

fn pos_expr(p: [f64; 2]) -> String {
    format!("pos=({:.4}, {:.4})", p[0], p[1])
}

/// Trains the scene VAE on scenes from `generator`.
fn train_autoencoder(
    recipe: &Recipe,
    generator: &SceneGenerator,
    rng: &mut Rng,
    options: &Options,
) -> anyhow::Result<(SceneAutoencoder, f64, f64)> {
    let device = &options.device;
    let ae = &recipe.autoencoder;
    let mut model = SceneAutoencoder::new(ae, recipe.image_size, device, rng)?;
    let mut adam = Adam::new(model.vars(), AdamConfig::kingma_ba(ae.lr))?;
    let checkpoints = Checkpoints::new(
        options,
        options.out.join("checkpoints").join("autoencoder"),
        "compose autoencoder",
        &recipe.autoencoder_key(options.seed),
    )?;
    let mut done = 0;
    let mut last = (f64::NAN, f64::NAN);
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        snapshot.restore_model("encoder", model.encoder_mut())?;
        snapshot.restore_model("decoder", model.decoder_mut())?;
        snapshot.restore_adam("adam", &mut adam)?;
        *rng = restore_rng(&snapshot)?;
        last = snapshot.value("loss")?;
        done = snapshot.step.min(ae.iterations);
    }
    for step in done + 1..=ae.iterations {
        let batch = generator.sample(ae.batch_size, rng)?;
        let x = scene_tensor(&batch, device)?;
        let eps = latent_noise(rng, batch.len(), ae.latent_dim, device)?;
        let loss = model.loss(&x, &eps, ae.kl_weight)?;
        if !(loss.reconstruction.is_finite() && loss.kl.is_finite()) {
            anyhow::bail!("the scene autoencoder diverged at step {step}");
        }
        adam.set_lr(ae.lr_at(step))?;
        adam.step(&loss.loss.backward()?)?;
        last = (loss.reconstruction, loss.kl);
        checkpoints.after_step(step, ae.iterations, |snapshot| {
            snapshot.put_model("encoder", model.encoder())?;
            snapshot.put_model("decoder", model.decoder())?;
            snapshot.put_adam("adam", &adam)?;
            snapshot.set_value("loss", &last)?;
            put_rng(snapshot, rng)
        })?;
    }
    model.save(&options.out.join("checkpoints/autoencoder.safetensors"))?;
    Ok((model.frozen()?, last.0, last.1))
}

/// Trains one concept energy on latent codes drawn from `pool`.
fn train_concept(
    concept: Concept,
    recipe: &Recipe,
    autoencoder: &SceneAutoencoder,
    pool: &CodePool,
    rng: &mut Rng,
    options: &Options,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(LatentConcept, Vec<StepLog>, f64)> {
    let device = &options.device;
    let cr = &recipe.concept;
    let model = LatentConcept::new(concept.kind(cr), autoencoder.latent_dim(), cr, device, rng)?;
    let iterations = concept.iterations(&cr.iterations);
    let mut trainer = ConceptTrainer::new(model.clone(), cr, iterations)?;
    let checkpoints = Checkpoints::new(
        options,
        options.out.join("checkpoints").join(concept.name()),
        format!("compose {}", concept.name()),
        &recipe.concept_key(options.seed),
    )?;
    let mut done = 0;
    if let Some(snapshot) = checkpoints.resume(options, device)? {
        trainer.load_state(&snapshot)?;
        *rng = restore_rng(&snapshot)?;
        done = snapshot.step.min(iterations);
        bar.inc(done as u64);
    }
    let start = Instant::now();
    for step in done + 1..=iterations {
        let (codes, labels) = pool.batch(cr.batch_size, rng)?;
        let features = concept.features(&model, &labels)?.to_device(device)?;
        let log = trainer.step(&codes, &features, rng)?;
        bar.set_message(format!(
            "{} step {} loss {:.3} E+ {:.3} E- {:.3}",
            concept.name(),
            log.step,
            log.loss,
            log.energy_pos,
            log.energy_neg
        ));
        bar.inc(1);
        checkpoints.after_step(step, iterations, |snapshot| {
            trainer.save_state(snapshot)?;
            put_rng(snapshot, rng)
        })?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let history = trainer.history().to_vec();
    checkpoint::save(
        trainer.concept().mlp(),
        &options
            .out
            .join(format!("checkpoints/{}.safetensors", concept.name())),
    )?;
    Ok((trainer.into_concept()?, history, seconds))
}

/// Trains the concepts of `jobs` side by side ([`in_parallel`]), each with a generator of its
/// own. Small MLPs gain nothing from a second thread (1,000 steps took 38-40 s on one thread
/// against 52 s on two, measured when every step still encoded fresh scenes and the chains
/// went through autograd), so two at once about halve the phase on two cores. With pooled
/// codes and the fused pass, the shape energy's 3,000 steps took 44 s beside the others.
fn train_concepts(
    jobs: &[(Concept, &CodePool)],
    recipe: &Recipe,
    autoencoder: &SceneAutoencoder,
    rng: &mut Rng,
    options: &Options,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(LatentConcept, Vec<StepLog>, f64)>> {
    in_parallel(&draw_seeds(rng, jobs.len()), |i, job_rng| {
        let (concept, pool) = jobs[i];
        train_concept(concept, recipe, autoencoder, pool, job_rng, options, bar)
    })
}

/// `n` seeds drawn from `rng`, one per job of [`in_parallel`].
fn draw_seeds(rng: &mut Rng, n: usize) -> Vec<u64> {
    (0..n).map(|_| rng.random::<u64>()).collect()
}

/// Runs `job(i, rng_i)` for each seed `i`, one job per core in job order, each on a single
/// thread and with a generator of its own seeded from `seeds[i]`, so that every result is the
/// same whatever the number of cores. Returns the results in job order, or the first error in
/// job order (jobs not yet started when one fails are skipped).
fn in_parallel<T: Send>(
    seeds: &[u64],
    job: impl Fn(usize, &mut Rng) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let n = seeds.len();
    let workers = rayon::current_num_threads().clamp(1, n.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, anyhow::Result<T>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(usize, anyhow::Result<T>)>> {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n || failed.load(Ordering::SeqCst) {
                            return Ok(out);
                        }
                        let mut job_rng = seeded_rng(seeds[i]);
                        let result = pool.install(|| job(i, &mut job_rng));
                        if result.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        out.push((i, result));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            match h.join() {
                Ok(Ok(out)) => all.extend(out),
                Ok(Err(e)) => all.push((usize::MAX, Err(e))),
                Err(_) => all.push((
                    usize::MAX,
                    Err(anyhow::anyhow!("a training thread panicked")),
                )),
            }
        }
        all
    });
    done.sort_by_key(|(i, _)| *i);
    let mut results = Vec::with_capacity(n);
    for (_, result) in done {
        results.push(result?);
    }
    if results.len() != n {
        anyhow::bail!("training stopped after {} of {n} jobs", results.len());
    }
    Ok(results)
}

/// Runs the experiment with the mode's recipe.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let mut recipe: Recipe =
        super::apply_overrides(&Recipe::for_mode(options.mode), &options.overrides)?;
    if let Some(n) = options.iterations {
        recipe.concept.iterations = ConceptIterations::all(n);
    }
    let report = run_recipe(&recipe, options)?;
    println!("{}", summary_line(&report));
    Ok(())
}

/// The last line printed: the headline numbers.
pub fn summary_line(report: &Report) -> String {
    let m = |k: &str| report.metrics.get(k).copied().unwrap_or(f64::NAN);
    format!(
        "compose: single shape {:.3} color {:.3} size {:.3} position {:.3}; AND position {:.3} color {:.3}; OR {:.3}; NOT {:.3}; continual {:.3}; held-out AND {:.3} vs joint {:.3}; inferred position error {:.3}; {:.0} s",
        m("single_shape_accuracy"),
        m("single_color_accuracy"),
        m("single_size_accuracy"),
        m("single_position_accuracy"),
        m("and_position_accuracy"),
        m("and_color_accuracy"),
        m("or_accuracy"),
        m("not_accuracy"),
        m("continual_accuracy"),
        m("heldout_and_accuracy"),
        m("heldout_joint_baseline_accuracy"),
        m("infer_position_error"),
        m("wall_seconds"),
    )
}

/// The judges of the first phase, in job order after the VAE, as (kind, member): one of
/// each kind (the longest in the quick recipe first), then the other shape judges.
fn judge_jobs(recipe: &Recipe) -> Vec<(&'static str, usize)> {
    let mut jobs = vec![("shape", 0), ("size", 0), ("color", 0), ("position", 0)];
    jobs.extend((1..recipe.judge.shape_judges).map(|m| ("shape", m)));
    jobs
}

/// What a job of the first phase trains, with its own seconds.
enum PhaseOne {
    Autoencoder {
        model: SceneAutoencoder,
        reconstruction: f64,
        kl: f64,
        seconds: f64,
    },
    Judge(&'static str, Classifier, f64),
}

/// Trains everything, runs the six experiments, and writes the report into `options.out`.
pub fn run_recipe(recipe: &Recipe, options: &Options) -> anyhow::Result<Report> {
    recipe.check()?;
    let start = Instant::now();
    let out = &options.out;
    std::fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("creating {}", out.display()))?;
    let device = &options.device;
    let mut rng = seeded_rng(options.seed);
    let heldout = recipe.heldout()?;
    let continual = recipe.continual()?;
    let everything = SceneGenerator::new(SceneConfig::new(recipe.image_size))?;
    let seen = SceneGenerator::new(SceneConfig::new(recipe.image_size).without_pairs(&heldout))?;
    let later = SceneGenerator::new(
        SceneConfig::new(recipe.image_size)
            .without_pairs(&heldout)
            .filtered(|c| continual.contains(&c.shape)),
    )?;

    let mut report = Report::default();
    report.setting("recipe", recipe);
    report.setting("mode", options.mode);
    report.setting("seed", options.seed);
    report.setting("device", format!("{device:?}"));

    // The scene VAE (without labels, on scenes without the held-out pairs) and the judges
    // (on every combination) train side by side, one job per core, the VAE first: its steps
    // are too small for a second thread (measured: 32 ms a step on one thread, 39 ms on two)
    // and it is the longest job, so the judges take the other core meanwhile. Each job has a
    // generator of its own: what is trained after the VAE does not depend on the judges.
    let phase_start = Instant::now();
    let jobs = judge_jobs(recipe);
    let seeds = draw_seeds(&mut rng, 1 + jobs.len());
    let mut trained = in_parallel(&seeds, |i, job_rng| {
        let job_start = Instant::now();
        Ok(if i == 0 {
            let (model, reconstruction, kl) = train_autoencoder(recipe, &seen, job_rng, options)?;
            PhaseOne::Autoencoder {
                model,
                reconstruction,
                kl,
                seconds: job_start.elapsed().as_secs_f64(),
            }
        } else {
            let (kind, member) = jobs[i - 1];
            let judge = train_judge(kind, member, recipe, &everything, job_rng, options)?;
            PhaseOne::Judge(kind, judge, job_start.elapsed().as_secs_f64())
        })
    })?
    .into_iter();
    let phase_seconds = phase_start.elapsed().as_secs_f64();
    let Some(PhaseOne::Autoencoder {
        model: autoencoder,
        reconstruction: ae_reconstruction,
        kl: ae_kl,
        seconds: ae_seconds,
    }) = trained.next()
    else {
        anyhow::bail!("the first job of the first phase is the scene autoencoder");
    };
    let mut judge_seconds = 0.0;
    let (mut shape, mut size, mut color, mut position) = (Vec::new(), None, None, None);
    for job in trained {
        let PhaseOne::Judge(kind, judge, seconds) = job else {
            anyhow::bail!("one autoencoder in the first phase");
        };
        judge_seconds += seconds;
        match kind {
            "shape" => shape.push(judge),
            "size" => size = Some(judge),
            "color" => color = Some(judge),
            _ => position = Some(judge),
        }
    }
    let (Some(size), Some(color), Some(position)) = (size, color, position) else {
        anyhow::bail!("one size, colour and position judge in the first phase");
    };
    let judges = Judges {
        shape,
        color,
        size,
        position,
    };
    let check = everything.sample(500, &mut rng)?;
    let x = scene_tensor(&check, device)?;
    for (name, accuracy) in judges.accuracy(&x, check.labels(), recipe.position_tolerance)? {
        report.metric(format!("judge_{name}_accuracy"), accuracy);
    }
    // The same scenes at the softest the judges were trained on: what they read there they
    // read from the shape of things, not from crisp edges.
    let mut softest = x.clone();
    for _ in 0..SOFTEST {
        softest = binomial_blur(&softest)?;
    }
    for (name, accuracy) in judges.accuracy(&softest, check.labels(), recipe.position_tolerance)? {
        report.metric(format!("judge_{name}_accuracy_softest"), accuracy);
    }
    // The training-free shape reader on the same scenes, crisp and softest.
    let template = TemplateReader::new(recipe.image_size)?;
    let shapes: Vec<Shape> = check.labels().iter().map(|l| l.objects[0].shape).collect();
    report.metric(
        "template_shape_accuracy",
        share_equal(&template.read(&x)?, &shapes),
    );
    report.metric(
        "template_shape_accuracy_softest",
        share_equal(&template.read(&softest)?, &shapes),
    );

    let autoencoder = if recipe.concept.standardise_codes {
        // A generator of its own, so that the streams after it do not depend on the flag.
        let mut pool_rng = seeded_rng(options.seed ^ 0x005c_a1ed_c0de);
        let pool = seen.sample(2048, &mut pool_rng)?;
        let standardised = autoencoder.standardised(&scene_tensor(&pool, device)?)?;
        if let Some((min, max)) = standardised.code_std_range()? {
            report.metric("latent_code_std_min", min);
            report.metric("latent_code_std_max", max);
        }
        standardised
    } else {
        autoencoder
    };
    report.metric("autoencoder_train_seconds", ae_seconds);
    report.metric("autoencoder_reconstruction_error", ae_reconstruction);
    report.metric("autoencoder_kl", ae_kl);
    // How well the judges read the VAE's reconstructions of fresh scenes (seen pairs): a ceiling
    // on what samples decoded by it can score.
    let check = seen.sample(500, &mut rng)?;
    let x = scene_tensor(&check, device)?;
    let reconstructed = autoencoder.decode(&autoencoder.encode_mean(&x)?)?.detach();
    for (name, accuracy) in
        judges.accuracy(&reconstructed, check.labels(), recipe.position_tolerance)?
    {
        report.metric(format!("reconstruction_{name}_accuracy"), accuracy);
    }
    let shapes: Vec<Shape> = check.labels().iter().map(|l| l.objects[0].shape).collect();
    report.metric(
        "reconstruction_template_shape_accuracy",
        share_equal(&template.read(&reconstructed)?, &shapes),
    );
    save_grid(
        &Tensor::cat(&[x.narrow(0, 0, 16)?, reconstructed.narrow(0, 0, 16)?], 0)?,
        &out.join("reconstructions.png"),
        GridOptions {
            columns: 16,
            scale: 2,
            padding: 2,
        },
    )?;

    // The concept models, each trained on its own; size last, on some shapes only. Each draws
    // its codes from the share of one pool of scenes its training distribution could have
    // drawn. Longest first, so that two cores finish about together.
    let pool_start = Instant::now();
    let pool = CodePool::encode(
        &everything,
        recipe.concept.code_pool,
        &autoencoder,
        &mut seeded_rng(rng.random()),
        device,
    )?;
    let seen_pool = pool.restricted_to(&seen, "shape, colour and joint")?;
    let later_pool = pool.restricted_to(&later, "size")?;
    report.metric("code_pool_seconds", pool_start.elapsed().as_secs_f64());
    let order = [
        (Concept::Shape, &seen_pool),
        (Concept::Position, &pool),
        (Concept::Joint, &seen_pool),
        (Concept::Color, &seen_pool),
        (Concept::Size, &later_pool),
    ];
    let bar = crate::progress::bar(recipe.concept.iterations.total() as u64, options.quiet);
    let trained = train_concepts(&order, recipe, &autoencoder, &mut rng, options, &bar)?;
    // Fresh scenes of the pairs the VAE saw (from a generator of their own) on which each
    // class concept's own reading of codes is measured.
    let probe = seen.sample(CODE_PROBE, &mut seeded_rng(options.seed ^ 0x00c0_de0f_ac75))?;
    let probe_codes = autoencoder.encode_mean(&scene_tensor(&probe, device)?)?;
    let mut models = Vec::new();
    let mut train_rows = Vec::new();
    for ((concept, _), (model, history, seconds)) in order.iter().copied().zip(trained) {
        let name = concept.name();
        let tail = &history[history.len().saturating_sub((history.len() / 10).max(1))..];
        let mean = |f: fn(&StepLog) -> f64| tail.iter().map(f).sum::<f64>() / tail.len() as f64;
        report.metric(format!("{name}_train_seconds"), seconds);
        train_rows.push(vec![
            name.to_string(),
            match concept.kind(&recipe.concept) {
                ConditionKind::Classes(k) => format!("{k} classes"),
                ConditionKind::Position { .. } => "(x, y)".to_string(),
            },
            format!("{:.4}", mean(|l| l.loss)),
            format!("{:.4}", mean(|l| l.energy_pos)),
            format!("{:.4}", mean(|l| l.energy_neg)),
            format!("{seconds:.0}"),
        ]);
        LinePlot::new(
            format!("compose {name}: mean energies"),
            "training step",
            "energy",
            vec![
                Series::from_values(
                    "E+ (data)",
                    &history.iter().map(|l| l.energy_pos).collect::<Vec<_>>(),
                ),
                Series::from_values(
                    "E- (samples)",
                    &history.iter().map(|l| l.energy_neg).collect::<Vec<_>>(),
                ),
            ],
        )
        .save(&out.join(format!("{name}_energies.png")))?;
        if let ConditionKind::Classes(_) = concept.kind(&recipe.concept) {
            report.metric(
                format!("{name}_code_accuracy"),
                model.code_accuracy(&probe_codes, &concept.labels(probe.labels())?)?,
            );
        }
        models.push((concept, model));
    }
    bar.finish_and_clear();
    let model_of = |c: Concept| -> LatentConcept {
        models
            .iter()
            .find(|(m, _)| *m == c)
            .map(|(_, m)| m.clone())
            .expect("every concept is trained")
    };

    let named = |names: Vec<&'static str>| -> Vec<(String, usize)> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i))
            .collect()
    };
    let mut concepts = ConceptSet::new();
    concepts
        .add_discrete(
            "shape",
            model_of(Concept::Shape),
            named(Shape::ALL.iter().map(|s| s.name()).collect()),
        )?
        .add_discrete(
            "color",
            model_of(Concept::Color),
            named(Color::ALL.iter().map(|c| c.name()).collect()),
        )?
        .add_discrete(
            "size",
            model_of(Concept::Size),
            named(Size::ALL.iter().map(|s| s.name()).collect()),
        )?
        .add_discrete(
            "joint",
            model_of(Concept::Joint),
            Shape::ALL
                .iter()
                .flat_map(|s| {
                    Color::ALL.iter().map(move |c| {
                        (
                            format!("{}_{}", s.name(), c.name()),
                            joint_class(*s, *c) as usize,
                        )
                    })
                })
                .collect::<Vec<_>>(),
        )?
        .add_continuous(
            "pos",
            model_of(Concept::Position),
            Vec::<(String, Vec<f64>)>::new(),
        )?;
    let starts = ChainStarts::new(
        recipe.concept.chain_start,
        &autoencoder,
        &seen,
        &mut rng,
        device,
    )?;
    let bench = Bench {
        recipe,
        concepts: &concepts,
        judges: &judges,
        template: &template,
        autoencoder: &autoencoder,
        starts: &starts,
        out,
    };
    let eval_start = Instant::now();
    let seen_pairs: Vec<Combination> = Combination::all()
        .into_iter()
        .filter(|c| !heldout.contains(&(c.shape, c.color)))
        .collect();
    // Requested positions: uniform over the unit square, as the scenes' positions are.
    let random_position = |rng: &mut Rng| -> [f64; 2] {
        use rand::Rng as _;
        [rng.random::<f64>(), rng.random::<f64>()]
    };
    let mut outcomes: Vec<(&str, String, Outcome)> = Vec::new();

    // 1. Single concepts: one request per value of each class attribute, then positions.
    let class_singles = [
        (
            "single_shape",
            "shape=s",
            one_per_value(
                "shape",
                &Shape::ALL,
                |s| s.name(),
                |s| Request {
                    shape: Some(s),
                    ..Default::default()
                },
            ),
        ),
        (
            "single_color",
            "color=c",
            one_per_value(
                "color",
                &Color::ALL,
                |c| c.name(),
                |c| Request {
                    color: Some(c),
                    ..Default::default()
                },
            ),
        ),
        (
            "single_size",
            "size=z",
            one_per_value(
                "size",
                &Size::ALL,
                |z| z.name(),
                |z| Request {
                    size: Some(z),
                    ..Default::default()
                },
            ),
        ),
    ];
    for (name, expression, requests) in class_singles {
        outcomes.push((
            name,
            expression.into(),
            bench.run(name, &requests, &mut rng)?,
        ));
    }
    let single: Vec<(String, Request)> = (0..recipe.conditions)
        .map(|_| {
            let p = random_position(&mut rng);
            (
                pos_expr(p),
                Request {
                    position: Some(p),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "single_position",
        "pos=(x, y)".into(),
        bench.run("single_position", &single, &mut rng)?,
    ));

    // 2. AND of position and colour, and of shape, colour and size.
    let and_pc: Vec<(String, Request)> = (0..recipe.conditions)
        .map(|_| {
            let p = random_position(&mut rng);
            let c = *Color::ALL.choose(&mut rng).expect("colours");
            (
                format!("{} & color={}", pos_expr(p), c.name()),
                Request {
                    position: Some(p),
                    color: Some(c),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "and_position_color",
        "pos=(x, y) & color=c".into(),
        bench.run("and_position_color", &and_pc, &mut rng)?,
    ));
    let and3: Vec<(String, Request)> = (0..recipe.conditions)
        .map(|_| {
            let c = *seen_pairs.choose(&mut rng).expect("pairs");
            (
                format!(
                    "shape={} & color={} & size={}",
                    c.shape.name(),
                    c.color.name(),
                    c.size.name()
                ),
                Request {
                    shape: Some(c.shape),
                    color: Some(c.color),
                    size: Some(c.size),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "and_three",
        "shape=s & color=c & size=z".into(),
        bench.run("and_three", &and3, &mut rng)?,
    ));

    // 3. OR and NOT.
    let or: Vec<(String, Request)> = (0..recipe.conditions.min(6))
        .map(|_| {
            let mut two: Vec<Color> = Color::ALL.to_vec();
            two.shuffle(&mut rng);
            let (a, b) = (two[0], two[1]);
            (
                format!("color={} | color={}", a.name(), b.name()),
                Request {
                    color_any: vec![a, b],
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "or",
        "color=a | color=b".into(),
        bench.run("or", &or, &mut rng)?,
    ));
    let not: Vec<(String, Request)> = (0..recipe.conditions.min(6))
        .map(|_| {
            let s = *Shape::ALL.choose(&mut rng).expect("shapes");
            let c = *Color::ALL.choose(&mut rng).expect("colours");
            (
                format!("shape={} & !0.5*color={}", s.name(), c.name()),
                Request {
                    shape: Some(s),
                    color_not: Some(c),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "not",
        "shape=s & !0.5*color=c".into(),
        bench.run("not", &not, &mut rng)?,
    ));

    // 4. Continual: the size model, trained later on some shapes, with the earlier shape model
    //    on the shapes it never saw.
    let unseen_by_size: Vec<Shape> = Shape::ALL
        .iter()
        .copied()
        .filter(|s| !continual.contains(s))
        .collect();
    let cont: Vec<(String, Request)> = unseen_by_size
        .iter()
        .flat_map(|s| Size::ALL.iter().map(move |z| (*s, *z)))
        .map(|(s, z)| {
            (
                format!("shape={} & size={}", s.name(), z.name()),
                Request {
                    shape: Some(s),
                    size: Some(z),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "continual",
        "shape=s & size=z (shapes the size model never saw)".into(),
        bench.run("continual", &cont, &mut rng)?,
    ));

    // 5. Held-out (shape, colour) pairs: composed, and from the joint model.
    let held: Vec<(String, Request)> = heldout
        .iter()
        .map(|(s, c)| {
            (
                format!("shape={} & color={}", s.name(), c.name()),
                Request {
                    shape: Some(*s),
                    color: Some(*c),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "heldout_and",
        "shape=s & color=c (held-out pairs)".into(),
        bench.run("heldout_and", &held, &mut rng)?,
    ));
    let joint: Vec<(String, Request)> = heldout
        .iter()
        .map(|(s, c)| {
            (
                format!("joint={}_{}", s.name(), c.name()),
                Request {
                    shape: Some(*s),
                    color: Some(*c),
                    ..Default::default()
                },
            )
        })
        .collect();
    outcomes.push((
        "heldout_joint_baseline",
        "joint=s_c (held-out pairs)".into(),
        bench.run("heldout_joint_baseline", &joint, &mut rng)?,
    ));

    // Samplers at the same wall-clock time on `shape=s & color=c` (seen pairs). How many
    // numbers they draw depends on the clock, so they draw from a generator of their own: the
    // experiments after them repeat exactly with the same seed.
    let mut sampler_rng = seeded_rng(rng.random::<u64>());
    let cmp_requests: Vec<(String, Request)> = (0..recipe.conditions.min(4))
        .map(|_| {
            let c = *seen_pairs.choose(&mut sampler_rng).expect("pairs");
            (
                format!("shape={} & color={}", c.shape.name(), c.color.name()),
                Request {
                    shape: Some(c.shape),
                    color: Some(c.color),
                    ..Default::default()
                },
            )
        })
        .collect();
    let sc = &recipe.samplers;
    let k = recipe.samples_per_condition;
    let probe_x0 = starts.draw(&mut sampler_rng, k)?;
    let probe = guided(&concepts, &cmp_requests[0].0, recipe.guidance)?;
    let langevin_seconds = Langevin::new(recipe.eval_langevin.clone())?
        .run(&probe, &probe_x0, &mut sampler_rng)?
        .seconds_per_step
        * recipe.eval_langevin.steps as f64;
    let per_iteration = |sampler: &dyn Sampler, rng: &mut Rng| -> anyhow::Result<f64> {
        Ok(sampler
            .run(&probe, &probe_x0, rng)?
            .stats
            .seconds_per_step())
    };
    let mala_pilot = per_iteration(
        &Mala::new(MalaConfig::new(sc.mala_step_size, 3))?,
        &mut sampler_rng,
    )?;
    let hmc_pilot = per_iteration(
        &Hmc::new(HmcConfig::new(sc.hmc_step_size, sc.hmc_leapfrog_steps, 2))?,
        &mut sampler_rng,
    )?;
    let split = |total: usize| {
        let warmup = ((total as f64 * sc.warmup_fraction) as usize).max(1);
        (warmup, total.saturating_sub(warmup).max(1))
    };
    let (mala_warmup, mala_steps) =
        split((langevin_seconds / mala_pilot).floor().max(2.0) as usize);
    let (hmc_warmup, hmc_steps) = split((langevin_seconds / hmc_pilot).floor().max(2.0) as usize);
    let mala = Mala::new(
        MalaConfig::new(sc.mala_step_size, mala_steps)
            .with_adaptation(mala_warmup, sc.mala_target_accept),
    )?;
    let hmc = Hmc::new(
        HmcConfig::new(sc.hmc_step_size, sc.hmc_leapfrog_steps, hmc_steps)
            .with_adaptation(hmc_warmup, sc.hmc_target_accept),
    )?;
    // Diagnostics of each sampler on the first expression: acceptance, ESS and R-hat of the
    // energy traces across chains, and the traces themselves as plots.
    let mut diagnostics = serde_json::Map::new();
    let mut energy_series = Vec::new();
    let mut step_series = Vec::new();
    let langevin_sampler = Langevin::new(recipe.eval_langevin.clone())?;
    for (name, sampler) in [
        ("langevin", &langevin_sampler as &dyn Sampler),
        ("mala", &mala as &dyn Sampler),
        ("hmc", &hmc as &dyn Sampler),
    ] {
        let run = sampler.run(&probe, &probe_x0, &mut sampler_rng)?;
        report.metric(
            format!("sampler_{name}_mean_accept_prob"),
            run.stats.mean_accept_prob(),
        );
        // ESS and R-hat need enough draws per chain; a tiny recipe records why not.
        let d = match run.diagnostics() {
            Ok(d) => {
                report.metric(format!("sampler_{name}_ess_energy"), d.ess_energy);
                report.metric(format!("sampler_{name}_rhat_energy"), d.rhat_energy);
                serde_json::to_value(&d)?
            }
            Err(e) => {
                report.metric(format!("sampler_{name}_ess_energy"), f64::NAN);
                report.metric(format!("sampler_{name}_rhat_energy"), f64::NAN);
                serde_json::Value::String(e.to_string())
            }
        };
        diagnostics.insert(
            name.to_string(),
            serde_json::json!({"stats": run.stats, "diagnostics": d}),
        );
        energy_series.push(Series::from_values(name, &run.stats.energy_trace));
        step_series.push(Series::from_values(name, &run.stats.step_size_trace));
    }
    std::fs::write(
        out.join("sampler_diagnostics.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(diagnostics))?,
    )?;
    LinePlot::new(
        format!("{}: mean energy of the chains", cmp_requests[0].0),
        "iteration",
        "energy",
        energy_series,
    )
    .save(&out.join("sampler_energy_traces.png"))?;
    LinePlot::new(
        "step size (MALA, HMC adapt during warm-up)",
        "iteration",
        "step size",
        step_series,
    )
    .save(&out.join("sampler_step_sizes.png"))?;

    let mut sampler_rows = Vec::new();
    for (name, iterations, outcome) in [
        (
            "langevin",
            recipe.eval_langevin.steps,
            bench.run("sampler_langevin", &cmp_requests, &mut sampler_rng)?,
        ),
        (
            "mala",
            mala_warmup + mala_steps,
            bench.run_with(
                "sampler_mala",
                &cmp_requests,
                &|_: &str| Ok(Box::new(mala.clone()) as Box<dyn Sampler>),
                &mut sampler_rng,
            )?,
        ),
        (
            "hmc",
            hmc_warmup + hmc_steps,
            bench.run_with(
                "sampler_hmc",
                &cmp_requests,
                &|_: &str| Ok(Box::new(hmc.clone()) as Box<dyn Sampler>),
                &mut sampler_rng,
            )?,
        ),
    ] {
        report.metric(format!("sampler_{name}_accuracy"), outcome.all);
        report.metric(format!("sampler_{name}_iterations"), iterations as f64);
        sampler_rows.push(vec![
            name.to_string(),
            iterations.to_string(),
            format!("{:.3}", outcome.all),
            format!("![](sampler_{name}.png)"),
        ]);
    }

    // 6. Concept inference: the position of an observed object as the condition of lowest
    //    energy for its latent code, searched over a grid of candidate positions.
    let observed = everything.sample(recipe.infer_images, &mut rng)?;
    let codes = autoencoder.encode_mean(&scene_tensor(&observed, device)?)?;
    let position_model = model_of(Concept::Position);
    let n = observed.len();
    let mut best = vec![(f64::INFINITY, [0.0f64; 2]); n];
    for i in 0..=INFER_SEARCH_STEPS {
        for j in 0..=INFER_SEARCH_STEPS {
            let candidate = [
                i as f64 / INFER_SEARCH_STEPS as f64,
                j as f64 / INFER_SEARCH_STEPS as f64,
            ];
            let condition = Tensor::from_vec(
                [candidate[0] as f32, candidate[1] as f32].repeat(n),
                (n, 2),
                device,
            )?;
            let e = ebm_compose::VectorConditioned::energy_given_vector(
                &position_model,
                &codes,
                &condition,
            )?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
            for (b, e) in best.iter_mut().zip(e) {
                if e < b.0 {
                    *b = (e, candidate);
                }
            }
        }
    }
    let truth = observed.positions(0)?;
    let dist = |a: [f64; 2], t: [f32; 2]| {
        ((a[0] - t[0] as f64).powi(2) + (a[1] - t[1] as f64).powi(2)).sqrt()
    };
    let infer_error = best
        .iter()
        .zip(&truth)
        .map(|((_, p), t)| dist(*p, *t))
        .sum::<f64>()
        / n as f64;
    // Baseline: always guessing the centre.
    let centre_guess = truth.iter().map(|t| dist([0.5, 0.5], *t)).sum::<f64>() / n as f64;
    let eval_seconds = eval_start.elapsed().as_secs_f64();

    // Metrics.
    for (name, _, o) in &outcomes {
        report.metric(format!("{name}_all_accuracy"), o.all);
        if let Some(a) = o.shape_by_template {
            report.metric(format!("{name}_template_shape_accuracy"), a);
        }
    }
    let get = |name: &str| -> &Outcome {
        &outcomes
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("experiment ran")
            .2
    };
    report.metric("single_shape_accuracy", get("single_shape").get("shape"));
    report.metric("single_color_accuracy", get("single_color").get("color"));
    report.metric("single_size_accuracy", get("single_size").get("size"));
    report.metric(
        "single_position_accuracy",
        get("single_position").get("position"),
    );
    report.metric(
        "and_position_accuracy",
        get("and_position_color").get("position"),
    );
    report.metric("and_color_accuracy", get("and_position_color").get("color"));
    report.metric("and_three_accuracy", get("and_three").all);
    report.metric("or_accuracy", get("or").all);
    report.metric("not_accuracy", get("not").all);
    report.metric("continual_accuracy", get("continual").all);
    report.metric("heldout_and_accuracy", get("heldout_and").all);
    report.metric(
        "heldout_joint_baseline_accuracy",
        get("heldout_joint_baseline").all,
    );
    report.metric("infer_position_error", infer_error);
    report.metric("infer_position_error_centre_guess", centre_guess);
    report.metric("judge_seconds", judge_seconds);
    report.metric("autoencoder_and_judges_seconds", phase_seconds);
    report.metric("eval_seconds", eval_seconds);
    let wall = start.elapsed().as_secs_f64();
    report.metric("wall_seconds", wall);

    // The report.
    report.section(format!(
        "Compositional generation (Du, Li & Mordatch 2020) on generated scenes ({}x{}, one object), {} mode, seed {}, {wall:.0} s in all.",
        recipe.image_size,
        recipe.image_size,
        serde_json::to_value(options.mode)?.as_str().unwrap_or("?"),
        options.seed
    ));
    report.section(format!(
        "## Judges\n\nClassifiers (shape, colour, size) and a position regressor trained on the scene generator ({} / {} / {} / {} steps for shape / colour / size / position, {} shape judges voting, on {} renders{}: {judge_seconds:.0} s on one core each, beside the VAE: {phase_seconds:.0} s for the VAE and the judges), checked on 500 fresh scenes: \
         shape {:.3}, colour {:.3}, size {:.3}, position within {} {:.3}; and on the same scenes blurred {} times: shape {:.3}, colour {:.3}, size {:.3}, position {:.3}. Every accuracy below is theirs.",
        recipe.judge.iterations.shape,
        recipe.judge.iterations.color,
        recipe.judge.iterations.size,
        recipe.judge.iterations.position,
        recipe.judge.shape_judges,
        if recipe.judge.soft_renders { "soft" } else { "crisp" },
        if recipe.judge.varied_shape_renders {
            ", the shape judge on rounded and unevenly coloured ones too"
        } else {
            ""
        },
        report.metrics["judge_shape_accuracy"],
        report.metrics["judge_color_accuracy"],
        report.metrics["judge_size_accuracy"],
        recipe.position_tolerance,
        report.metrics["judge_position_accuracy"],
        SOFTEST,
        report.metrics["judge_shape_accuracy_softest"],
        report.metrics["judge_color_accuracy_softest"],
        report.metrics["judge_size_accuracy_softest"],
        report.metrics["judge_position_accuracy_softest"],
    ));
    let ae = &recipe.autoencoder;
    report.section(format!(
        "## The latent space\n\nA VAE of scenes (encoder widths {:?}, a DCGAN-style decoder of width {}, latent size {}, KL weight {}) trained without labels for {} steps of batch {} on scenes without the held-out pairs ({ae_seconds:.0} s): \
         summed squared error {ae_reconstruction:.2} (pixels in [-1, 1]), KL {ae_kl:.2}. The judges read its reconstructions of 500 fresh scenes as shape {:.3}, colour {:.3}, size {:.3}, position {:.3}: \
         the ceiling for decoded samples. First row scenes, second their reconstructions: ![](reconstructions.png)",
        ae.encoder_widths,
        ae.decoder_width,
        ae.latent_dim,
        ae.kl_weight,
        ae.iterations,
        ae.batch_size,
        report.metrics["reconstruction_shape_accuracy"],
        report.metrics["reconstruction_color_accuracy"],
        report.metrics["reconstruction_size_accuracy"],
        report.metrics["reconstruction_position_accuracy"],
    ));
    let cr = &recipe.concept;
    report.section(format!(
        "## Concept models\n\nEnergies `E(z | c) = MLP([z, phi(c)]) + {} |z|^2 / 2` over the latent code (hidden widths {:?}; `phi` one-hot classes, or `(x, y)` with sines and cosines of {} frequencies), trained independently by short-run contrastive divergence \
         (shape / colour / size / position / joint {} / {} / {} / {} / {} steps of batch {}; negatives by {} Langevin steps from {}, step {}, noise {}; energy regulariser {}; weight of the conditional term -log p(c | z) {}; codes {}, drawn with replacement from {} scenes encoded once in {:.0} s, each concept from those its training distribution could have drawn). \
         Shape, colour and joint never see the held-out pairs {}; size is trained last, on {} only. Means over the last 10% of steps:\n\n{}",
        cr.prior_weight,
        cr.hidden,
        cr.position_frequencies,
        cr.iterations.shape,
        cr.iterations.color,
        cr.iterations.size,
        cr.iterations.position,
        cr.iterations.joint,
        cr.batch_size,
        cr.langevin.steps,
        chain_start_words(cr.chain_start, true),
        cr.langevin.step_size,
        cr.langevin.noise_scale,
        cr.l2_coeff,
        cr.conditional_weight,
        if cr.standardise_codes {
            "standardised per dimension"
        } else {
            "as the encoder gives them"
        },
        cr.code_pool,
        report.metrics["code_pool_seconds"],
        recipe.heldout_pairs.iter().map(|(s, c)| format!("{c} {s}")).collect::<Vec<_>>().join(", "),
        recipe.continual_shapes.join(" and "),
        table(&["concept", "condition", "loss", "E+", "E-", "train s"], &train_rows)
    ));
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|(name, expr, o)| {
            vec![
                name.to_string(),
                format!("`{expr}`"),
                o.per_criterion
                    .iter()
                    .map(|(c, v)| format!("{c} {v:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                format!("{:.3}", o.all),
                o.samples.to_string(),
                format!("![]({name}.png)"),
            ]
        })
        .collect();
    report.section(format!(
        "## Experiments\n\nEach request sampled {} times by {} Langevin steps in the latent space from {} (step {}, noise {}, clip {:?}), then decoded; a position is right within {} of the request. \
         Samples: `<experiment>.npy` (N x 3 x H x W in [0, 1]) with `<experiment>.json` (the expression and attributes each sample was asked for, and the judges' verdict).\n\n{}",
        recipe.samples_per_condition,
        recipe.eval_langevin.steps,
        chain_start_words(cr.chain_start, false),
        recipe.eval_langevin.step_size,
        recipe.eval_langevin.noise_scale,
        recipe.eval_langevin.grad_clip,
        recipe.position_tolerance,
        table(&["experiment", "expression", "per criterion", "all", "samples", "grid"], &rows)
    ));
    report.section(format!(
        "## Samplers at equal wall-clock time\n\n`shape=s & color=c` for {} seen pairs, {} samples each, in the latent space. Every sampler gets the time {} Langevin steps take ({langevin_seconds:.2} s per batch); MALA (start eta {}, target acceptance {}) and HMC ({} leapfrog steps, start step {}, target {}) spend {:.0}% of it adapting the step size by dual averaging. Fraction of samples with both attributes right:\n\n{}",
        cmp_requests.len(),
        recipe.samples_per_condition,
        recipe.eval_langevin.steps,
        sc.mala_step_size,
        sc.mala_target_accept,
        sc.hmc_leapfrog_steps,
        sc.hmc_step_size,
        sc.hmc_target_accept,
        100.0 * sc.warmup_fraction,
        table(&["sampler", "iterations", "accuracy", "samples"], &sampler_rows)
    ));
    report.section(format!(
        "Diagnostics on `{}` (one batch of {} chains; `sampler_diagnostics.json` has everything): mean acceptance probability Langevin {:.3}, MALA {:.3}, HMC {:.3}; \
         ESS of the energy traces {:.1} / {:.1} / {:.1}; split R-hat {:.3} / {:.3} / {:.3}. Traces: ![](sampler_energy_traces.png) ![](sampler_step_sizes.png)",
        cmp_requests[0].0,
        recipe.samples_per_condition,
        report.metrics["sampler_langevin_mean_accept_prob"],
        report.metrics["sampler_mala_mean_accept_prob"],
        report.metrics["sampler_hmc_mean_accept_prob"],
        report.metrics["sampler_langevin_ess_energy"],
        report.metrics["sampler_mala_ess_energy"],
        report.metrics["sampler_hmc_ess_energy"],
        report.metrics["sampler_langevin_rhat_energy"],
        report.metrics["sampler_mala_rhat_energy"],
        report.metrics["sampler_hmc_rhat_energy"],
    ));
    report.section(format!(
        "## Against the paper\n\n| | paper (MuJoCo scenes) | this run |\n| --- | --- | --- |\n\
         | AND position accuracy | 0.872 | {:.3} |\n| AND colour accuracy | 0.801 | {:.3} |\n\n\
         Targets on our scenes: single-concept accuracy at least 0.95, AND at least the paper's.\n\n\
         ## Concept inference\n\nThe position of {} observed objects, as the `(x, y)` of lowest position energy for the object's latent code (searched over a grid of step {}): mean error {infer_error:.4} (unit-square distance). \
         For scale: always guessing the centre {centre_guess:.4}.",
        report.metrics["and_position_accuracy"],
        report.metrics["and_color_accuracy"],
        n,
        1.0 / INFER_SEARCH_STEPS as f64
    ));
    report.section(format!(
        "## What differs from the paper\n\nThe paper composes pixel-space EBMs trained on rendered MuJoCo scenes (and CelebA) at 64x64 with large ResNets for many GPU-hours; \
         this run uses our own generated scenes of flat 2-D shapes at {}x{}, and its energies live in the {}-dimensional latent space of a scene VAE trained once without labels: \
         each concept is still its own energy, trained on its own, and composed by the same algebra, but chains move the latent code and the decoder draws the image \
         (composition in a generator's latent space, as Nie et al. 2021 do with StyleGAN). The VAE never sees the held-out (shape, colour) pairs either.",
        recipe.image_size,
        recipe.image_size,
        recipe.autoencoder.latent_dim,
    ));
    report.write(out, "Compositional generation reproduction")?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    //! The pool of scene codes the concepts train on, and the shape judges' vote.

    use super::*;

    /// The vote averages each judge's softmax: rows are probabilities, one judge's vote is
    /// its own softmax, and two judges' is the mean of theirs, computed here from the logits
    /// in f64.
    #[test]
    fn the_shape_judges_vote_with_their_mean_probabilities() {
        let device = Device::Cpu;
        let mut rng = seeded_rng(5);
        let config = ClassifierConfig {
            channels: 3,
            image_size: 8,
            widths: vec![4],
            feature_dim: 4,
            num_classes: 4,
            global_pool: true,
        };
        let judges: Vec<Classifier> = (0..2)
            .map(|_| Classifier::new(&config, &device, &mut rng).unwrap())
            .collect();
        let x = ebm_core::noise::uniform(&mut rng, (5, 3, 8, 8), 0.0, 1.0, DType::F32, &device)
            .unwrap();
        let softmax = |c: &Classifier| -> Vec<Vec<f64>> {
            let logits = c.logits(&x).unwrap().to_dtype(DType::F64).unwrap();
            logits
                .to_vec2::<f64>()
                .unwrap()
                .into_iter()
                .map(|row| {
                    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = row.iter().map(|l| (l - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    e.into_iter().map(|v| v / z).collect()
                })
                .collect()
        };
        let (a, b) = (softmax(&judges[0]), softmax(&judges[1]));
        let one = mean_probabilities(&judges[..1], &x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let two = mean_probabilities(&judges, &x)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for i in 0..5 {
            let total: f32 = two[i].iter().sum();
            assert!((total - 1.0).abs() < 1e-5, "row {i} sums to {total}");
            for k in 0..4 {
                assert!((one[i][k] as f64 - a[i][k]).abs() < 1e-5);
                let mean = (a[i][k] + b[i][k]) / 2.0;
                assert!((two[i][k] as f64 - mean).abs() < 1e-5, "{i} {k}");
            }
        }
        assert!(mean_probabilities(&[], &x).is_err());
    }

    /// A share of the pool holds every pooled scene its generator could have drawn and no
    /// other; a batch pairs each code with its own scene's labels, checked by rendering the
    /// labels again and encoding the image.
    #[test]
    fn a_pool_share_keeps_its_generators_scenes_with_their_codes() {
        let device = Device::Cpu;
        let mut rng = seeded_rng(3);
        let mut recipe = Recipe::quick().autoencoder;
        recipe.encoder_widths = vec![4, 4];
        recipe.encoder_features = 8;
        recipe.decoder_width = 2;
        let ae = SceneAutoencoder::new(&recipe, 32, &device, &mut rng).unwrap();
        let everything = SceneGenerator::new(SceneConfig::new(32)).unwrap();
        let later = SceneGenerator::new(
            SceneConfig::new(32)
                .without_pairs(&[(Shape::Square, Color::Red)])
                .filtered(|c| matches!(c.shape, Shape::Square | Shape::Circle)),
        )
        .unwrap();
        // More than one chunk of 1,024.
        let pool = CodePool::encode(&everything, 1100, &ae, &mut rng, &device).unwrap();
        assert_eq!(pool.codes.dims(), &[1100, recipe.latent_dim]);
        let share = pool.restricted_to(&later, "size").unwrap();
        let allowed = |o: &ObjectSpec| {
            matches!(o.shape, Shape::Square | Shape::Circle)
                && !(o.shape == Shape::Square && o.color == Color::Red)
        };
        let expected = pool
            .labels
            .iter()
            .filter(|l| allowed(&l.objects[0]))
            .count();
        assert!(expected > 300 && expected < 600, "{expected} of 1100");
        assert_eq!(share.labels.len(), expected);
        assert!(share.labels.iter().all(|l| allowed(&l.objects[0])));

        let (codes, labels) = share.batch(20, &mut rng).unwrap();
        assert_eq!(codes.dims(), &[20, recipe.latent_dim]);
        let codes = codes.to_vec2::<f32>().unwrap();
        for (code, l) in codes.iter().zip(&labels) {
            assert!(allowed(&l.objects[0]));
            let image: Vec<f32> = everything
                .render(&l.objects)
                .unwrap()
                .iter()
                .map(|&b| b as f32 / 255.0)
                .collect();
            let x = Tensor::from_vec(image, (1, 3, 32, 32), &device).unwrap();
            let again = ae.encode_mean(&x).unwrap().to_vec2::<f32>().unwrap();
            for (a, b) in code.iter().zip(&again[0]) {
                assert!((a - b).abs() < 1e-4, "{code:?} vs {:?}", again[0]);
            }
        }

        // A generator whose scenes are not in the pool: an error naming the concept.
        let triangles =
            SceneGenerator::new(SceneConfig::new(32).filtered(|c| c.shape == Shape::Triangle))
                .unwrap();
        let err = share
            .restricted_to(&triangles, "triangle")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("triangle concept"), "{err}");
    }
}
