//! Where a data set lives on this machine: an explicit path, then `$EBM_DATA_DIR/<name>`, then
//! `/usr/share/datasets/<name>` (Debian's packages), then the download cache.

use std::path::{Path, PathBuf};

use crate::{DataSet, Error, Result};

/// The folder `cargo xtask download` writes to: `$EBM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ebm-rs`, else `~/.cache/ebm-rs`; data sets go in its `datasets/`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EBM_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ebm-rs");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("ebm-rs")
}

/// The folder a download of `set` goes to.
pub fn download_dir(set: DataSet) -> PathBuf {
    cache_dir().join("datasets").join(set.name())
}

/// The places searched for `set`, in order, each with a short description.
pub fn candidates(set: DataSet) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::var_os("EBM_DATA_DIR").filter(|d| !d.is_empty()) {
        out.push((
            "$EBM_DATA_DIR".to_string(),
            PathBuf::from(dir).join(set.name()),
        ));
    }
    out.push((
        "Debian's datasets folder".to_string(),
        Path::new("/usr/share/datasets").join(set.name()),
    ));
    out.push(("the download cache".to_string(), download_dir(set)));
    out
}

fn missing_files(set: DataSet, dir: &Path) -> Vec<&'static str> {
    set.required_files()
        .iter()
        .copied()
        .filter(|f| !dir.join(f).is_file())
        .collect()
}

/// The folder holding `set`. An explicit folder must hold every file (the error names the
/// missing ones); otherwise the first complete candidate wins, and when there is none the
/// error lists where it looked and how to get the data.
pub fn locate(set: DataSet, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let missing = missing_files(set, dir);
        if missing.is_empty() {
            return Ok(dir.to_path_buf());
        }
        return Err(Error::NotFound(format!(
            "{} is not complete in {}: missing {}",
            set.title(),
            dir.display(),
            missing.join(", ")
        )));
    }
    let candidates = candidates(set);
    if let Some((_, dir)) = candidates
        .iter()
        .find(|(_, d)| missing_files(set, d).is_empty())
    {
        return Ok(dir.clone());
    }
    let mut msg = format!(
        "{} ({}) is not on this machine. Looked in:\n",
        set.title(),
        set.name()
    );
    if std::env::var_os("EBM_DATA_DIR")
        .filter(|d| !d.is_empty())
        .is_none()
    {
        msg.push_str("  - $EBM_DATA_DIR/<name> (EBM_DATA_DIR is not set)\n");
    }
    for (what, dir) in &candidates {
        msg.push_str(&format!("  - {} ({what})\n", dir.display()));
    }
    msg.push_str("Get it with one of:\n");
    if !set.remote_files().is_empty() {
        msg.push_str(&format!(
            "  - cargo xtask download {}   (fetches {} and checks SHA-256; needs internet)\n",
            set.name(),
            set.homepage()
        ));
    }
    if let Some(pkg) = set.debian_package() {
        msg.push_str(&format!(
            "  - sudo apt-get install {pkg}   (Debian and Ubuntu)\n"
        ));
    }
    msg.push_str(&format!(
        "  - set EBM_DATA_DIR to a folder whose {}/ holds {}",
        set.name(),
        set.required_files().join(", ")
    ));
    Err(Error::NotFound(msg))
}
