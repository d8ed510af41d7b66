//! Downloads fail fast and helpfully when the address cannot be reached.

use std::time::Instant;

use ebm_data::catalog::RemoteFile;
use ebm_data::DataSet;

#[test]
fn unreachable_address_fails_fast_and_names_the_local_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback refuses connections, online or offline.
    let files = [RemoteFile {
        name: "x.gz",
        url: "http://127.0.0.1:9/x.gz",
        sha256: "00",
    }];
    let start = Instant::now();
    let err =
        xtask::download::download_files(DataSet::FashionMnist, &files, dir.path()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(start.elapsed().as_secs() < 15, "took {:?}", start.elapsed());
    for needle in [
        "could not fetch http://127.0.0.1:9/x.gz",
        "EBM_DATA_DIR",
        "apt-get install dataset-fashion-mnist",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn a_set_without_official_address_says_so() {
    let err =
        xtask::download::download(DataSet::Mnist10k, Some(tempfile::tempdir().unwrap().path()))
            .unwrap_err();
    assert!(
        format!("{err:#}").contains("has no official download address"),
        "{err:#}"
    );
}
