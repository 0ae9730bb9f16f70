"""``python -m eni_guest_lab.realvm build [RECIPE|fresh ...]``: build or find the cached images
(every recipe's, and the fresh root of tests/realvm/test_fresh_machine.py, by default)."""

from __future__ import annotations

import sys
import time

from .fresh import fresh_root
from .image import RECIPES, base_image


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "build":
        print(f"usage: python -m eni_guest_lab.realvm build [{'|'.join(RECIPES)}|fresh...]")
        return 2
    for name in argv[1:] or [*RECIPES, "fresh"]:
        t0 = time.monotonic()
        if name == "fresh":
            print(f"fresh root: {fresh_root()} ({time.monotonic() - t0:.1f} s)")
            continue
        img = base_image(RECIPES[name])
        how = "built" if img.built_in else "found in the cache"
        print(f"{name}: {img.dir} ({how}, {time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
