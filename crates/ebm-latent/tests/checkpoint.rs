//! Checkpoints: a saved model loads back identical; a latent size that differs from the config,
//! another prior kind, unknown keys, another model kind, extra or missing tensors and a missing
//! file are errors that say so.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ebm_core::{noise, seeded_rng};
use ebm_latent::{checkpoint, GeneratorConfig, LatentConfig, LatentModel};

fn model(ebm: bool, latent_dim: usize) -> LatentModel {
    let g = GeneratorConfig::mnist_like(latent_dim, 2);
    let mut c = if ebm {
        LatentConfig::ebm_prior(g)
    } else {
        LatentConfig::gaussian_prior(g)
    };
    if let Some(p) = &mut c.prior {
        p.hidden = vec![8];
    }
    LatentModel::new(&c, &Device::Cpu, &mut seeded_rng(latent_dim as u64)).unwrap()
}

fn outputs(m: &LatentModel, z: &Tensor) -> (Vec<f32>, Vec<f32>) {
    (
        m.generate(z)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap(),
        m.prior_energy(z).unwrap().to_vec1().unwrap(),
    )
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let cfg = checkpoint::config_path(path);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&cfg, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn saved_models_load_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    for ebm in [true, false] {
        let m = model(ebm, 4);
        let path = dir.path().join(format!("m{ebm}.safetensors"));
        checkpoint::save(&m, &path).unwrap();
        let back = checkpoint::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.config(), m.config());
        let z = noise::normal(&mut seeded_rng(1), (3, 4), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(outputs(&back, &z), outputs(&m, &z));
        // Loading into a fresh model of the same config gives the same weights too.
        let mut other = LatentModel::new(m.config(), &Device::Cpu, &mut seeded_rng(99)).unwrap();
        checkpoint::load_weights_into(&mut other, &path).unwrap();
        assert_eq!(outputs(&other, &z), outputs(&m, &z));
    }
    // A frozen copy has no parameters to save.
    let err = checkpoint::save(
        &model(true, 4).frozen().unwrap(),
        &dir.path().join("f.safetensors"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("frozen copy"), "{err}");
}

#[test]
fn a_latent_size_that_differs_from_the_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&model(true, 4), &path).unwrap();
    // Into a model of another latent size.
    let mut six = model(true, 6);
    let err = checkpoint::load_weights_into(&mut six, &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has latent size 4, the model 6"), "{err}");
    // A config edited to another latent size than the weights.
    edit_json(&path, |v| {
        v["config"]["generator"]["latent_dim"] = 6.into();
        v["config"]["prior"]["input_dim"] = 6.into();
    });
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its generator takes a latent of size 4, the config says 6"),
        "{err}"
    );
    // A config whose prior and generator disagree.
    edit_json(&path, |v| v["config"]["prior"]["input_dim"] = 5.into());
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the prior takes a latent of size 5, the generator 6"),
        "{err}"
    );
}

#[test]
fn malformed_checkpoints_are_errors_that_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&model(true, 4), &path).unwrap();

    let mut gaussian = model(false, 4);
    let err = checkpoint::load_weights_into(&mut gaussian, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds a model with an EBM prior, the model has the Gaussian prior"),
        "{err}"
    );

    edit_json(&path, |v| v["config"]["extra"] = 1.into());
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `extra`"), "{err}");

    checkpoint::save(&model(true, 4), &path).unwrap();
    edit_json(&path, |v| v["model"] = "igebm".into());
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds a igebm model, not latent-ebm"), "{err}");

    // Weights of a wider generator under this config.
    let wide = {
        let mut c = model(true, 4).config().clone();
        c.generator.width = 3;
        LatentModel::new(&c, &Device::Cpu, &mut seeded_rng(0)).unwrap()
    };
    checkpoint::save(&wide, &path).unwrap();
    edit_json(&path, |v| v["config"]["generator"]["width"] = 2.into());
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tensor generator.layers.0.weight has shape [4, 6, 7, 7], the model expects [4, 4, 7, 7]"), "{err}");

    // Gaussian-prior weights under an EBM-prior config: the prior's tensors are missing.
    checkpoint::save(&model(false, 4), &path).unwrap();
    edit_json(&path, |v| {
        v["config"]["prior"] = serde_json::json!({
            "input_dim": 4, "hidden": [8], "activation": "leaky_relu"
        })
    });
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor prior.layers.0.weight is missing"),
        "{err}"
    );

    // EBM weights under a Gaussian config: tensors that do not belong.
    checkpoint::save(&model(true, 4), &path).unwrap();
    edit_json(&path, |v| v["config"]["prior"] = serde_json::Value::Null);
    let err = checkpoint::load(&path, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not belong to this model's architecture"),
        "{err}"
    );

    let missing = dir.path().join("nothing.safetensors");
    let err = checkpoint::load(&missing, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing.json"), "{err}");
}
