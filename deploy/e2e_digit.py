"""Write one real MNIST test digit as a PNG and print its true label (for deploy/ci-docker-e2e.sh).

Reads the dataset cache that training fills (mnist.npz: x_test uint8 (10000, 28, 28), y_test).
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    cache, index, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    with np.load(cache / "mnist.npz") as data:
        pixels, label = data["x_test"][index], int(data["y_test"][index])  # (28, 28) uint8
    Image.fromarray(pixels, mode="L").save(out)
    print(label)


if __name__ == "__main__":
    main()
