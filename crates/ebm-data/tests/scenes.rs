//! The generated scenes checked from their pixels, with geometry recomputed here from the
//! documented formulas (not from the crate's helpers): colours, positions, sizes, shapes, two
//! objects, restricted combinations, determinism, and every kind of bad input.

use std::collections::BTreeSet;

use candle_core::Device;
use ebm_core::seeded_rng;
use ebm_data::scenes::{
    render, render_into, render_on, Attribute, Color, Combination, ObjectSpec, SceneConfig,
    SceneGenerator, Shape, Size,
};

/// The documented geometry: the side of the bounding square over the image side.
fn extent(size: Size) -> f64 {
    match size {
        Size::Small => 0.3,
        Size::Large => 0.45,
    }
}

/// The documented position mapping: the centre in pixels, `m + x (S - 2m)` with `m = 0.225 S`.
fn centre(o: &ObjectSpec, s: usize) -> (f64, f64) {
    let s = s as f64;
    let m = 0.225 * s;
    (
        m + o.x as f64 * (s - 2.0 * m),
        m + o.y as f64 * (s - 2.0 * m),
    )
}

fn half_extent(o: &ObjectSpec, s: usize) -> f64 {
    extent(o.size) * s as f64 / 2.0
}

/// The documented outlines, in units of the half-extent around the centre of mass.
fn inside(shape: Shape, u: f64, v: f64) -> bool {
    match shape {
        Shape::Square => u.abs() <= 1.0 && v.abs() <= 1.0,
        Shape::Circle => u * u + v * v <= 1.0,
        // Vertices (0, -1), (1, 0.5), (-1, 0.5).
        Shape::Triangle => v <= 0.5 && 1.5 * u.abs() - v <= 1.0,
        Shape::Diamond => u.abs() + v.abs() <= 1.0,
    }
}

/// Exact areas in pixels.
fn area(o: &ObjectSpec, s: usize) -> f64 {
    let r = half_extent(o, s);
    let unit = match o.shape {
        Shape::Square => 4.0,
        Shape::Circle => std::f64::consts::PI,
        Shape::Triangle => 1.5,
        Shape::Diamond => 2.0,
    };
    unit * r * r
}

/// The coverage of every pixel by `o`, by 16x16 point sampling (finer than the generator's).
fn reference_coverage(o: &ObjectSpec, s: usize) -> Vec<f64> {
    const K: usize = 16;
    let (cx, cy) = centre(o, s);
    let r = half_extent(o, s);
    let mut out = vec![0.0; s * s];
    for i in 0..s {
        for j in 0..s {
            let mut n = 0;
            for a in 0..K {
                for b in 0..K {
                    let px = j as f64 + (b as f64 + 0.5) / K as f64;
                    let py = i as f64 + (a as f64 + 0.5) / K as f64;
                    n += inside(o.shape, (px - cx) / r, (py - cy) / r) as usize;
                }
            }
            out[i * s + j] = n as f64 / (K * K) as f64;
        }
    }
    out
}

/// Per-pixel coverage of an image of one object on black, read from the pixels: the brightest
/// channel over 255.
fn coverage(image: &[u8], s: usize) -> Vec<f64> {
    let p = s * s;
    (0..p)
        .map(|k| image[k].max(image[p + k]).max(image[2 * p + k]) as f64 / 255.0)
        .collect()
}

fn rgb_at(image: &[u8], s: usize, k: usize) -> [u8; 3] {
    [image[k], image[s * s + k], image[2 * s * s + k]]
}

/// Measures of one object from its coverage: its mass (covered pixels), centroid, how much of
/// its width x height box it fills, its horizontal over vertical variance, its vertical skewness.
struct Measures {
    mass: f64,
    centroid: (f64, f64),
    fill: f64,
    aspect: f64,
    skew: f64,
}

fn measure(cov: &[f64], s: usize) -> Measures {
    let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
    let (mut rows, mut cols) = (vec![0.0; s], vec![0.0; s]);
    for i in 0..s {
        for j in 0..s {
            let c = cov[i * s + j];
            m += c;
            mx += c * (j as f64 + 0.5);
            my += c * (i as f64 + 0.5);
            rows[i] += c;
            cols[j] += c;
        }
    }
    // Width and height: the widest row and the tallest column, in covered pixels.
    let width = rows.iter().copied().fold(0.0, f64::max);
    let height = cols.iter().copied().fold(0.0, f64::max);
    let (cx, cy) = (mx / m, my / m);
    let (mut vx, mut vy, mut ty) = (0.0, 0.0, 0.0);
    for i in 0..s {
        for j in 0..s {
            let c = cov[i * s + j];
            let (dx, dy) = (j as f64 + 0.5 - cx, i as f64 + 0.5 - cy);
            vx += c * dx * dx;
            vy += c * dy * dy;
            ty += c * dy * dy * dy;
        }
    }
    let (vx, vy, ty) = (vx / m, vy / m, ty / m);
    Measures {
        mass: m,
        centroid: (cx, cy),
        fill: m / (width * height),
        aspect: vx / vy,
        skew: ty / vy.powf(1.5),
    }
}

#[test]
fn the_same_seed_gives_the_same_scenes_and_other_seeds_differ() {
    for objects in [1, 2] {
        let generator = SceneGenerator::new(SceneConfig::quick().with_objects(objects)).unwrap();
        let a = generator.sample(64, &mut seeded_rng(7)).unwrap();
        let b = generator.sample(64, &mut seeded_rng(7)).unwrap();
        let c = generator.sample(64, &mut seeded_rng(8)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.images(), c.images());
        assert_ne!(a.labels(), c.labels());
        // Labels do not depend on the image size.
        let full = SceneGenerator::new(SceneConfig::full().with_objects(objects)).unwrap();
        let d = full.sample(64, &mut seeded_rng(7)).unwrap();
        assert_eq!(a.labels(), d.labels());
        assert_eq!(d.images().len(), 64 * 3 * 64 * 64);
        // A sampled image is exactly the rendering of its labels.
        for i in [0, 13, 63] {
            let labels = &a.labels()[i].objects;
            assert_eq!(labels.len(), objects);
            assert_eq!(a.image(i).unwrap(), render(labels, 32).unwrap());
        }
    }
}

#[test]
fn pixels_show_the_labelled_colour_position_and_area() {
    for s in [32, 64, 17] {
        let generator = SceneGenerator::new(SceneConfig::new(s)).unwrap();
        let batch = generator.sample(400, &mut seeded_rng(1)).unwrap();
        for (i, labels) in batch.labels().iter().enumerate() {
            let o = labels.objects[0];
            let image = batch.image(i).unwrap();
            let rgb = o.color.rgb();
            // Every pixel is a blend of black and the labelled colour; interior ones are exact.
            let mut exact = 0usize;
            for k in 0..s * s {
                let p = rgb_at(image, s, k);
                let t = p.iter().max().copied().unwrap();
                let blend = rgb.map(|c| if c == 255 { t } else { 0 });
                assert_eq!(p, blend, "{s}x{s} scene {i} ({o}): pixel {k} is {p:?}");
                exact += (p == rgb) as usize;
            }
            let m = measure(&coverage(image, s), s);
            let a = area(&o, s);
            let min_exact = if s >= 32 { 0.4 * a } else { 1.0 };
            assert!(
                exact as f64 >= min_exact,
                "{s}x{s} scene {i} ({o}): only {exact} pixels of {a:.1} are exactly {rgb:?}"
            );
            assert!(
                (m.mass - a).abs() < 0.03 * a + 1.0,
                "{s}x{s} scene {i} ({o}): covers {:.2} pixels, its area is {a:.2}",
                m.mass
            );
            let (cx, cy) = centre(&o, s);
            let err = (m.centroid.0 - cx).hypot(m.centroid.1 - cy);
            assert!(
                err < 0.25,
                "{s}x{s} scene {i} ({o}): centroid {:?} is {err:.3} px from {:?}",
                m.centroid,
                (cx, cy)
            );
        }
    }
}

#[test]
fn rendering_matches_the_documented_geometry() {
    let mut rng = seeded_rng(2);
    for s in [32, 64] {
        for shape in Shape::ALL {
            for size in Size::ALL {
                for _ in 0..10 {
                    use rand::Rng;
                    let o = ObjectSpec::new(shape, Color::Cyan, size, rng.random(), rng.random());
                    let got = coverage(&render(&[o], s).unwrap(), s);
                    let want = reference_coverage(&o, s);
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - w).abs())
                        .fold(0.0, f64::max);
                    // 4x4 against 16x16 sampling: a pixel can differ by a few sixteenths.
                    assert!(worst <= 0.2, "{s}x{s} {o}: a pixel differs by {worst:.3}");
                    // On average an edge pixel is off by less: at most 1/8 where a straight edge
                    // runs along the sampling grid, plus the reference's own error.
                    let edge = want.iter().filter(|&&w| w > 0.0 && w < 1.0).count() as f64;
                    let total: f64 = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).sum();
                    assert!(
                        total < 0.15 * edge,
                        "{s}x{s} {o}: off by {total:.2} over {edge} edge pixels"
                    );
                }
            }
        }
    }
}

#[test]
fn large_objects_cover_more_pixels_than_small_ones() {
    for s in [32, 64] {
        for shape in Shape::ALL {
            for (x, y) in [(0.0, 0.0), (0.3, 0.7), (1.0, 1.0)] {
                let small = ObjectSpec::new(shape, Color::Red, Size::Small, x, y);
                let large = ObjectSpec {
                    size: Size::Large,
                    ..small
                };
                let ms = measure(&coverage(&render(&[small], s).unwrap(), s), s).mass;
                let ml = measure(&coverage(&render(&[large], s).unwrap(), s), s).mass;
                let ratio = ml / ms;
                assert!(
                    (ratio - 2.25).abs() < 0.15,
                    "{s}x{s} {shape} at ({x}, {y}): large/small area {ratio:.3}, expected 2.25"
                );
            }
        }
    }
}

/// Classifies a single object from its pixels alone: whether its mass leans to the bottom and it
/// is wider than tall (a triangle), else by how much of its box it fills.
fn classify(m: &Measures) -> Shape {
    if m.skew < -0.3 && m.aspect > 1.2 {
        Shape::Triangle
    } else if m.fill > 0.9 {
        Shape::Square
    } else if m.fill > 0.7 {
        Shape::Circle
    } else {
        Shape::Diamond
    }
}

#[test]
fn shapes_differ_measurably_even_small_at_32() {
    let mut rng = seeded_rng(3);
    for s in [32, 64] {
        for size in Size::ALL {
            for shape in Shape::ALL {
                let (mut fill, mut aspect, mut skew) = (0.0, 0.0, 0.0);
                let n = 50;
                for _ in 0..n {
                    use rand::Rng;
                    let o = ObjectSpec::new(shape, Color::Green, size, rng.random(), rng.random());
                    let m = measure(&coverage(&render(&[o], s).unwrap(), s), s);
                    assert_eq!(
                        classify(&m),
                        shape,
                        "{s}x{s} {o}: fill {:.3}, aspect {:.3}, skew {:.3}",
                        m.fill,
                        m.aspect,
                        m.skew
                    );
                    (fill, aspect, skew) = (fill + m.fill, aspect + m.aspect, skew + m.skew);
                }
                let (fill, aspect, skew) = (fill / n as f64, aspect / n as f64, skew / n as f64);
                // Box fill: square 1, circle pi/4, triangle and diamond 1/2 (measured a little
                // high at small sizes: the widest pixel row of a pointed shape is narrower than
                // the shape); variance ratio 4/3 for the triangle (wider than tall), else 1.
                let (want_fill, want_aspect) = match shape {
                    Shape::Square => (1.0, 1.0),
                    Shape::Circle => (std::f64::consts::FRAC_PI_4, 1.0),
                    Shape::Triangle => (0.5, 4.0 / 3.0),
                    Shape::Diamond => (0.5, 1.0),
                };
                assert!(
                    (fill - want_fill).abs() < 0.12 && (aspect - want_aspect).abs() < 0.06,
                    "{s}x{s} {size} {shape}: mean fill {fill:.3} (want {want_fill:.3}), \
                     aspect {aspect:.3} (want {want_aspect:.3})"
                );
                // The triangle's vertical profile is a triangular density on [-1, 0.5] with its
                // mode at 0.5: skewness -0.566.
                let want_skew = if shape == Shape::Triangle {
                    -0.566
                } else {
                    0.0
                };
                assert!(
                    (skew - want_skew).abs() < 0.05,
                    "{s}x{s} {size} {shape}: mean skew {skew:.3}"
                );
            }
        }
    }
}

#[test]
fn restricted_combinations_are_respected() {
    let pairs = [
        (Shape::Square, Color::Red),
        (Shape::Circle, Color::Green),
        (Shape::Triangle, Color::Blue),
        (Shape::Diamond, Color::Yellow),
        (Shape::Circle, Color::Magenta),
    ];
    let config = SceneConfig::quick().with_objects(2).with_pairs(&pairs);
    assert_eq!(config.combinations.len(), 10);
    let batch = SceneGenerator::new(config)
        .unwrap()
        .sample(2000, &mut seeded_rng(4))
        .unwrap();
    let mut seen = BTreeSet::new();
    for labels in batch.labels() {
        for o in &labels.objects {
            seen.insert((o.shape, o.color, o.size));
        }
    }
    let allowed: BTreeSet<_> = pairs
        .iter()
        .flat_map(|&(shape, color)| Size::ALL.map(|size| (shape, color, size)))
        .collect();
    assert_eq!(seen, allowed);

    // Holding one pair out: it never appears, every other pair does.
    let held = (Shape::Triangle, Color::Cyan);
    let config = SceneConfig::quick()
        .without_pairs(&[held])
        .filtered(|c| c.size == Size::Small);
    let batch = SceneGenerator::new(config)
        .unwrap()
        .sample(3000, &mut seeded_rng(5))
        .unwrap();
    let seen: BTreeSet<_> = batch
        .labels()
        .iter()
        .map(|l| (l.objects[0].shape, l.objects[0].color, l.objects[0].size))
        .collect();
    assert_eq!(seen.len(), 4 * 6 - 1);
    assert!(!seen.contains(&(held.0, held.1, Size::Small)));
    assert!(seen.iter().all(|&(_, _, size)| size == Size::Small));
}

#[test]
fn two_objects_are_both_visible_and_overlap_little() {
    for s in [32, 64] {
        let config = SceneConfig::new(s).with_objects(2);
        let max_overlap = config.max_overlap as f64;
        let batch = SceneGenerator::new(config)
            .unwrap()
            .sample(300, &mut seeded_rng(6))
            .unwrap();
        for (i, labels) in batch.labels().iter().enumerate() {
            let [a, b] = labels.objects[..] else {
                panic!("scene {i} has {} objects", labels.objects.len())
            };
            let ca = coverage(&render(&[a], s).unwrap(), s);
            let cb = coverage(&render(&[b], s).unwrap(), s);
            let (ma, mb) = (ca.iter().sum::<f64>(), cb.iter().sum::<f64>());
            let shared: f64 = ca.iter().zip(&cb).map(|(x, y)| x * y).sum();
            let slack = 0.03 * ma.min(mb) + 1.0;
            assert!(
                shared <= max_overlap * ma.min(mb) + slack,
                "{s}x{s} scene {i} ({a}; {b}): they share {shared:.1} px of {:.1}",
                ma.min(mb)
            );
            // The first object, drawn under the second, keeps most of its area in view.
            let visible: f64 = ca.iter().zip(&cb).map(|(x, y)| x * (1.0 - y)).sum();
            assert!(
                visible >= (1.0 - max_overlap) * ma - slack,
                "{s}x{s} scene {i}"
            );
            // From the scene's pixels alone: both colours appear when they differ.
            let image = batch.image(i).unwrap();
            if a.color != b.color {
                for o in [a, b] {
                    let n = (0..s * s)
                        .filter(|&k| rgb_at(image, s, k) == o.color.rgb())
                        .count();
                    assert!(
                        n as f64 > 0.3 * area(&o, s),
                        "{s}x{s} scene {i}: {o} shows {n} pixels"
                    );
                }
            }
        }
    }
}

#[test]
fn backgrounds_other_than_black_work() {
    let grey = [128, 128, 128];
    let o = ObjectSpec::new(Shape::Square, Color::Blue, Size::Large, 0.5, 0.5);
    let image = render_on(&[o], 32, grey).unwrap();
    let pixels: Vec<[u8; 3]> = (0..32 * 32).map(|k| rgb_at(&image, 32, k)).collect();
    assert_eq!(pixels[0], grey);
    assert_eq!(pixels[16 * 32 + 16], Color::Blue.rgb());
    let generator =
        SceneGenerator::new(SceneConfig::quick().with_background(grey).with_objects(2)).unwrap();
    let batch = generator.sample(4, &mut seeded_rng(0)).unwrap();
    assert_eq!(batch.images()[0..3], [128, 128, 128]);
    assert_eq!(
        generator.render(&batch.labels()[1].objects).unwrap(),
        batch.image(1).unwrap()
    );
}

#[test]
fn tensors_and_label_views_match_the_bytes() {
    let generator = SceneGenerator::new(SceneConfig::quick().with_objects(2)).unwrap();
    let batch = generator.sample(5, &mut seeded_rng(9)).unwrap();
    assert_eq!(
        (batch.len(), batch.image_size(), batch.image_len()),
        (5, 32, 3072)
    );
    let t = batch.tensor(&Device::Cpu).unwrap();
    assert_eq!(t.dims(), &[5, 3, 32, 32]);
    let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v
        .iter()
        .zip(batch.images())
        .all(|(&f, &b)| f == b as f32 / 255.0));
    assert!(v.iter().all(|f| (0.0..=1.0).contains(f)));

    let colors = batch.class_indices(1, Attribute::Color).unwrap();
    let positions = batch.positions(0).unwrap();
    for (i, labels) in batch.labels().iter().enumerate() {
        assert_eq!(colors[i] as usize, labels.objects[1].color.index());
        assert_eq!(positions[i], [labels.objects[0].x, labels.objects[0].y]);
        assert!(labels.objects.iter().all(|o| (0.0..1.0).contains(&o.x)));
    }
    let set = batch.to_image_set(0, Attribute::Shape).unwrap();
    assert_eq!((set.len(), set.shape(), set.classes()), (5, [3, 32, 32], 4));
    assert_eq!(set.image(3), batch.image(3).unwrap());
    assert_eq!(
        set.labels()[2] as usize,
        batch.labels()[2].objects[0].shape.index()
    );

    let err = batch.positions(2).unwrap_err().to_string();
    assert!(
        err.contains("object 2 is out of range: these scenes hold 2 object(s)"),
        "{err}"
    );
    let err = batch.image(5).unwrap_err().to_string();
    assert!(err.contains("scene 5 is out of range"), "{err}");
}

#[test]
fn names_round_trip_and_unknown_names_list_the_known_ones() {
    for c in Color::ALL {
        assert_eq!(Color::from_name(c.name()).unwrap(), c);
        assert_eq!(c.name().parse::<Color>().unwrap(), c);
        assert_eq!(Color::from_index(c.index()).unwrap(), c);
    }
    for shape in Shape::ALL {
        assert_eq!(Shape::from_name(shape.name()).unwrap(), shape);
    }
    assert_eq!(Size::from_name("Large").unwrap(), Size::Large);
    assert_eq!(Attribute::from_name("color").unwrap(), Attribute::Color);
    assert_eq!(Color::ALL.len(), 6);
    assert_eq!(Shape::ALL.len(), 4);
    assert_eq!(Combination::all().len(), 48);
    let cases = [
        (
            Color::from_name("purple").err(),
            "unknown colour `purple`; known: red, green, blue, yellow, magenta, cyan",
        ),
        (
            Shape::from_name("hexagon").err(),
            "unknown shape `hexagon`; known: square, circle, triangle, diamond",
        ),
        (
            Size::from_name("medium").err(),
            "unknown size `medium`; known: small, large",
        ),
        (
            Color::from_index(6).err(),
            "colour index 6 is out of range (0 to 5)",
        ),
    ];
    for (err, want) in cases {
        assert_eq!(err.unwrap().to_string(), want);
    }
    // Distinct, well separated colours: every pair differs by 255 in some channel.
    for a in Color::ALL {
        for b in Color::ALL.into_iter().filter(|&b| b != a) {
            let d = (0..3)
                .map(|c| a.rgb()[c].abs_diff(b.rgb()[c]))
                .max()
                .unwrap();
            assert_eq!(d, 255, "{a} and {b}");
        }
    }
}

#[test]
fn bad_configs_and_inputs_are_errors_naming_the_field() {
    let cases = [
        (SceneConfig::new(8), "image_size 8 is outside 16 to 1024"),
        (
            SceneConfig::new(5000),
            "image_size 5000 is outside 16 to 1024",
        ),
        (
            SceneConfig::quick().with_objects(0),
            "objects = 0; a scene holds 1 or 2 objects",
        ),
        (SceneConfig::quick().with_objects(3), "objects = 3"),
        (
            SceneConfig::quick().with_pairs(&[]),
            "combinations is empty",
        ),
        (
            SceneConfig::quick().with_combinations(vec![
                Combination {
                    shape: Shape::Circle,
                    color: Color::Red,
                    size: Size::Small,
                },
                Combination {
                    shape: Shape::Circle,
                    color: Color::Red,
                    size: Size::Small,
                },
            ]),
            "combinations lists `small red circle` more than once",
        ),
        (
            SceneConfig::quick().with_background([0, 0, 255]),
            "background [0, 0, 255] is the colour blue",
        ),
        (
            SceneConfig::quick().with_max_overlap(1.5),
            "max_overlap = 1.5 is outside [0, 1]",
        ),
        (
            SceneConfig::quick().with_max_overlap(f32::NAN),
            "max_overlap = NaN",
        ),
    ];
    for (config, want) in cases {
        let err = SceneGenerator::new(config).unwrap_err().to_string();
        assert!(err.contains("scene config") && err.contains(want), "{err}");
    }
    // A background no listed colour uses is fine.
    let ok = SceneConfig::quick()
        .with_background([0, 0, 255])
        .filtered(|c| c.color != Color::Blue);
    assert!(SceneGenerator::new(ok).is_ok());

    let generator = SceneGenerator::new(SceneConfig::quick()).unwrap();
    let err = generator
        .sample(0, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty batch"), "{err}");
    let err = generator
        .sample(usize::MAX / 1000, &mut seeded_rng(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit in memory"), "{err}");

    let good = ObjectSpec::new(Shape::Circle, Color::Red, Size::Small, 0.5, 0.5);
    for (o, want) in [
        (ObjectSpec { x: 1.5, ..good }, "x = 1.5 is outside [0, 1]"),
        (ObjectSpec { y: -0.1, ..good }, "y = -0.1 is outside [0, 1]"),
        (
            ObjectSpec {
                x: f32::NAN,
                ..good
            },
            "x = NaN is outside [0, 1]",
        ),
    ] {
        let err = render(&[good, o], 32).unwrap_err().to_string();
        assert!(
            err.contains("small red circle") && err.contains(want),
            "{err}"
        );
    }
    let err = render(&[good], 15).unwrap_err().to_string();
    assert!(err.contains("image_size 15 is outside 16 to 1024"), "{err}");
    let err = render_into(&[good], 32, [0; 3], &mut [0; 100])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs 3072 bytes, the buffer has 100"),
        "{err}"
    );
    // No objects: just the background.
    assert!(render(&[], 16).unwrap().iter().all(|&b| b == 0));
}
