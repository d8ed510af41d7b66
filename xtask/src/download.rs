//! `cargo xtask download <data set>`: fetches the official files into the download cache,
//! checks their SHA-256 and unpacks archives. Offline, it fails within seconds and says how to
//! use a local copy instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use ebm_data::catalog::RemoteFile;
use ebm_data::{catalog, resolve, DataSet};

/// How to get a data set without the network, for error messages.
fn offline_help(set: DataSet) -> String {
    let mut s = String::from("To work offline, use a local copy instead:\n");
    s.push_str(&format!(
        "  - set EBM_DATA_DIR to a folder whose {}/ holds {}\n",
        set.name(),
        set.required_files().join(", ")
    ));
    if let Some(pkg) = set.debian_package() {
        s.push_str(&format!(
            "  - or install Debian's package: sudo apt-get install {pkg} (files land in /usr/share/datasets/{})\n",
            set.name()
        ));
    }
    s
}

/// Downloads `set` into `dir` (default: the download cache) and returns the folder.
pub fn download(set: DataSet, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| resolve::download_dir(set));
    if set.remote_files().is_empty() {
        bail!(
            "{} has no official download address; it is provided locally (see datasets/README.md).\n{}",
            set.title(),
            offline_help(set)
        );
    }
    download_files(set, set.remote_files(), &dir)?;
    catalog::verify(set, &dir)?;
    Ok(dir)
}

/// Fetches `files` into `dir`, checking each SHA-256 and unpacking `.tar.gz` archives; errors
/// say how to use a local copy of `set` instead.
pub fn download_files(set: DataSet, files: &[RemoteFile], dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    for file in files {
        let target = dir.join(file.name);
        if target.is_file() && catalog::sha256_file(&target)? == file.sha256 {
            eprintln!("{}: already present, SHA-256 verified", target.display());
            continue;
        }
        eprintln!("fetching {}", file.url);
        let response = agent.get(file.url).call().map_err(|e| {
            anyhow::anyhow!(
                "could not fetch {}: {e}\nThis machine may be offline or the address unreachable.\n{}",
                file.url,
                offline_help(set)
            )
        })?;
        let partial = target.with_extension("part");
        let mut out = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut reader = response.into_reader().take(2 << 30);
        std::io::copy(&mut reader, &mut out)
            .with_context(|| format!("downloading {}", file.url))?;
        let actual = catalog::sha256_file(&partial)?;
        if actual != file.sha256 {
            std::fs::remove_file(&partial).ok();
            bail!(
                "{}: SHA-256 {actual} is not the published {}; the download was removed",
                file.url,
                file.sha256
            );
        }
        std::fs::rename(&partial, &target)?;
        eprintln!("{}: SHA-256 verified", target.display());
        if file.name.ends_with(".tar.gz") {
            unpack(&target, dir)?;
        }
    }
    Ok(())
}

fn unpack(archive: &Path, into: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(archive)?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(into)
        .with_context(|| format!("unpacking {}", archive.display()))?;
    eprintln!("unpacked {} into {}", archive.display(), into.display());
    Ok(())
}
