//! The real Fashion-MNIST files, found by the resolver: counts, class balance, checksums.
//! Runs where the data is on the machine (`EBM_DATA_DIR`, Debian's package or the download
//! cache); with `EBM_REQUIRE_DATA=1` (as CI sets) a missing data set fails the test.

use ebm_data::{catalog, resolve, DataSet, Split};

fn locate(set: DataSet) -> Option<std::path::PathBuf> {
    match resolve::locate(set, None) {
        Ok(dir) => Some(dir),
        Err(e) if std::env::var("EBM_REQUIRE_DATA").is_ok_and(|v| v == "1") => {
            panic!("EBM_REQUIRE_DATA=1 but: {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

#[test]
fn fashion_mnist_has_its_published_shape_and_sums() {
    let Some(dir) = locate(DataSet::FashionMnist) else {
        return;
    };
    catalog::verify(DataSet::FashionMnist, &dir).unwrap();
    let train = DataSet::FashionMnist.load_from(&dir, Split::Train).unwrap();
    let test = DataSet::FashionMnist.load_from(&dir, Split::Test).unwrap();
    assert_eq!(
        (train.len(), test.len(), train.shape()),
        (60_000, 10_000, [1, 28, 28])
    );
    let mut counts = [0usize; 10];
    for &l in train.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts, [6000; 10],
        "Fashion-MNIST's training split is balanced"
    );
}
