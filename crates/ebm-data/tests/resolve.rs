//! The resolver's search order and its message when a data set is nowhere. One test per file:
//! it sets environment variables, which other threads must not see change.

use ebm_data::{resolve, DataSet};

#[test]
fn search_order_and_not_found_message() {
    let empty = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::env::set_var("EBM_DATA_DIR", data.path());
    std::env::set_var("EBM_CACHE_DIR", empty.path());

    // MNIST is nowhere: the message names every place and every way to get it.
    let err = resolve::locate(DataSet::Mnist, None)
        .unwrap_err()
        .to_string();
    for needle in [
        "MNIST (mnist) is not on this machine",
        &format!("{}/mnist ($EBM_DATA_DIR)", data.path().display()),
        "/usr/share/datasets/mnist",
        "cargo xtask download mnist",
        "set EBM_DATA_DIR",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    let err = resolve::locate(DataSet::FashionMnist, Some(empty.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing train-images-idx3-ubyte.gz"), "{err}");

    // A complete folder under EBM_DATA_DIR is found first.
    let dir = data.path().join("mnist-10k");
    std::fs::create_dir_all(&dir).unwrap();
    for f in DataSet::Mnist10k.required_files() {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    assert_eq!(resolve::locate(DataSet::Mnist10k, None).unwrap(), dir);
    assert_eq!(
        resolve::download_dir(DataSet::Cifar10),
        empty.path().join("datasets/cifar-10")
    );

    let err = DataSet::from_name("svhn").unwrap_err().to_string();
    assert!(
        err.contains("unknown data set `svhn`; known: fashion-mnist, mnist, mnist-10k, cifar-10"),
        "{err}"
    );
}
