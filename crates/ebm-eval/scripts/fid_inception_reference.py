#!/usr/bin/env python3
"""Reference numbers for crates/ebm-eval/tests/inception.rs: pytorch-fid's FID Inception-v3 with
seeded weights, run on a few small synthetic PNGs exactly as pytorch-fid runs it.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be downloaded where the tests run,
so both sides build the same network from a formula instead: every tensor of
`fid_inception_v3().state_dict()` is filled from a counter-based generator,

    u(name, i) = (splitmix64(fnv1a64(name) + i) >> 11) * 2^-53      (uniform in [0, 1))

with per-kind scales that keep activations O(1) and give non-trivial batch-norm statistics:

    *.conv.weight            sqrt(6 / fan_in) * (2u - 1)   fan_in = in_channels * kh * kw
    *.bn.weight              0.8 + 0.4u
    *.bn.bias                0.1 * (2u - 1)
    *.bn.running_mean        0.1 * (2u - 1)
    *.bn.running_var         0.5 + u
    *.bn.num_batches_tracked floor(1000u)  (int64; ignored by both sides)
    fc.weight, fc.bias       (1 / sqrt(2048)) * (2u - 1)

each computed in float64 and rounded to float32 (the Rust test does the same operations in the
same order, so the weights are bit-identical).

Writes into crates/ebm-eval/tests/data/inception/ (all small, all committed):
    grey/*.png, rgb/*.png      the test images (synthetic patterns)
    grey_pool3.npy, rgb_pool3.npy              [3, 2048] pool3 features (get_activations)
    grey_logits.npy, rgb_logits.npy            [3, 1008] torchvision Inception3.forward (fc with bias)
    grey_logits_unbiased.npy, rgb_logits_unbiased.npy   [3, 1008] pool3 @ fc.weight.T (no bias)
    state_dict.txt             `name dtype dim dim ...` for every tensor of fid_inception_v3()
    resize_input.npy, resize_HxW.npy           F.interpolate(bilinear, align_corners=False) cases
    tiny_zip.pth, tiny_legacy.pth              a tiny state dict in both torch.save formats

With --export DIR it also writes the whole seeded network, outside the repository, as
DIR/fid_inception_seeded.safetensors, DIR/fid_inception_seeded.pth (torch.save, zip format) and
DIR/fid_inception_seeded_legacy.pth (torch.save(..., _use_new_zipfile_serialization=False), the
format of pytorch-fid's 2019 weights file); `EBM_FID_INCEPTION_EXPORT=DIR cargo test -p ebm-eval
--test inception` then checks the loaders against those PyTorch-written files.

Usage (from the repository root):
    /work/venv-ref/bin/python crates/ebm-eval/scripts/fid_inception_reference.py [--export DIR]
"""

import argparse
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models.inception as tv_inception
import torchvision.transforms as TF
from PIL import Image

import pytorch_fid.inception as pfi
from pytorch_fid.fid_score import IMAGE_EXTENSIONS, calculate_activation_statistics, calculate_frechet_distance, get_activations

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "inception"

MASK64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for byte in name.encode("utf-8"):
        h ^= byte
        h = (h * 0x100000001B3) & MASK64
    return h


def uniform(name, n):
    """u(name, i) for i in 0..n, float64 in [0, 1)."""
    x = np.uint64(fnv1a64(name)) + np.arange(n, dtype=np.uint64)  # wraps mod 2^64
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def seeded_tensor(name, shape):
    n = int(np.prod(shape, dtype=np.int64))
    u = uniform(name, n)
    if name.endswith(".conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        v = np.sqrt(6.0 / fan_in) * (2.0 * u - 1.0)
    elif name.endswith(".bn.weight"):
        v = 0.8 + 0.4 * u
    elif name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
        v = 0.1 * (2.0 * u - 1.0)
    elif name.endswith(".bn.running_var"):
        v = 0.5 + u
    elif name.endswith(".bn.num_batches_tracked"):
        return torch.from_numpy(np.floor(1000.0 * u).astype(np.int64).reshape(shape))
    elif name in ("fc.weight", "fc.bias"):
        v = (1.0 / np.sqrt(2048.0)) * (2.0 * u - 1.0)
    else:
        raise ValueError(f"no seeding rule for {name}")
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def build_seeded():
    """pytorch-fid's InceptionV3([3]) (pool3) and the fid_inception_v3() inside it, with seeded
    weights. fid_inception_v3() runs unchanged except that its download is skipped: the
    load_state_dict_from_url it calls returns nothing and Inception3.load_state_dict is a no-op
    for that one call; the seeded state dict is then loaded with strict=True, which also checks
    that it has exactly the network's names and shapes."""
    captured = {}
    original = (pfi.fid_inception_v3, pfi.load_state_dict_from_url, tv_inception.Inception3.load_state_dict)

    def capturing_fid_inception_v3():
        net = original[0]()
        captured["net"] = net
        return net

    pfi.fid_inception_v3 = capturing_fid_inception_v3
    pfi.load_state_dict_from_url = lambda url, progress=True: {}
    tv_inception.Inception3.load_state_dict = lambda self, state_dict, strict=True: None
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        pfi.fid_inception_v3, pfi.load_state_dict_from_url, tv_inception.Inception3.load_state_dict = original
    net = captured["net"]
    state = {name: seeded_tensor(name, tuple(t.shape)) for name, t in net.state_dict().items()}
    net.load_state_dict(state, strict=True)
    model.eval()
    net.eval()
    return model, net, state


def write_images():
    """Three grey 28x28 and three colour 32x32 PNGs; the file names sort in byte order
    (`digit_10` < `digit_2` < `digit_a`), as pytorch-fid sorts them."""
    grey = DATA / "grey"
    rgb = DATA / "rgb"
    grey.mkdir(parents=True, exist_ok=True)
    rgb.mkdir(parents=True, exist_ok=True)
    i, j = np.mgrid[0:28, 0:28].astype(np.float64)
    gradient = np.round(255.0 * (i + 2.0 * j) / 81.0)
    checker = np.where(((i // 4) + (j // 4)) % 2 == 0, 30.0, 220.0)
    r = np.hypot(i - 13.5, j - 12.0)
    rings = np.round(127.5 + 127.0 * np.sin(0.9 * r))
    for name, img in [("digit_10.png", gradient), ("digit_2.png", checker), ("digit_a.png", rings)]:
        Image.fromarray(img.astype(np.uint8), mode="L").save(grey / name)

    i, j = np.mgrid[0:32, 0:32].astype(np.float64)
    plain = np.stack([8.0 * i, 8.0 * j, (i * j) % 256.0], axis=-1)
    # RGBA: pytorch-fid's convert('RGB') drops the alpha channel.
    alpha = np.stack(
        [
            127.5 + 127.0 * np.cos(0.3 * i),
            127.5 + 127.0 * np.sin(0.25 * j + 0.2 * i),
            np.where((i + j) % 7 < 3, 250.0, 10.0),
            np.round(255.0 * j / 31.0),
        ],
        axis=-1,
    )
    # Palette (mode P, no transparency): convert('RGB') looks the colours up.
    blobs = np.stack(
        [
            255.0 * (np.hypot(i - 10, j - 20) < 9),
            255.0 * (np.hypot(i - 20, j - 12) < 11),
            128.0 + 100.0 * ((i // 8) % 2),
        ],
        axis=-1,
    )
    Image.fromarray(np.round(plain).astype(np.uint8), mode="RGB").save(rgb / "a_rgb.png")
    Image.fromarray(np.round(alpha).astype(np.uint8), mode="RGBA").save(rgb / "b_rgba.png")
    Image.fromarray(np.round(blobs).astype(np.uint8), mode="RGB").quantize(colors=8).save(rgb / "c_palette.png")
    return grey, rgb


def image_files(folder):
    # pytorch-fid's compute_statistics_of_path
    path = pathlib.Path(folder)
    return sorted([file for ext in IMAGE_EXTENSIONS for file in path.glob("*.{}".format(ext))])


def reference_outputs(model, net, folder):
    files = image_files(folder)
    # pool3 exactly as pytorch-fid computes it (float64 array of float32 values).
    pool3 = get_activations(files, model, batch_size=len(files), dims=2048, device="cpu", num_workers=0)
    # Logits: the same input pipeline (ImagePathDataset, ToTensor, InceptionV3's resize and
    # scaling), then torchvision's Inception3.forward (avgpool, dropout (eval), flatten, fc).
    x = torch.stack([TF.ToTensor()(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        logits = net(x)
        pool3_torch = torch.from_numpy(pool3.astype(np.float32))
        unbiased = F.linear(pool3_torch, net.fc.weight)
        # Consistency of the two paths (pool3 through fc == the full forward).
        assert torch.allclose(F.linear(pool3_torch, net.fc.weight, net.fc.bias), logits, rtol=1e-5, atol=1e-5)
    return files, pool3.astype(np.float32), logits.numpy(), unbiased.numpy()


def activation_report(net, x):
    """Print the largest activation after each block (checks that the seeded scales keep them O(1))."""
    hooks = []
    for name in ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]:
        module = getattr(net, name)
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: print(f"  {name:14s} max {o.abs().max().item():9.4f} mean {o.mean().item():8.4f}")))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()


def inception_score(logits, splits):
    """The Inception Score as the code of Salimans et al. (openai/improved-gan) computes it from
    the softmax of the logits (here in float64)."""
    logits = logits.astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(splits):
        part = p[(i * p.shape[0] // splits):((i + 1) * p.shape[0] // splits), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return np.mean(scores), np.std(scores)


def reference_scores(model, grey, rgb):
    """The numbers of tests/cli_fid_folders.rs: pytorch-fid's FID between the two folders (its
    calculate_activation_statistics and calculate_frechet_distance; with three images per folder
    the covariances are singular and scipy warns, but the value is stable to ~1e-6), and the
    Inception Score of the rgb folder in one split from the unbiased logits."""
    stats = [calculate_activation_statistics(image_files(f), model, batch_size=3, dims=2048, device="cpu", num_workers=0)
             for f in (grey, rgb)]
    fid = calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])
    print(f"FID(grey, rgb) by pytorch-fid: {fid!r}")
    mean, std = inception_score(np.load(DATA / "rgb_logits_unbiased.npy"), 1)
    print(f"IS(rgb, 1 split) from the unbiased logits: {mean!r} +- {std!r}")


def write_resize_cases():
    """F.interpolate(bilinear, align_corners=False) on a [1, 2, 13, 11] input, down and up."""
    x = uniform("resize_input", 2 * 13 * 11).astype(np.float32).reshape(1, 2, 13, 11)
    np.save(DATA / "resize_input.npy", x)
    for h, w in [(5, 7), (31, 29), (4, 20), (13, 11)]:
        y = F.interpolate(torch.from_numpy(x), size=(h, w), mode="bilinear", align_corners=False)
        np.save(DATA / f"resize_{h}x{w}.npy", y.numpy())


def write_tiny_pth():
    """A tiny state dict in both torch.save formats, for the .pth reader; the Rust test
    (`pth_reader_*`) expects exactly these values:
        base   = arange(10, dtype=float32) * 0.25
        w      = [[0, 0.5, 1], [1.5, 2, 2.5]]  float32
        view   = base[2:5]                      float32, a view at offset 2 of a 10-element storage
        t      = w.t()                          float32 [3, 2], column-major strides (1, 3)
        long   = [-3, 0, 5]                     int64
        scalar = 7                              int64, 0-dimensional
        double = [1/3, -2.5]                    float64"""
    base = torch.arange(10, dtype=torch.float32) * 0.25
    w = torch.tensor([[0.0, 0.5, 1.0], [1.5, 2.0, 2.5]], dtype=torch.float32)
    state = {
        "w": w,
        "view": base[2:5],
        "t": w.t(),
        "long": torch.tensor([-3, 0, 5], dtype=torch.int64),
        "scalar": torch.tensor(7, dtype=torch.int64),
        "double": torch.tensor([1.0 / 3.0, -2.5], dtype=torch.float64),
    }
    torch.save(state, DATA / "tiny_zip.pth")
    torch.save(state, DATA / "tiny_legacy.pth", _use_new_zipfile_serialization=False)


def save_safetensors(state, path):
    try:
        from safetensors.torch import save_file
    except ImportError:
        save_file = None
    if save_file is not None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return "safetensors.torch.save_file"
    # The format by hand (https://github.com/huggingface/safetensors#format): an 8-byte
    # little-endian header length, a JSON header, then the raw little-endian data.
    import json
    import struct

    names = {torch.float32: "F32", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        data = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return "hand-written safetensors"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=pathlib.Path, help="also write the seeded network here (safetensors, .pth zip and legacy)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    DATA.mkdir(parents=True, exist_ok=True)

    model, net, state = build_seeded()
    with open(DATA / "state_dict.txt", "w") as f:
        f.write("# fid_inception_v3().state_dict() of pytorch-fid: name dtype dims (written by scripts/fid_inception_reference.py)\n")
        for name, t in net.state_dict().items():
            dtype = str(t.dtype).replace("torch.", "")
            f.write(" ".join([name, dtype] + [str(d) for d in t.shape]) + "\n")

    grey, rgb = write_images()
    for folder, prefix in [(grey, "grey"), (rgb, "rgb")]:
        files, pool3, logits, unbiased = reference_outputs(model, net, folder)
        np.save(DATA / f"{prefix}_pool3.npy", pool3)
        np.save(DATA / f"{prefix}_logits.npy", logits)
        np.save(DATA / f"{prefix}_logits_unbiased.npy", unbiased)
        print(f"{prefix}: {[f.name for f in files]}")
        print(f"  pool3 max {np.abs(pool3).max():.4f} mean {pool3.mean():.4f}; logits max {np.abs(logits).max():.4f}")
    print("activations (rgb images):")
    x = torch.stack([TF.ToTensor()(Image.open(f).convert("RGB")) for f in image_files(rgb)])
    activation_report(net, 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1)

    write_resize_cases()
    write_tiny_pth()
    reference_scores(model, grey, rgb)

    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        how = save_safetensors(state, args.export / "fid_inception_seeded.safetensors")
        torch.save(state, args.export / "fid_inception_seeded.pth")
        torch.save(state, args.export / "fid_inception_seeded_legacy.pth", _use_new_zipfile_serialization=False)
        print(f"exported the seeded network to {args.export} (safetensors by {how})")


if __name__ == "__main__":
    main()
