"""A user's npz file, read without pickle and checked array by array, so that a bad file fails
with one line naming it (`UserError("data error: PATH: ...")`), never deep inside training."""

import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedmeta.errors import UserError

IMAGE_SIDE = 28  # Omniglot and FEMNIST images are uint8 [N, 28, 28], ink 255 on 0


def data_error(path: str | Path, problem: str) -> UserError:
    return UserError(f"data error: {path}: {problem}")


def described(array: np.ndarray) -> str:
    return f"{array.dtype} {list(array.shape)}"


def load_npz(path: str | Path, required: Sequence[str],
             optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The arrays `required` (all of them) and `optional` (those present) of the npz `path`,
    each read to its end so that zipfile checks its CRC-32 (numpy's own npz reader stops
    short of it, and a corrupt compressed array would load as wrong values)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in required if key not in members]
            if missing:
                raise data_error(path, f"missing arrays {', '.join(missing)}")
            arrays = {}
            for key in (*required, *optional):
                if key in members:
                    with archive.open(members[key]) as member:
                        arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
                        if member.read(1):
                            raise data_error(path, f"{key} holds more bytes than its array")
            return arrays
    except FileNotFoundError:
        raise UserError(f"data error: no such file {path}") from None
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error,
            SyntaxError, tokenize.TokenError) as error:  # numpy parses a .npy header as Python
        raise data_error(path, f"not a readable .npz ({type(error).__name__}: {error})") from None
    except MemoryError:
        raise data_error(path, "an array too large for memory (a corrupt header?)") from None


def check_images(path: str | Path, images: np.ndarray) -> None:
    """uint8 [N, 28, 28] with N > 0."""
    if (images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE)
            or not len(images)):
        raise data_error(path, f"images must be uint8 [N, {IMAGE_SIDE}, {IMAGE_SIDE}] with "
                               f"N > 0, got {described(images)}")


def check_column(path: str | Path, name: str, array: np.ndarray, n: int, kinds: str) -> None:
    """One value per example: shape [n], dtype of a numpy kind in `kinds` ("i" signed, "u"
    unsigned integers, "f" floats, "U" strings)."""
    if array.shape != (n,) or array.dtype.kind not in kinds:
        expected = {"i": "integer", "u": "integer", "f": "float", "U": "string"}
        types = " or ".join(sorted({expected[kind] for kind in kinds}))
        raise data_error(path, f"{name} must be {n} {types} values (one per example), "
                               f"got {described(array)}")


def check_range(path: str | Path, name: str, values: np.ndarray, low: int, high: int) -> None:
    """Every value in [low, high)."""
    if values.size and (values.min() < low or values.max() >= high):
        raise data_error(path, f"{name} must lie in [{low}, {high}), "
                               f"got values in [{values.min()}, {values.max()}]")
