//! Procedurally generated scenes: one or two coloured shapes on a plain background, each labelled
//! with its shape, colour, size and position. A stand-in for the MuJoCo scenes of Du, Li &
//! Mordatch 2020 ("Compositional Visual Generation with Energy Based Models"), made from a seed
//! instead of read from files, for training one conditional energy per attribute and composing
//! them (including on attribute combinations held out of training).
//!
//! ```
//! use candle_core::Device;
//! use ebm_core::seeded_rng;
//! use ebm_data::scenes::{Color, SceneConfig, SceneGenerator, Shape};
//!
//! // Red squares are held out: every other (shape, colour) pair is drawn.
//! let config = SceneConfig::quick().without_pairs(&[(Shape::Square, Color::Red)]);
//! let generator = SceneGenerator::new(config)?;
//! let mut rng = seeded_rng(0); // any `rand::Rng`; the workspace's is ChaCha8
//! let batch = generator.sample(8, &mut rng)?;
//! assert_eq!(batch.tensor(&Device::Cpu)?.dims(), &[8, 3, 32, 32]);
//! let object = batch.labels()[0].objects[0];
//! assert!(!(object.shape == Shape::Square && object.color == Color::Red));
//! # Ok::<(), ebm_data::Error>(())
//! ```
//!
//! # Geometry
//!
//! Pixel coordinates are continuous: for an image of side `S`, the image covers `[0, S]` in both
//! directions, `x` to the right and `y` downwards, and pixel (row `i`, column `j`) covers
//! `[j, j + 1] x [i, i + 1]` (its centre is at `(j + 0.5, i + 0.5)`).
//!
//! - **Size.** An object of size `size` fits in a bounding square of side
//!   `size.extent() * S` around its centre: `0.3 S` for [`Size::Small`], `0.45 S` for
//!   [`Size::Large`]. Write `r = size.extent() * S / 2` for its half-extent.
//! - **Position.** A label `(x, y)` in `[0, 1]` puts the object's centre at
//!   `cx = m + x (S - 2m)`, `cy = m + y (S - 2m)` with `m = Size::Large.extent() * S / 2 = 0.225 S`,
//!   the same for both sizes (so that a position means the same place whatever the size): `x = 0`
//!   is the left-most centre at which a large object still lies wholly inside the image, `y = 0`
//!   the top-most. The centre is the shape's centre of mass, so the centroid of an object's
//!   pixels (weighted by coverage) is at `(cx, cy)`.
//! - **Shapes**, with `(u, v) = ((px - cx) / r, (py - cy) / r)`: [`Shape::Square`]
//!   `max(|u|, |v|) <= 1`; [`Shape::Circle`] `u^2 + v^2 <= 1`; [`Shape::Triangle`] the triangle
//!   with vertices `(0, -1)`, `(1, 0.5)`, `(-1, 0.5)` (apex up, base at the bottom, its centre of
//!   mass at the origin); [`Shape::Diamond`] `|u| + |v| <= 1`. Each fills this fraction of its own
//!   tight bounding box: square 1, circle pi/4, triangle 1/2, diamond 1/2.
//! - **Anti-aliasing.** A pixel's coverage is the fraction of a 4x4 grid of points inside it that
//!   falls inside the shape (pixels wholly inside or outside are decided from a distance bound
//!   without sampling), and the pixel becomes `background + coverage (colour - background)`,
//!   rounded. Pixels wholly inside an object are exactly its colour; pixels no object touches are
//!   exactly the background.
//! - **Two objects** are drawn in label order, the second over the first. They may share at most
//!   [`SceneConfig::max_overlap`] (0.1 by default) of the smaller object's area, so each object
//!   keeps at least `1 - max_overlap` of its area in view. The shared area is estimated on a
//!   32x32 grid of points over the intersection of the two bounding squares; placements that
//!   break the rule are redrawn.
//!
//! # Determinism
//!
//! Every draw comes from the caller's generator, in a fixed order: per scene, each object's
//! combination (`random_range` over [`SceneConfig::combinations`]), then `x`, `y` of each object
//! (`random::<f32>()`, in `[0, 1)`), the positions redrawn together until the overlap rule holds.
//! Nothing depends on the image size, so one seed gives the same labels at 32x32 and 64x64.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, Tensor};

use crate::{Error, ImageSet, Result};

/// The smallest image side [`SceneConfig`] and [`render`] accept: a small object is then still
/// about 5 pixels across.
pub const MIN_IMAGE_SIZE: usize = 16;

/// The largest image side accepted (a guard against absurd allocations).
pub const MAX_IMAGE_SIZE: usize = 1024;

/// The default background, black: every object colour differs from it by 255 in at least one
/// channel, and any non-zero pixel belongs to an object.
pub const BACKGROUND: [u8; 3] = [0, 0, 0];

/// Sub-samples per side of a pixel on an object's edge (4x4 = 16 points per pixel).
pub const SUPERSAMPLING: usize = 4;

/// How many placements of two objects are tried before giving up (the rule always leaves room
/// for far more than one in a thousand, so this is a guard, not a limit met in practice).
const MAX_PLACEMENT_TRIES: usize = 10_000;

/// Points per side of the grid that estimates the area two objects share.
const OVERLAP_GRID: usize = 32;

/// Defines a labelled attribute: a fieldless enum with `ALL`, `name`, `from_name`, `index`,
/// `from_index`, `Display` and `FromStr`.
macro_rules! attribute_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in class-index order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The lower-case name (as in labels and on command lines).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The class index: the position in [`Self::ALL`].
            pub fn index(self) -> usize {
                self as usize
            }

            /// The value with class index `index`; the error gives the valid range.
            pub fn from_index(index: usize) -> Result<Self> {
                Self::ALL.get(index).copied().ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} index {index} is out of range (0 to {})",
                        $what,
                        Self::ALL.len() - 1
                    ))
                })
            }

            /// The value called `name` (ASCII case ignored); the error lists the known names.
            pub fn from_name(name: &str) -> Result<Self> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.name().eq_ignore_ascii_case(name.trim()))
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "unknown {} `{name}`; known: {}",
                            $what,
                            Self::ALL.map(|v| v.name()).join(", ")
                        ))
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                Self::from_name(s)
            }
        }
    };
}

attribute_enum! {
    /// An object's shape. See the [module docs](self) for the exact geometry.
    pub enum Shape ("shape") {
        /// An axis-aligned square filling its bounding square.
        Square => "square",
        /// A disc touching the sides of its bounding square.
        Circle => "circle",
        /// A triangle, apex up, as wide as its bounding square and three quarters as tall.
        Triangle => "triangle",
        /// A square rotated by 45 degrees, its corners on the sides of its bounding square.
        Diamond => "diamond",
    }
}

attribute_enum! {
    /// An object's colour: fully saturated primaries and secondaries, at least 255 apart in some
    /// channel from each other and from the default black background.
    pub enum Color ("colour") {
        /// RGB (255, 0, 0).
        Red => "red",
        /// RGB (0, 255, 0).
        Green => "green",
        /// RGB (0, 0, 255).
        Blue => "blue",
        /// RGB (255, 255, 0).
        Yellow => "yellow",
        /// RGB (255, 0, 255).
        Magenta => "magenta",
        /// RGB (0, 255, 255).
        Cyan => "cyan",
    }
}

attribute_enum! {
    /// An object's size: the side of its bounding square as a fraction of the image side.
    pub enum Size ("size") {
        /// 0.3 of the image side (9.6 pixels at 32x32).
        Small => "small",
        /// 0.45 of the image side (14.4 pixels at 32x32).
        Large => "large",
    }
}

attribute_enum! {
    /// Which discrete attribute a class label refers to.
    pub enum Attribute ("attribute") {
        /// [`Shape`], 4 classes.
        Shape => "shape",
        /// [`Color`], 6 classes.
        Color => "color",
        /// [`Size`], 2 classes.
        Size => "size",
    }
}

impl Color {
    /// The colour's RGB bytes.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [255, 0, 0],
            Color::Green => [0, 255, 0],
            Color::Blue => [0, 0, 255],
            Color::Yellow => [255, 255, 0],
            Color::Magenta => [255, 0, 255],
            Color::Cyan => [0, 255, 255],
        }
    }
}

impl Size {
    /// The side of the object's bounding square as a fraction of the image side.
    pub fn extent(self) -> f32 {
        match self {
            Size::Small => 0.3,
            Size::Large => 0.45,
        }
    }
}

impl Shape {
    /// Area in units of the half-extent squared (`r^2`).
    fn unit_area(self) -> f32 {
        match self {
            Shape::Square => 4.0,
            Shape::Circle => std::f32::consts::PI,
            Shape::Triangle => 1.5,
            Shape::Diamond => 2.0,
        }
    }

    /// Signed distance to the outline in units of `r` at `(u, v)` (offsets from the centre over
    /// `r`): exact inside, a lower bound on the distance outside; `<= 0` is inside.
    #[inline]
    fn distance(self, u: f32, v: f32) -> f32 {
        // Triangle edges: the base `v = 0.5` and the sides `1.5 |u| - v = 1`.
        const SIDE_NORM: f32 = 1.802_775_6; // sqrt(1.5^2 + 1)
        match self {
            Shape::Square => u.abs().max(v.abs()) - 1.0,
            Shape::Circle => (u * u + v * v).sqrt() - 1.0,
            Shape::Triangle => (v - 0.5).max((1.5 * u.abs() - v - 1.0) / SIDE_NORM),
            Shape::Diamond => (u.abs() + v.abs() - 1.0) * std::f32::consts::FRAC_1_SQRT_2,
        }
    }

    #[inline]
    fn contains(self, u: f32, v: f32) -> bool {
        self.distance(u, v) <= 0.0
    }
}

impl Attribute {
    /// The number of classes of this attribute.
    pub fn classes(self) -> usize {
        match self {
            Attribute::Shape => Shape::ALL.len(),
            Attribute::Color => Color::ALL.len(),
            Attribute::Size => Size::ALL.len(),
        }
    }
}

/// The discrete attributes of one object: what [`SceneConfig::combinations`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Combination {
    /// The shape.
    pub shape: Shape,
    /// The colour.
    pub color: Color,
    /// The size.
    pub size: Size,
}

impl Combination {
    /// Every combination (4 shapes x 6 colours x 2 sizes), shapes slowest, sizes fastest.
    pub fn all() -> Vec<Combination> {
        let mut out = Vec::with_capacity(Shape::ALL.len() * Color::ALL.len() * Size::ALL.len());
        for shape in Shape::ALL {
            for color in Color::ALL {
                for size in Size::ALL {
                    out.push(Combination { shape, color, size });
                }
            }
        }
        out
    }

    /// The object with these attributes at position `(x, y)`.
    pub fn at(self, x: f32, y: f32) -> ObjectSpec {
        ObjectSpec {
            shape: self.shape,
            color: self.color,
            size: self.size,
            x,
            y,
        }
    }

    /// The class index of one attribute.
    pub fn class(self, attribute: Attribute) -> usize {
        match attribute {
            Attribute::Shape => self.shape.index(),
            Attribute::Color => self.color.index(),
            Attribute::Size => self.size.index(),
        }
    }
}

impl fmt::Display for Combination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.size, self.color, self.shape)
    }
}

/// One object of a scene: its attributes and position. Also the label of that object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectSpec {
    /// The shape.
    pub shape: Shape,
    /// The colour.
    pub color: Color,
    /// The size.
    pub size: Size,
    /// Horizontal position of the centre in [0, 1], left to right (mapping in the module docs).
    pub x: f32,
    /// Vertical position of the centre in [0, 1], top to bottom.
    pub y: f32,
}

impl ObjectSpec {
    /// An object with these attributes at `(x, y)`.
    pub fn new(shape: Shape, color: Color, size: Size, x: f32, y: f32) -> Self {
        Self {
            shape,
            color,
            size,
            x,
            y,
        }
    }

    /// Its discrete attributes.
    pub fn combination(&self) -> Combination {
        Combination {
            shape: self.shape,
            color: self.color,
            size: self.size,
        }
    }

    /// Checks that `x` and `y` are finite and in [0, 1].
    pub fn validate(&self) -> Result<()> {
        for (field, value) in [("x", self.x), ("y", self.y)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::Invalid(format!(
                    "object {self}: {field} = {value} is outside [0, 1]"
                )));
            }
        }
        Ok(())
    }

    /// The centre `(cx, cy)` in pixel coordinates of an `image_size` image:
    /// `m + x (S - 2m)` with `m = 0.225 S` (see the module docs).
    pub fn centre(&self, image_size: usize) -> (f32, f32) {
        let s = image_size as f32;
        let m = Size::Large.extent() * s / 2.0;
        (m + self.x * (s - 2.0 * m), m + self.y * (s - 2.0 * m))
    }

    /// Half the side of the bounding square, in pixels of an `image_size` image.
    pub fn half_extent(&self, image_size: usize) -> f32 {
        self.size.extent() * image_size as f32 / 2.0
    }

    /// The object's area in pixels of an `image_size` image (exact, before anti-aliasing).
    pub fn area(&self, image_size: usize) -> f32 {
        let r = self.half_extent(image_size);
        self.shape.unit_area() * r * r
    }
}

impl fmt::Display for ObjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at ({}, {})", self.combination(), self.x, self.y)
    }
}

/// Whether two objects share at most `max_overlap` of the smaller one's area, the shared area
/// estimated on an [`OVERLAP_GRID`]-square grid of points over the intersection of their bounding
/// squares. Computed for an image of side 1, so the answer does not depend on the image size.
fn overlap_within(a: &ObjectSpec, b: &ObjectSpec, max_overlap: f32) -> bool {
    let (ax, ay) = a.centre(1);
    let (bx, by) = b.centre(1);
    let (ar, br) = (a.half_extent(1), b.half_extent(1));
    let (x0, x1) = ((ax - ar).max(bx - br), (ax + ar).min(bx + br));
    let (y0, y1) = ((ay - ar).max(by - br), (ay + ar).min(by + br));
    if x1 <= x0 || y1 <= y0 {
        return true;
    }
    let (dx, dy) = (
        (x1 - x0) / OVERLAP_GRID as f32,
        (y1 - y0) / OVERLAP_GRID as f32,
    );
    // The most grid points the two may share.
    let allowed = max_overlap * a.area(1).min(b.area(1)) / (dx * dy);
    let mut shared = 0usize;
    for i in 0..OVERLAP_GRID {
        let py = y0 + (i as f32 + 0.5) * dy;
        let (va, vb) = ((py - ay) / ar, (py - by) / br);
        for j in 0..OVERLAP_GRID {
            let px = x0 + (j as f32 + 0.5) * dx;
            if a.shape.contains((px - ax) / ar, va) && b.shape.contains((px - bx) / br, vb) {
                shared += 1;
                if shared as f32 > allowed {
                    return false;
                }
            }
        }
    }
    true
}

fn check_image_size(image_size: usize) -> Result<()> {
    if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&image_size) {
        return Err(Error::Invalid(format!(
            "scene config: image_size {image_size} is outside {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} \
             (below {MIN_IMAGE_SIZE} a small object is too few pixels to recognise)"
        )));
    }
    Ok(())
}

/// What scenes to generate. Build one with [`SceneConfig::new`] (or [`quick`](Self::quick),
/// [`full`](Self::full)) and the `with_*` methods; [`SceneGenerator::new`] checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Side of the square images in pixels, [`MIN_IMAGE_SIZE`] to [`MAX_IMAGE_SIZE`].
    pub image_size: usize,
    /// Objects per scene: 1 or 2.
    pub objects: usize,
    /// The attribute combinations objects are drawn from, uniformly and independently per
    /// object; every combination by default. No duplicates.
    pub combinations: Vec<Combination>,
    /// Background RGB; must not be the colour of any listed combination.
    pub background: [u8; 3],
    /// The largest fraction of the smaller object's area two objects may share, in [0, 1].
    pub max_overlap: f32,
}

impl Default for SceneConfig {
    /// [`SceneConfig::quick`].
    fn default() -> Self {
        Self::quick()
    }
}

impl SceneConfig {
    /// One object per scene, every combination, black background, `max_overlap` 0.1.
    pub fn new(image_size: usize) -> Self {
        Self {
            image_size,
            objects: 1,
            combinations: Combination::all(),
            background: BACKGROUND,
            max_overlap: 0.1,
        }
    }

    /// 32x32 images, quick to train on.
    pub fn quick() -> Self {
        Self::new(32)
    }

    /// 64x64 images.
    pub fn full() -> Self {
        Self::new(64)
    }

    /// Sets the number of objects per scene (1 or 2).
    pub fn with_objects(mut self, objects: usize) -> Self {
        self.objects = objects;
        self
    }

    /// Replaces the combinations objects are drawn from.
    pub fn with_combinations(mut self, combinations: Vec<Combination>) -> Self {
        self.combinations = combinations;
        self
    }

    /// Keeps only the combinations for which `keep` is true.
    pub fn filtered(mut self, keep: impl Fn(&Combination) -> bool) -> Self {
        self.combinations.retain(|c| keep(c));
        self
    }

    /// Keeps only the combinations whose (shape, colour) pair is in `pairs` (every size of
    /// them still listed).
    pub fn with_pairs(self, pairs: &[(Shape, Color)]) -> Self {
        self.filtered(|c| pairs.contains(&(c.shape, c.color)))
    }

    /// Removes the combinations whose (shape, colour) pair is in `pairs`: held out of training.
    pub fn without_pairs(self, pairs: &[(Shape, Color)]) -> Self {
        self.filtered(|c| !pairs.contains(&(c.shape, c.color)))
    }

    /// Sets the background colour.
    pub fn with_background(mut self, background: [u8; 3]) -> Self {
        self.background = background;
        self
    }

    /// Sets the largest fraction of the smaller object's area two objects may share.
    pub fn with_max_overlap(mut self, max_overlap: f32) -> Self {
        self.max_overlap = max_overlap;
        self
    }

    /// Checks every field; the error names the field and the problem.
    pub fn validate(&self) -> Result<()> {
        check_image_size(self.image_size)?;
        if !(1..=2).contains(&self.objects) {
            return Err(Error::Invalid(format!(
                "scene config: objects = {}; a scene holds 1 or 2 objects",
                self.objects
            )));
        }
        if self.combinations.is_empty() {
            return Err(Error::Invalid(
                "scene config: combinations is empty, so there is nothing to draw".into(),
            ));
        }
        let mut seen = self.combinations.clone();
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Invalid(format!(
                "scene config: combinations lists `{}` more than once",
                w[0]
            )));
        }
        if let Some(c) = self
            .combinations
            .iter()
            .find(|c| c.color.rgb() == self.background)
        {
            return Err(Error::Invalid(format!(
                "scene config: background {:?} is the colour {}, which combinations use (`{c}`): \
                 those objects would be invisible",
                self.background, c.color
            )));
        }
        if !(0.0..=1.0).contains(&self.max_overlap) {
            return Err(Error::Invalid(format!(
                "scene config: max_overlap = {} is outside [0, 1]",
                self.max_overlap
            )));
        }
        Ok(())
    }
}

/// The labels of one scene.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneLabels {
    /// The objects in drawing order (the second, if any, is drawn over the first).
    pub objects: Vec<ObjectSpec>,
}

/// A batch of scenes: RGB images `[N, 3, S, S]` of bytes (channels, then rows, then columns)
/// and each scene's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneBatch {
    images: Vec<u8>,
    labels: Vec<SceneLabels>,
    image_size: usize,
}

impl SceneBatch {
    /// The number of scenes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the batch holds no scene.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The side of the images.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Bytes per image: `3 S S`.
    pub fn image_len(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    /// Every image's bytes, `[N, 3, S, S]` row-major.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// Every scene's labels.
    pub fn labels(&self) -> &[SceneLabels] {
        &self.labels
    }

    /// The bytes `[3, S, S]` of image `i`.
    pub fn image(&self, i: usize) -> Result<&[u8]> {
        if i >= self.len() {
            return Err(Error::Invalid(format!(
                "scene {i} is out of range for {}",
                self.len()
            )));
        }
        let per = self.image_len();
        Ok(&self.images[i * per..(i + 1) * per])
    }

    /// The images and labels, taken apart.
    pub fn into_parts(self) -> (Vec<u8>, Vec<SceneLabels>) {
        (self.images, self.labels)
    }

    /// The images as an f32 tensor `[N, 3, S, S]` of `byte / 255` in [0, 1] on `device`.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        let values: Vec<f32> = self.images.iter().map(|&b| b as f32 / 255.0).collect();
        let s = self.image_size;
        Ok(Tensor::from_vec(values, (self.len(), 3, s, s), device)?)
    }

    fn check_object(&self, object: usize) -> Result<()> {
        match self.labels.first() {
            Some(first) if object < first.objects.len() => Ok(()),
            Some(first) => Err(Error::Invalid(format!(
                "object {object} is out of range: these scenes hold {} object(s)",
                first.objects.len()
            ))),
            None => Err(Error::Invalid("the batch is empty".into())),
        }
    }

    /// The class index of `attribute` of object `object` (0 or 1) in every scene.
    pub fn class_indices(&self, object: usize, attribute: Attribute) -> Result<Vec<u32>> {
        self.check_object(object)?;
        Ok(self
            .labels
            .iter()
            .map(|l| l.objects[object].combination().class(attribute) as u32)
            .collect())
    }

    /// The position `[x, y]` of object `object` (0 or 1) in every scene.
    pub fn positions(&self, object: usize) -> Result<Vec<[f32; 2]>> {
        self.check_object(object)?;
        Ok(self
            .labels
            .iter()
            .map(|l| [l.objects[object].x, l.objects[object].y])
            .collect())
    }

    /// The images as an [`ImageSet`] labelled with `attribute` of object `object`: its
    /// tensors, dequantisation and seeded shuffled batches, for a class-conditional model.
    pub fn to_image_set(&self, object: usize, attribute: Attribute) -> Result<ImageSet> {
        let labels = self
            .class_indices(object, attribute)?
            .into_iter()
            .map(|c| c as u8)
            .collect();
        let s = self.image_size;
        ImageSet::new(self.images.clone(), labels, [3, s, s], attribute.classes())
    }
}

/// Draws scenes as [`SceneConfig`] describes, from the caller's random generator.
#[derive(Debug, Clone)]
pub struct SceneGenerator {
    config: SceneConfig,
}

impl SceneGenerator {
    /// A generator for `config`, once [`SceneConfig::validate`] accepts it.
    pub fn new(config: SceneConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &SceneConfig {
        &self.config
    }

    /// The labels of one random scene (no image drawn): the draws described in the module docs.
    pub fn sample_objects<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Result<Vec<ObjectSpec>> {
        let combinations = &self.config.combinations;
        let picks: Vec<Combination> = (0..self.config.objects)
            .map(|_| combinations[rng.random_range(0..combinations.len())])
            .collect();
        for _ in 0..MAX_PLACEMENT_TRIES {
            let objects: Vec<ObjectSpec> = picks
                .iter()
                .map(|c| {
                    let x = rng.random::<f32>();
                    let y = rng.random::<f32>();
                    c.at(x, y)
                })
                .collect();
            let fits = match objects.as_slice() {
                [a, b] => overlap_within(a, b, self.config.max_overlap),
                _ => true,
            };
            if fits {
                return Ok(objects);
            }
        }
        Err(Error::Invalid(format!(
            "no placement of {} sharing at most {} of the smaller one's area was found in \
             {MAX_PLACEMENT_TRIES} tries",
            picks
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" and "),
            self.config.max_overlap
        )))
    }

    /// `n` random scenes, drawn and labelled.
    pub fn sample<R: rand::Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Result<SceneBatch> {
        if n == 0 {
            return Err(Error::Invalid(
                "an empty batch of scenes was asked for".into(),
            ));
        }
        let s = self.config.image_size;
        let per = 3 * s * s;
        let too_big = || Error::Invalid(format!("{n} scenes of {s}x{s} do not fit in memory"));
        let total = n.checked_mul(per).ok_or_else(too_big)?;
        let mut images = Vec::new();
        images.try_reserve_exact(total).map_err(|_| too_big())?;
        images.resize(total, 0u8);
        let mut labels = Vec::with_capacity(n);
        for image in images.chunks_exact_mut(per) {
            let objects = self.sample_objects(rng)?;
            paint(&objects, s, self.config.background, image);
            labels.push(SceneLabels { objects });
        }
        Ok(SceneBatch {
            images,
            labels,
            image_size: s,
        })
    }

    /// Draws the given objects with this generator's image size and background.
    pub fn render(&self, objects: &[ObjectSpec]) -> Result<Vec<u8>> {
        render_on(objects, self.config.image_size, self.config.background)
    }
}

/// Draws `objects` in order on the default black background: an image `[3, S, S]` of bytes with
/// `S = image_size`. Any number of objects; overlaps are not checked.
pub fn render(objects: &[ObjectSpec], image_size: usize) -> Result<Vec<u8>> {
    render_on(objects, image_size, BACKGROUND)
}

/// [`render`] on a background of your choice.
pub fn render_on(
    objects: &[ObjectSpec],
    image_size: usize,
    background: [u8; 3],
) -> Result<Vec<u8>> {
    let mut image = vec![0u8; 3 * image_size * image_size];
    render_into(objects, image_size, background, &mut image)?;
    Ok(image)
}

/// [`render_on`] into a buffer of `3 S S` bytes that the caller owns.
pub fn render_into(
    objects: &[ObjectSpec],
    image_size: usize,
    background: [u8; 3],
    image: &mut [u8],
) -> Result<()> {
    check_image_size(image_size)?;
    if image.len() != 3 * image_size * image_size {
        return Err(Error::Invalid(format!(
            "a {image_size}x{image_size} RGB image needs {} bytes, the buffer has {}",
            3 * image_size * image_size,
            image.len()
        )));
    }
    for object in objects {
        object.validate()?;
    }
    paint(objects, image_size, background, image);
    Ok(())
}

/// Fills `image` (`3 s s` bytes, checked by the callers) with the background, then draws.
fn paint(objects: &[ObjectSpec], s: usize, background: [u8; 3], image: &mut [u8]) {
    for (plane, &value) in image.chunks_exact_mut(s * s).zip(&background) {
        plane.fill(value);
    }
    for object in objects {
        draw(object, s, image);
    }
}

/// Draws one (validated) object over `image`.
fn draw(object: &ObjectSpec, s: usize, image: &mut [u8]) {
    // A pixel whose centre is this far inside (outside) the outline is wholly inside (outside):
    // half a pixel's diagonal, a little rounded up.
    const HALF_DIAGONAL: f32 = 0.708;
    const SUB: f32 = 1.0 / SUPERSAMPLING as f32;
    const SAMPLES: f32 = (SUPERSAMPLING * SUPERSAMPLING) as f32;

    let (cx, cy) = object.centre(s);
    let r = object.half_extent(s);
    let inv_r = 1.0 / r;
    let shape = object.shape;
    let rgb = object.color.rgb().map(f32::from);
    let plane = s * s;
    // Pixels that can meet the bounding square (positions keep it inside the image).
    let lo = |c: f32| ((c - r).floor().max(0.0)) as usize;
    let hi = |c: f32| ((c + r).ceil() as usize).min(s);
    for i in lo(cy)..hi(cy) {
        for j in lo(cx)..hi(cx) {
            let (px, py) = (j as f32 + 0.5, i as f32 + 0.5);
            let d = shape.distance((px - cx) * inv_r, (py - cy) * inv_r) * r;
            let coverage = if d <= -HALF_DIAGONAL {
                1.0
            } else if d >= HALF_DIAGONAL {
                continue;
            } else {
                let mut inside = 0u32;
                for a in 0..SUPERSAMPLING {
                    let v = (i as f32 + (a as f32 + 0.5) * SUB - cy) * inv_r;
                    for b in 0..SUPERSAMPLING {
                        let u = (j as f32 + (b as f32 + 0.5) * SUB - cx) * inv_r;
                        inside += u32::from(shape.contains(u, v));
                    }
                }
                if inside == 0 {
                    continue;
                }
                inside as f32 / SAMPLES
            };
            let at = i * s + j;
            for (c, &target) in rgb.iter().enumerate() {
                let p = &mut image[c * plane + at];
                let old = f32::from(*p);
                *p = (old + (target - old) * coverage).round() as u8;
            }
        }
    }
}
