"""Inside the image (for deploy/ci-docker-e2e.sh): print each installed package whose release is not
the one constraints.txt pins, a line `release NAME INSTALLED, constraints.txt: PINNED` each.
Standard library only: the image has neither pytest nor packaging.

usage: python - "$(cat constraints.txt)" < image_releases.py
"""

import sys
from importlib.metadata import PackageNotFoundError, version


def main() -> None:
    for line in sys.argv[1].splitlines():
        if "==" not in line or line.startswith("#"):
            continue
        name, pinned = line.strip().split("==")
        try:
            installed = version(name).split("+")[0]  # torch's local label, +cpu, aside
        except PackageNotFoundError:
            continue  # a dev tool, or one for another platform
        if installed != pinned:
            print(f"release {name} {installed}, constraints.txt: {pinned}")


if __name__ == "__main__":
    main()
