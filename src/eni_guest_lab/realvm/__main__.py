"""``python -m eni_guest_lab.realvm build [RECIPE...]``: build or find the cached images."""

from __future__ import annotations

import sys
import time

from .image import RECIPES, base_image


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print(f"usage: python -m eni_guest_lab.realvm build [{'|'.join(RECIPES)}...]")
        return 2
    for name in argv[1:] or list(RECIPES):
        t0 = time.monotonic()
        img = base_image(RECIPES[name])
        how = "built" if img.built_in else "found in the cache"
        print(f"{name}: {img.dir} ({how}, {time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
