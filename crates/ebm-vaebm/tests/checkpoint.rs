//! Checkpoints: round trips of a VAE and a VAEBM, a VAE loaded for another config, tampered
//! files, frozen copies, and an energy trained on another image size than the VAE.

mod common;

use candle_core::{DType, Device};
use ebm_core::seeded_rng;
use ebm_nn::{checkpoint as nn_checkpoint, Igebm, IgebmConfig};
use ebm_vaebm::checkpoint::{self, EBM_FILE, VAE_FILE};
use ebm_vaebm::{Hierarchy, VaeConfig, Vaebm};

use common::{squares, tiny_ebm, tiny_vae, values};

#[test]
fn vae_round_trip_and_config_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vae.safetensors");
    let vae = tiny_vae(Hierarchy::TopDown { groups: 2 }, DType::F32, 1);
    checkpoint::save_vae(&vae, &path).unwrap();
    assert!(checkpoint::config_path(&path).is_file());
    let loaded = checkpoint::load_vae(&path, Some(vae.config()), &Device::Cpu).unwrap();
    let x = squares(3, &mut seeded_rng(0));
    assert_eq!(
        values(&vae.reconstruct(&x).unwrap()),
        values(&loaded.reconstruct(&x).unwrap())
    );
    assert_eq!(checkpoint::load_vae_config(&path).unwrap(), *vae.config());

    // Asked for another config: the error names the file and the fields.
    let other = VaeConfig {
        latent_dim: 3,
        hidden: 6,
        ..vae.config().clone()
    };
    let err = checkpoint::load_vae(&path, Some(&other), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vae.safetensors"), "{err}");
    assert!(err.contains("hidden: saved 5, expected 6"), "{err}");
    assert!(err.contains("latent_dim: saved 2, expected 3"), "{err}");

    // A JSON whose config does not fit the weights: the tensor is named.
    let json = std::fs::read_to_string(checkpoint::config_path(&path)).unwrap();
    std::fs::write(
        checkpoint::config_path(&path),
        json.replace("\"hidden\": 5", "\"hidden\": 7"),
    )
    .unwrap();
    let err = checkpoint::load_vae(&path, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has shape") && err.contains("encoder.dense"),
        "{err}"
    );
    // An unknown key.
    std::fs::write(
        checkpoint::config_path(&path),
        json.replace("\"hidden\": 5", "\"hidden\": 5, \"depth\": 3"),
    )
    .unwrap();
    let err = checkpoint::load_vae(&path, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `depth`"), "{err}");
    // Another model kind in the JSON.
    let ebm_path = dir.path().join("e.safetensors");
    nn_checkpoint::save(&tiny_ebm(DType::F32, 0), &ebm_path).unwrap();
    let err = checkpoint::load_vae(&ebm_path, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds a igebm model, not vaebm-vae"), "{err}");
    // No file at all.
    let err = checkpoint::load_vae(&dir.path().join("none.safetensors"), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("none.json"), "{err}");
    // A frozen copy has nothing to save.
    let err = checkpoint::save_vae(&vae.frozen().unwrap(), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("frozen copy"), "{err}");
}

#[test]
fn vaebm_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 2);
    let model = Vaebm::new(vae.clone(), tiny_ebm(DType::F32, 3)).unwrap();
    checkpoint::save_vaebm(&model, dir.path()).unwrap();
    let loaded = checkpoint::load_vaebm(dir.path(), Some(vae.config()), &Device::Cpu).unwrap();
    let x = squares(4, &mut seeded_rng(1));
    assert_eq!(
        model.energies(&x, 3).unwrap(),
        loaded.energies(&x, 3).unwrap()
    );
    let a = model.scores(&x, 2, 4, &mut seeded_rng(5)).unwrap();
    let b = loaded.scores(&x, 2, 4, &mut seeded_rng(5)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.vaebm().len(), 4);
    assert!(a
        .vaebm()
        .iter()
        .zip(&a.elbo)
        .zip(&a.energy)
        .all(|((s, l), e)| (s - (l - e)).abs() < 1e-9));
}

#[test]
fn an_energy_for_another_image_size_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let vae = tiny_vae(Hierarchy::Single, DType::F32, 2);
    checkpoint::save_vae(&vae, &dir.path().join(VAE_FILE)).unwrap();
    let mut cfg = IgebmConfig::small(1, 16, 4);
    cfg.spectral_norm = false;
    let big = Igebm::new(&cfg, &Device::Cpu, &mut seeded_rng(0)).unwrap();
    nn_checkpoint::save(&big, &dir.path().join(EBM_FILE)).unwrap();
    let err = checkpoint::load_vaebm(dir.path(), None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ebm.safetensors"), "{err}");
    assert!(
        err.contains("the EBM takes images of shape [1, 16, 16] (image_size 16), the VAE makes [1, 8, 8] (image_size 8)"),
        "{err}"
    );
}
