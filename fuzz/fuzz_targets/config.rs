//! Fuzz target `config`: arbitrary bytes as the JSON config beside a checkpoint, read by every
//! loader (`ebm_nn::checkpoint::load_config` for the IGEBM, MLP and classifier,
//! `ebm_latent::checkpoint::load_config`, `ebm_vaebm::checkpoint::load_vae_config`), and as
//! text, one `path.to.field=value` override a line, applied to every experiment's quick recipe
//! (`xtask::reproduce::apply_overrides`). Nothing may panic. A config that loads and is small
//! (every integer at most 64, every list at most 8 long) is built into its model, and run once
//! on one input when it is smaller still (integers at most 16, images at most 32 pixels).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use ebm_core::Energy;
use ebm_nn::{checkpoint, Classifier, Igebm, Mlp};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use xtask::reproduce::{apply_overrides, compose, igebm, latent, vaebm};

fn scratch(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ebm-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
    .join(name)
}

/// The largest integer anywhere in a config, and whether every list is at most 8 long; image
/// sizes are reported separately.
#[derive(Default)]
struct Size {
    max_int: u64,
    max_image: u64,
    long_list: bool,
}

fn measure(v: &Value, key: &str, size: &mut Size) {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                if key == "image_size" {
                    size.max_image = size.max_image.max(i);
                } else {
                    size.max_int = size.max_int.max(i);
                }
            }
        }
        Value::Array(items) => {
            size.long_list |= items.len() > 8;
            items.iter().for_each(|i| measure(i, key, size));
        }
        Value::Object(map) => map.iter().for_each(|(k, v)| measure(v, k, size)),
        _ => {}
    }
}

/// 0: too big to build; 1: build only; 2: build and run.
fn budget<C: serde::Serialize>(config: &C) -> u8 {
    let mut size = Size::default();
    measure(&serde_json::to_value(config).unwrap(), "", &mut size);
    if size.long_list || size.max_int > 64 || size.max_image > 64 {
        0
    } else if size.max_int <= 16 && size.max_image <= 32 {
        2
    } else {
        1
    }
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

struct Recipes {
    igebm: igebm::Recipe,
    compose: compose::Recipe,
    latent: latent::Recipe,
    vaebm: vaebm::Recipe,
}

fn recipes() -> &'static Recipes {
    static R: OnceLock<Recipes> = OnceLock::new();
    R.get_or_init(|| Recipes {
        igebm: igebm::Recipe::quick(),
        compose: compose::Recipe::quick(),
        latent: latent::Recipe::quick(),
        vaebm: vaebm::Recipe::quick(),
    })
}

fuzz_target!(|data: &[u8]| {
    let weights = scratch("model.safetensors");
    std::fs::write(checkpoint::config_path(&weights), data).unwrap();
    let cpu = Device::Cpu;
    let rng = &mut ebm_core::seeded_rng(0);

    if let Ok(c) = checkpoint::load_config::<Igebm>(&weights) {
        let b = budget(&c);
        if b >= 1 {
            if let Ok(model) = Igebm::new(&c, &cpu, rng) {
                if b >= 2 {
                    let x = zeros(&[1, c.in_channels, c.image_size, c.image_size]);
                    match c.num_classes {
                        None => {
                            model.energy(&x).unwrap();
                            model.frozen().unwrap().energy_and_grad(&x).unwrap();
                        }
                        Some(_) => {
                            let labels = Tensor::new(&[0u32], &cpu).unwrap();
                            use ebm_core::LabelledEnergy;
                            model.energy_given(&x, &labels).unwrap();
                        }
                    }
                }
            }
        }
    }
    if let Ok(c) = checkpoint::load_config::<Mlp>(&weights) {
        let b = budget(&c);
        if b >= 1 {
            if let Ok(model) = Mlp::new(&c, &cpu, rng) {
                if b >= 2 {
                    model.energy(&zeros(&[2, c.input_dim])).unwrap();
                }
            }
        }
    }
    if let Ok(c) = checkpoint::load_config::<Classifier>(&weights) {
        let b = budget(&c);
        if b >= 1 {
            if let Ok(model) = Classifier::new(&c, &cpu, rng) {
                if b >= 2 {
                    let x = zeros(&[1, c.channels, c.image_size, c.image_size]);
                    model.logits(&x).unwrap();
                }
            }
        }
    }
    if let Ok(c) = ebm_latent::checkpoint::load_config(&weights) {
        let b = budget(&c);
        if b >= 1 {
            let model = ebm_latent::LatentModel::new(&c, &cpu, rng)
                .expect("a config that load_config accepts builds");
            if b >= 2 {
                let z = zeros(&[1, c.latent_dim()]);
                model.generate(&z).unwrap();
                model.prior_energy(&z).unwrap();
            }
        }
    }
    if let Ok(c) = ebm_vaebm::checkpoint::load_vae_config(&weights) {
        let b = budget(&c);
        if b >= 1 {
            let vae = ebm_vaebm::Vae::new(&c, &cpu, rng)
                .expect("a config that load_vae_config accepts builds");
            if b >= 2 {
                vae.reconstruct(&zeros(&[[1].as_slice(), &c.sample_shape()].concat()))
                    .unwrap();
            }
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let overrides: Vec<String> = text.lines().map(String::from).collect();
        let r = recipes();
        let _ = apply_overrides(&r.igebm, &overrides);
        let _ = apply_overrides(&r.compose, &overrides);
        let _ = apply_overrides(&r.latent, &overrides);
        let _ = apply_overrides(&r.vaebm, &overrides);
    }
});
