"""Build the compact Omniglot bundled with fedmeta (src/fedmeta/assets/omniglot_28_1bit.npz).

The 28x28 images of the full Omniglot (Lake et al. 2015, MIT license) thresholded at 128 and
packed to one bit per pixel (np.packbits along the width), with the per-image metadata.
Usage: python tools/bundle_omniglot.py ../shared/data/omniglot.npz
"""

import sys
from pathlib import Path

import numpy as np

KEYS = ("char_id", "alphabet", "character", "drawer", "split")


def main(source: str) -> None:
    arrays = np.load(source, allow_pickle=False)
    bits = np.packbits(arrays["images"] > 127, axis=-1)
    target = Path(__file__).resolve().parents[1] / "src/fedmeta/assets/omniglot_28_1bit.npz"
    np.savez_compressed(target, bits=bits, **{k: arrays[k] for k in KEYS})
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1])
