"""Bad input, fuzzed: malformed, mistyped or out-of-range configs and corrupt data, episode and
checkpoint files end `fedmeta` with status 2 and one line `fedmeta: error: ...`, no traceback,
and nothing written: an existing run directory is left byte for byte, a new one is never
created, and no pickle is ever unpickled. Every input generated here is invalid by
construction, so no run starts (the uncorrupted files are shown to train)."""

import datetime
import hashlib
import io
import itertools
import json
import math
import pickle
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, get_args, get_origin

import numpy as np
import pytest
import tomli_w
import torch
from annotated_types import Ge, Gt, Le, Lt, MinLen
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from pydantic import BaseModel, ValidationError
from safetensors.torch import load, save

from fedmeta.build import build_experiment
from fedmeta.cli import main
from fedmeta.config import Config, tomllib
from fedmeta.data.client_files import load_client
from fedmeta.engine.rundir import RunDirectory
from fedmeta.errors import UserError
from fedmeta.evaluation import load_episodes

pytestmark = pytest.mark.filterwarnings("error")  # a warning would be a second line on stderr
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FILES = itertools.count()


class Evil:
    """Unpickling this creates a file: proof that a loader unpickled."""

    marker: Path

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    """A scratch directory holding a real run directory, `existing`."""
    root = tmp_path_factory.mktemp("bad_input")
    run = RunDirectory.create(Config(), root / "existing")
    run.log({"round": 1, "loss": 1.0})
    run.checkpoint({"w": torch.ones(2)}, {}, 1)
    run.write_summary({"rounds": 1})
    Evil.marker = root / "unpickled"
    return root


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "directory" for p in sorted(directory.rglob("*"))}


def one_line(capsys, code: int) -> str:
    """The error line of a command that must have failed on bad input."""
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.startswith("fedmeta: error: ") and captured.err.count("\n") == 1
    assert captured.err.endswith("\n") and "Traceback" not in captured.err and not captured.out
    return captured.err


def refused(capsys, space: Path, *argv: str) -> str:
    """`fedmeta ARGV` into the existing run directory and into a new one: status 2 and one line
    each time, nothing written, nothing unpickled. The line."""
    existing, new = space / "existing", fresh(space, "")
    before = snapshot(existing)
    lines = [one_line(capsys, main([*argv, "--out", str(out), "--quiet"]))
             for out in (existing, new)]
    assert snapshot(existing) == before and not new.exists()
    assert not Evil.marker.exists()
    return lines[1]


def fresh(space: Path, suffix: str = ".npz") -> Path:
    return space / f"input_{next(FILES)}{suffix}"


# --- configs -------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """`value` as an inline TOML value."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def toml_text(doc: dict[str, Any]) -> str:
    """A config document: its scalars, then its tables as sections."""
    scalars = [f"{toml_value(k)} = {toml_value(v)}\n" for k, v in doc.items()
               if not isinstance(v, dict)]
    tables = [f"[{toml_value(k)}]\n" + "".join(f"{toml_value(key)} = {toml_value(value)}\n"
                                              for key, value in v.items())
              for k, v in doc.items() if isinstance(v, dict)]
    return "".join(scalars) + "".join(tables)


def config_file(space: Path, doc: dict[str, Any] | bytes) -> str:
    """A new config file holding `doc` (a document, or raw bytes)."""
    path = fresh(space, ".toml")
    path.write_bytes(doc if isinstance(doc, bytes) else toml_text(doc).encode())
    return str(path)


def base_doc(space: Path) -> dict[str, Any]:
    """A valid config whose data file does not exist: only a config error can fail before the
    data, so the key-naming assertions below check that validation caught the value."""
    return {"data": {"path": str(space / "absent.npz")}}


def is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


SECTIONS = {name: field.annotation for name, field in Config.model_fields.items()
            if is_section(field.annotation)}
LEAVES = [((name,), field) for name, field in Config.model_fields.items()
          if not is_section(field.annotation)] + [
    ((section, name), field) for section, model in SECTIONS.items()
    for name, field in model.model_fields.items()]
SCALARS = {int: st.integers(-10**30, 10**30), float: st.floats(), bool: st.booleans(),
           str: st.text(max_size=12), list: st.lists(st.integers(), max_size=3),
           dict: st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
           datetime.date: st.dates()}


def value_type(field) -> Any:
    """The field's type without None (no TOML value is None)."""
    annotation = field.annotation
    if isinstance(annotation, UnionType):
        (annotation,) = (a for a in get_args(annotation) if a is not NoneType)
    return annotation


def wrong_types(field) -> st.SearchStrategy:
    """TOML values of a type the field does not take (strict: no 1 for true, no "1" for 1)."""
    base = value_type(field)
    if get_origin(base) is list:  # of strings: not [] (which it takes), a list of integers
        return st.one_of(*(values for kind, values in SCALARS.items() if kind is not list),
                         st.lists(st.integers(), min_size=1, max_size=3))
    accepted = ({type(c) for c in get_args(base)} if get_origin(base) is Literal
                else {float, int} if base is float else {base})
    return st.one_of(*(values for kind, values in SCALARS.items() if kind not in accepted))


def out_of_range(field) -> st.SearchStrategy:
    """Values of the field's type outside its bounds: below the least, above the greatest
    (10**30 included), nan and inf, "" for a required string, unknown enum values."""
    base = value_type(field)
    if get_origin(base) is Literal:
        choices = get_args(base)
        pool = st.text(max_size=12) if isinstance(choices[0], str) else SCALARS[int]
        return pool.filter(lambda value: value not in choices)
    if base is bool:
        return st.nothing()
    bounds = {type(m): m for m in field.metadata}
    if base is str:
        patterns = [m.pattern for m in field.metadata if getattr(m, "pattern", None)]
        texts = st.text(min_size=1, max_size=12).filter(
            lambda s: not all(re.fullmatch(p, s) for p in patterns)) if patterns else st.nothing()
        return (st.just("") if MinLen in bounds else st.nothing()) | texts
    if base is int:
        low = bounds[Ge].ge if Ge in bounds else bounds[Gt].gt + 1
        high = bounds[Le].le if Le in bounds else bounds[Lt].lt - 1
        return (st.integers(max_value=low - 1) | st.integers(min_value=high + 1)
                | st.sampled_from([-10**30, 10**30]))
    options = [st.sampled_from([math.nan, math.inf, -math.inf])]
    if Ge in bounds:
        options.append(st.floats(max_value=bounds[Ge].ge, exclude_max=True))
    if Gt in bounds:
        options.append(st.floats(max_value=bounds[Gt].gt))
    if Le in bounds:
        options.append(st.floats(min_value=bounds[Le].le, exclude_min=True))
    if Lt in bounds:
        options.append(st.floats(min_value=bounds[Lt].lt))
    return st.one_of(*options)


def test_every_count_has_an_upper_bound():
    """No absurd size (10**30 clients, a 10**12-wide layer) reaches an allocation."""
    for path, field in LEAVES:
        if value_type(field) is int:
            assert {Le, Lt} & {type(m) for m in field.metadata}, path


@FUZZ
@given(data=st.data(), leaf=st.sampled_from(LEAVES), by_set=st.booleans())
def test_a_bad_value_for_a_known_key(capsys, space, data, leaf, by_set):
    path, field = leaf
    value = data.draw(wrong_types(field) | out_of_range(field))
    key = ".".join(path)
    doc = base_doc(space)
    if by_set:
        argv = ["run", config_file(space, doc), f"--set={key}={toml_value(value)}"]
    else:
        if len(path) == 1:
            doc[key] = value
        else:
            doc.setdefault(path[0], {})[path[1]] = value
        argv = ["run", config_file(space, doc)]
    # a list's wrong element is named by its index: learner.inner_params.0
    assert re.match(rf"fedmeta: error: config error: {re.escape(key)}(\.\d+)?: ",
                    refused(capsys, space, *argv))


@FUZZ
@given(section=st.sampled_from(sorted(SECTIONS)), value=st.one_of(
    *(values for kind, values in SCALARS.items() if kind is not dict)), by_set=st.booleans())
def test_a_section_given_as_a_scalar(capsys, space, section, value, by_set):
    doc = base_doc(space)
    if by_set:
        argv = ["run", config_file(space, doc), f"--set={section}={toml_value(value)}"]
    else:
        argv = ["run", config_file(space, {**doc, section: value})]
    assert "config error:" in refused(capsys, space, *argv)


KNOWN = {name for name in Config.model_fields} | {
    name for model in SECTIONS.values() for name in model.model_fields}


@FUZZ
@given(section=st.none() | st.sampled_from(sorted(SECTIONS)),
       key=st.text(min_size=1, max_size=12).filter(lambda k: k not in KNOWN),
       value=st.one_of(*SCALARS.values()), by_set=st.booleans())
def test_an_unknown_key_or_section(capsys, space, section, key, value, by_set):
    doc = base_doc(space)
    if by_set:
        assume("." not in key and "=" not in key and key.strip() == key)
        dotted = key if section is None else f"{section}.{key}"
        argv = ["run", config_file(space, doc), f"--set={dotted}={toml_value(value)}"]
    else:
        (doc if section is None else doc.setdefault(section, {}))[key] = value
        argv = ["run", config_file(space, doc)]
    assert "config error: unknown key" in refused(capsys, space, *argv)


def valid_config(raw: bytes) -> bool:
    """Whether `raw` reads (as text, newlines translated) as a valid config."""
    try:
        Config.model_validate(tomllib.loads(io.TextIOWrapper(io.BytesIO(raw), "utf-8").read()))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError, ValidationError):
        return False
    return True


CONFIG_TEXT = tomli_w.dumps(Config().model_dump(exclude_none=True))


@st.composite
def mangled(draw) -> bytes:
    """The default config's text with a few spans replaced by random text."""
    text = CONFIG_TEXT
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 20)))
        text = text[:start] + draw(st.text(max_size=6)) + text[end:]
    return text.encode()


def nested(depth: int, opener: str, closed: bool) -> bytes:
    closer = {"[": "]", "{a = ": "}"}[opener]
    return f"x = {opener * depth}1{closer * depth if closed else ''}\n".encode()


@FUZZ
@given(raw=mangled() | st.binary(max_size=200) | st.builds(
    nested, st.integers(1, 5000), st.sampled_from(["[", "{a = "]), st.booleans()))
def test_a_malformed_config_file(capsys, space, raw):
    assume(not valid_config(raw))
    assert "config error:" in refused(capsys, space, "run", config_file(space, raw))


def test_a_config_path_that_is_no_file(capsys, space):
    assert "no such file" in refused(capsys, space, "run", str(space / "none.toml"))
    assert "cannot read" in refused(capsys, space, "run", str(space))


def test_a_deeply_nested_override(capsys, space):
    deep = "x.y=" + "{a = " * 3000 + "1" + "}" * 3000
    refused(capsys, space, "run", config_file(space, base_doc(space)), "--set", deep)


def test_out_is_a_file(capsys, space):
    target, data = space / "a_file", fresh(space)
    target.write_text("keep")
    data.write_bytes(npz_bytes(omniglot_arrays()))
    code = main(["run", config_file(space, data_doc("omniglot", data)), "--out", str(target),
                 "--quiet"])
    assert "not an empty directory" in one_line(capsys, code)
    assert target.read_text() == "keep"


# --- data files ----------------------------------------------------------------------------

def omniglot_arrays() -> dict[str, np.ndarray]:
    """A tiny valid Omniglot: alphabets 0, 1 (background) and 2 (evaluation), 2 characters
    each, 3 drawers."""
    rows = [(a, c, d) for a in range(3) for c in range(2) for d in range(3)]
    a, c, d = (np.array(column) for column in zip(*rows))
    return {"images": np.random.default_rng(0).integers(0, 256, (len(rows), 28, 28), np.uint8),
            "alphabet": np.char.add("alphabet", a.astype(str)),
            "character": (c + 1).astype(np.int16), "drawer": (d + 1).astype(np.int8),
            "split": np.where(a < 2, "background", "evaluation"),
            "char_id": (2 * a + c + 1).astype(np.int16)}


def femnist_arrays() -> dict[str, np.ndarray]:
    """A tiny valid FEMNIST: 4 writers with 2 classes of 3 examples, the last of each in LEAF's
    test split."""
    rows = [(w, k, i) for w in range(4) for k in range(2) for i in range(3)]
    w, k, i = (np.array(column) for column in zip(*rows))
    return {"images": np.random.default_rng(1).integers(0, 256, (len(rows), 28, 28), np.uint8),
            "labels": (10 * w + k).astype(np.int16), "writer": w.astype(np.int32),
            "leaf_split": (i == 2).astype(np.int8)}


# What each array may be: a string of numpy kinds, or a tuple of dtypes; IMAGES are [N, 28, 28].
IMAGES = ("u1",)
FORMATS = {
    "omniglot": (omniglot_arrays(), {"images": IMAGES, "alphabet": "iuU", "character": "iuU",
                                     "drawer": "iuU", "split": "U", "char_id": "iu"}),
    "femnist": (femnist_arrays(), {"images": IMAGES, "labels": "iu", "writer": "iuU",
                                   "leaf_split": "iu"}),
}
DATA_SETTINGS = {"model": {"name": "mlp", "hidden": 4},
                 "task": {"ways": 2, "shots": 1, "queries": 1},
                 "eval": {"ways": 2, "shots": 1, "queries": 1, "every": 0, "episodes": 2,
                          "final_episodes": 2},
                 "server": {"rounds": 1, "clients_per_round": 2},
                 "run": {"checkpoint_every": 0}}
DTYPES = ["u1", "i2", "i8", "u8", "f2", "f4", "f8", "c8", "?", "U4", "S4", "M8[D]"]


def data_doc(dataset: str, path: Path) -> dict[str, Any]:
    data = {"dataset": dataset, "path": str(path)}
    return {**DATA_SETTINGS, "data": data if dataset == "omniglot" else
            {**data, "test_fraction": 0.5}}


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def wrong_dtype(allowed: str | tuple[str, ...]) -> st.SearchStrategy:
    return st.sampled_from([t for t in DTYPES if (t not in allowed if isinstance(allowed, tuple)
                                                  else np.dtype(t).kind not in allowed)])


@st.composite
def with_wrong_dtype(draw, arrays, kinds) -> dict[str, np.ndarray]:
    """One array cast to a dtype it may not have (floats may gain a nan or inf)."""
    key = draw(st.sampled_from(sorted(kinds)))
    dtype = draw(wrong_dtype(kinds[key]))
    try:
        value = arrays[key].astype(dtype)
    except ValueError:  # strings that are no numbers or dates
        value = np.zeros(arrays[key].shape, dtype)
    if value.dtype.kind in "fc" and draw(st.booleans()):
        value.flat[draw(st.integers(0, value.size - 1))] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf]))
    return {**arrays, key: value}


@st.composite
def with_wrong_shape(draw, arrays, kinds) -> dict[str, np.ndarray]:
    """One array reshaped, cut or lengthened so that it no longer fits the others."""
    key = draw(st.sampled_from(sorted(kinds)))
    value = arrays[key]
    if not value.ndim:
        return {**arrays, key: draw(st.sampled_from([value[None], np.stack([value, value])]))}
    shapes = [value[:-1], np.concatenate([value, value[:1]]), value[:, None]]
    if kinds[key] is IMAGES:
        shapes += [value.reshape(len(value), -1), value[:, :27], value[:, :, :14],
                   value[..., None], value.transpose(1, 2, 0)]
    return {**arrays, key: draw(st.sampled_from(shapes))}


@st.composite
def without_arrays(draw, arrays, required) -> dict[str, np.ndarray]:
    dropped = draw(st.sets(st.sampled_from(sorted(required)), min_size=1))
    return {k: v for k, v in arrays.items() if k not in dropped}


@st.composite
def with_object_array(draw, arrays, kinds) -> dict[str, np.ndarray]:
    """One array stored as pickled objects, one of which would create a file if unpickled."""
    key = draw(st.sampled_from(sorted(kinds)))
    value = arrays[key].astype(object)
    value.flat[0] = Evil()
    return {**arrays, key: value}


@st.composite
def omniglot_values(draw, arrays) -> dict[str, np.ndarray]:
    """Omniglot values out of range: a char_id not numbering 1..K background first, a split
    other than background/evaluation, a split with no examples, a bad compact `bits`."""
    arrays, n = dict(arrays), len(arrays["images"])
    row = draw(st.integers(0, n - 1))
    char_id = arrays["char_id"].astype(np.int64)
    split = arrays["split"].astype("U16")
    change = draw(st.sampled_from(["char_id", "gap", "split", "empty", "swap", "bits"]))
    if change == "char_id":
        char_id[row] = draw(st.integers(-10**12, 0) | st.integers(n + 1, 10**12))
    elif change == "gap":
        char_id[char_id == char_id[row]] += draw(st.integers(1, 10**12)) + char_id.max()
    elif change == "split":
        split[row] = draw(st.text(max_size=16).filter(
            lambda s: s not in ("background", "evaluation")))
    elif change == "empty":
        split[:] = draw(st.sampled_from(["background", "evaluation"]))
    elif change == "swap":  # an evaluation character among the background ones
        split[char_id == char_id.max()] = "background"
    else:
        bits = np.packbits(arrays.pop("images") > 127, axis=-1)
        arrays["bits"] = draw(st.sampled_from([bits.astype(np.int16), bits[..., :3],
                                               bits[:, :27]]))
    return {**arrays, "char_id": char_id, "split": split}


@st.composite
def femnist_values(draw, arrays) -> dict[str, np.ndarray]:
    """FEMNIST values out of range: a label outside 0..61, a leaf_split other than 0/1, one
    writer only (no held-out clients), no examples at all."""
    arrays, n = dict(arrays), len(arrays["images"])
    row = draw(st.integers(0, n - 1))
    change = draw(st.sampled_from(["labels", "leaf_split", "one_writer", "empty"]))
    if change == "empty":
        return {k: v[:0] for k, v in arrays.items()}
    if change == "one_writer":
        return {**arrays, "writer": np.zeros_like(arrays["writer"])}
    value = arrays[change].astype(np.int64)
    high = 62 if change == "labels" else 2
    value[row] = draw(st.integers(-10**12, -1) | st.integers(high, 10**12))
    return {**arrays, change: value}


def huge_header(arrays: dict[str, np.ndarray], key: str) -> bytes:
    """An npz whose `key` claims 10**12 rows it does not hold."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            if name == key:
                header = {"descr": value.dtype.str, "fortran_order": False,
                          "shape": (10**12, *value.shape[1:])}
                np.lib.format.write_array_header_1_0(member, header)
                member.write(value.tobytes())
            else:
                np.lib.format.write_array(member, value)
            archive.writestr(f"{name}.npy", member.getvalue())
    return buffer.getvalue()


def not_npy(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in arrays:
            archive.writestr(f"{name}.npy", b"not an array")
    return buffer.getvalue()


def flipped(valid: bytes, member: int, at: int, xor: int) -> bytes:
    """`valid` with one byte of one member's data changed: its CRC-32 no longer matches. (Every
    byte of a stored member is content; some bits of a deflate stream are not.)"""
    infos = zipfile.ZipFile(io.BytesIO(valid)).infolist()
    info = infos[member % len(infos)]
    name_length, extra_length = struct.unpack_from("<HH", valid, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length  # after the local header
    data = bytearray(valid)
    data[start + at % info.compress_size] ^= xor
    return bytes(data)


def unsupported_compression(valid: bytes) -> bytes:
    """`valid` with every member marked as compressed by a method zipfile does not know."""
    data = bytearray(valid)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        for match in re.finditer(re.escape(signature), valid):
            data[match.start() + offset:match.start() + offset + 2] = (99).to_bytes(2, "little")
    return bytes(data)


def single_array(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, next(iter(arrays.values())))
    return buffer.getvalue()


@st.composite
def corrupt_bytes(draw, arrays) -> bytes:
    """A file that is no readable npz of these arrays (stored or compressed): cut short, a
    byte of data changed, an unknown compression, random, a pickle (one that would create a
    file), a lone .npy, a zip of non-arrays, a header that claims absurd sizes."""
    valid = npz_bytes(arrays, compressed=draw(st.booleans()))
    return draw(st.one_of(
        st.integers(0, len(valid) - 1).map(lambda cut: valid[:cut]),
        st.builds(flipped, st.just(npz_bytes(arrays)), st.integers(0, 99),
                  st.integers(0, 10**6), st.integers(1, 255)),
        st.just(unsupported_compression(valid)),
        st.binary(max_size=300),
        st.just(pickle.dumps(arrays)), st.just(pickle.dumps(Evil())),
        st.just(single_array(arrays)), st.just(not_npy(arrays)),
        st.sampled_from(sorted(arrays)).map(lambda key: huge_header(arrays, key))))


def corrupt_files(arrays, kinds, values, optional=()) -> st.SearchStrategy:
    """Bytes of a file that breaks the format of `arrays` (`optional` ones may be left out):
    unreadable, an array missing, of a wrong dtype or shape, pickled, or `values` out of
    range."""
    return corrupt_bytes(arrays) | st.one_of(
        with_wrong_dtype(arrays, kinds), with_wrong_shape(arrays, kinds),
        without_arrays(arrays, set(kinds) - set(optional)), with_object_array(arrays, kinds),
        values(arrays)).map(npz_bytes)


def test_the_uncorrupted_data_files_train(capsys, space):
    for dataset, (arrays, _) in FORMATS.items():
        path = fresh(space)
        path.write_bytes(npz_bytes(arrays))
        out = space / f"{dataset}_run"
        assert main(["run", config_file(space, data_doc(dataset, path)), "--out", str(out),
                     "--quiet"]) == 0, capsys.readouterr().err
        assert (out / "summary.json").is_file()
    capsys.readouterr()


@FUZZ
@given(data=corrupt_files(*FORMATS["omniglot"], omniglot_values))
def test_a_corrupt_omniglot_file(capsys, space, data):
    assert_data_refused(capsys, space, "omniglot", data)


@FUZZ
@given(data=corrupt_files(*FORMATS["femnist"], femnist_values))
def test_a_corrupt_femnist_file(capsys, space, data):
    assert_data_refused(capsys, space, "femnist", data)


def assert_data_refused(capsys, space: Path, dataset: str, data: bytes) -> None:
    """`fedmeta run` on `data` as the dataset's file is refused, naming the file."""
    path = fresh(space)
    path.write_bytes(data)
    assert str(path) in refused(capsys, space, "run", config_file(space, data_doc(dataset, path)))


@pytest.mark.parametrize("dataset, section, values, reason", [
    ("omniglot", "eval", {"ways": 3}, "no held-out client has enough data for 3-way"),
    ("femnist", "eval", {"personalization_episodes": 1}, "no held-out client has 2 classes with 1"),
    ("omniglot", "task", {"shots": 50}, "no training client can supply a local round"),
])
def test_data_the_run_cannot_use(capsys, space, dataset, section, values, reason):
    """Found before the run directory is created, not as rounds that all skip or after the
    first rounds. (In the FEMNIST file every example is in LEAF's test split: no client has a
    support split of its own.)"""
    arrays = FORMATS[dataset][0]
    path = fresh(space)
    path.write_bytes(npz_bytes(arrays if dataset == "omniglot" else
                               {**arrays, "leaf_split": np.ones_like(arrays["leaf_split"])}))
    doc = data_doc(dataset, path)
    doc[section] = {**doc.get(section, {}), **values}
    assert reason in refused(capsys, space, "run", config_file(space, doc))


def test_a_changed_byte_in_a_compressed_array(capsys, space):
    """numpy's npz reader stops before zipfile checks a member's CRC-32: such a file used to
    train on wrong pixels."""
    valid = npz_bytes(omniglot_arrays(), compressed=True)
    info = zipfile.ZipFile(io.BytesIO(valid)).getinfo("images.npy")
    path = fresh(space)
    path.write_bytes(flipped(valid, 0, info.compress_size // 2, 0xFF))
    assert "Bad CRC-32" in refused(capsys, space, "run",
                                   config_file(space, data_doc("omniglot", path)))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12)
LEAF_USER = {"x": [[1.0] * 784] * 2, "y": [3, 61]}


def leaf_json(users: dict[str, Any]) -> dict[str, Any]:
    return {"users": list(users), "num_samples": [2] * len(users), "user_data": users}


def two_labels(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(type(v) is int and 0 <= v < 62 for v in value))


@FUZZ
@given(doc=JSON | st.builds(lambda key, value: leaf_json({"w1": LEAF_USER,
                                                          "w2": {**LEAF_USER, key: value}}),
                            st.sampled_from(["x", "y"]),
                            JSON.filter(lambda value: not two_labels(value))))
def test_a_corrupt_leaf_json_file(capsys, space, monkeypatch, doc):
    """FEMNIST given as LEAF's json: a bad file is named, and nothing is converted into the
    cache (a bad conversion cached there would outlive the fix)."""
    cache = space / "cache"
    monkeypatch.setenv("FEDMETA_DATA", str(cache))
    leaf = fresh(space, "")
    leaf.mkdir()
    (leaf / "a.json").write_text(json.dumps(doc))
    line = refused(capsys, space, "run", config_file(space, {"data": {"dataset": "femnist",
                                                                      "path": str(leaf)}}))
    assert str(leaf) in line and not list(cache.glob("*"))


CLIENT = {"x": np.random.default_rng(2).integers(0, 256, (6, 28, 28), np.uint8),
          "y": np.array([0, 0, 0, 1, 1, 1]), "client_id": np.array(3),
          "query_mask": np.array([False, False, True] * 2)}


@st.composite
def client_values(draw, arrays) -> dict[str, np.ndarray]:
    """A client file's values out of range: a negative label, float features with nan or inf,
    no examples, a client_id that is no single non-negative integer."""
    change = draw(st.sampled_from(["y", "x", "empty", "client_id"]))
    if change == "y":
        return {**arrays, "y": arrays["y"] - draw(st.integers(1, 10**12))}
    if change == "x":
        x = arrays["x"].reshape(len(arrays["x"]), -1).astype(np.float32)
        x[draw(st.integers(0, len(x) - 1))] = draw(st.sampled_from([math.nan, math.inf]))
        return {**arrays, "x": x}
    if change == "empty":
        return {k: v[:0] if v.ndim else v for k, v in arrays.items()}
    return {**arrays, "client_id": draw(st.sampled_from(
        [np.int64(-1), np.arange(2), np.float64(1.5), np.array("a")]))}


@FUZZ
@given(data=corrupt_files(CLIENT, {"x": ("u1", "f4"), "y": "iu", "client_id": "iu",
                                   "query_mask": "b"}, client_values, optional=["query_mask"]))
def test_a_corrupt_client_file(space, data):
    assert_loader_refuses(space, data, load_client)


EPISODES = {"support_x": np.random.default_rng(3).integers(0, 256, (2, 4, 28, 28), np.uint8),
            "support_y": np.array([[0, 0, 1, 1]] * 2),
            "query_x": np.random.default_rng(4).integers(0, 256, (2, 2, 28, 28), np.uint8),
            "query_y": np.array([[0, 1]] * 2)}


@st.composite
def episode_values(draw, arrays) -> dict[str, np.ndarray]:
    """Episodes out of range: a label negative, huge or absent from the support sets, support
    sets with unequal shots, a nan or inf pixel, no episodes at all."""
    change = draw(st.sampled_from(["support_y", "query_y", "unequal", "nan", "empty"]))
    if change == "empty":
        return {k: v[:0] for k, v in arrays.items()}
    if change == "nan":
        x = arrays["query_x"].astype(np.float32)
        x[0, 0, 0, 0] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return {**arrays, "query_x": x}
    if change == "unequal":
        return {**arrays, "support_y": np.array([[0, 0, 0, 1]] * 2)}
    labels = arrays[change].copy()
    labels[0, 0] = draw(st.integers(-10**12, -1) | st.integers(2, 10**12))
    return {**arrays, change: labels}


@FUZZ
@given(data=corrupt_files(EPISODES, {"support_x": ("u1", "f2", "f4", "f8"), "support_y": "iu",
                                     "query_x": ("u1", "f2", "f4", "f8"), "query_y": "iu"},
                          episode_values))
def test_a_corrupt_episodes_file(space, data):
    assert_loader_refuses(space, data, load_episodes)


def assert_loader_refuses(space: Path, data: bytes, load) -> None:
    """`load` of `data` as a file raises a one-line UserError naming the file, unpickling
    nothing."""
    path = fresh(space)
    path.write_bytes(data)
    with pytest.raises(UserError) as error:
        load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not Evil.marker.exists()


# --- checkpoints ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_run(space) -> Path:
    """A run directory of a fast config (synthetic clients, a tiny MLP) and its checkpoint."""
    config = Config.model_validate({"data": {"dataset": "synthetic", "num_clients": 4},
                                    "model": {"name": "mlp", "hidden": 4}})
    run = RunDirectory.create(config, space / "eval_run")
    params = build_experiment(config).learner.init_params()
    run.checkpoint(params, {}, 1)
    return run.path


def bad_checkpoints(run: Path) -> dict[str, bytes]:
    valid = (run / "checkpoints" / "round_00001.safetensors").read_bytes()
    params = {k: v for k, v in load(valid).items() if k.startswith("params/")}
    first = next(iter(params))
    torch_save = io.BytesIO()
    torch.save({k.removeprefix("params/"): v for k, v in params.items()}, torch_save)
    return {
        "random bytes": bytes(range(256)) * 4,
        "empty": b"",
        "torch.save pickle": torch_save.getvalue(),
        "evil pickle": pickle.dumps(Evil()),
        "cut short": valid[:len(valid) // 2],
        "no metadata": save(params, None),
        "no params": save({"server/x": torch.ones(1)}, {"round": "1"}),
        "round not a number": save(params, {"round": "one"}),
        "a wrong shape": save({**params, first: torch.ones(3, 3)}, {"round": "1"}),
        "a wrong dtype": save({**params, first: params[first].double()}, {"round": "1"}),
        "a missing tensor": save({k: v for k, v in params.items() if k != first},
                                 {"round": "1"}),
        "an extra tensor": save({**params, "params/extra": torch.ones(1)}, {"round": "1"}),
        "a tensor and a group": save(
            {**params, "params/g": torch.ones(1), "params/g/h": torch.ones(1)}, {"round": "1"}),
    }


def test_eval_refuses_a_bad_checkpoint(capsys, space, eval_run):
    before = snapshot(eval_run)
    for name, data in bad_checkpoints(eval_run).items():
        path = fresh(space, ".safetensors")
        path.write_bytes(data)
        line = one_line(capsys, main(["eval", str(eval_run), "--checkpoint", str(path)]))
        assert str(path) in line, name
    for path in (space / "none.safetensors", space):
        one_line(capsys, main(["eval", str(eval_run), "--checkpoint", str(path)]))
    assert snapshot(eval_run) == before and not Evil.marker.exists()


def test_nothing_is_read_with_pickle():
    """Checkpoints load only through safetensors, arrays only with `allow_pickle=False`."""
    sources = "".join(p.read_text() for p in Path(__file__).parents[1].glob("src/**/*.py"))
    assert not re.search(r"torch\.load|import pickle|pickle\.load|allow_pickle=True", sources)
    assert all("allow_pickle=False" in call for call in re.findall(r"np\.load\([^)]*\)", sources))


# --- at the process level -------------------------------------------------------------------

@pytest.mark.parametrize("case", ["config", "data", "checkpoint"])
def test_no_traceback_from_the_command(space, eval_run, case):
    """The same refusals from `python -m fedmeta.cli`, as a user sees them."""
    path = fresh(space)
    if case == "checkpoint":
        path.write_bytes(pickle.dumps(Evil()))
        args = ["eval", eval_run, "--checkpoint", path]
    else:
        path.write_bytes(npz_bytes(omniglot_arrays())[:-10])
        config = b"[data\n" if case == "config" else data_doc("omniglot", path)
        args = ["run", config_file(space, config), "--out", space / "new"]
    result = subprocess.run([sys.executable, "-m", "fedmeta.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("fedmeta: error: ") and "Traceback" not in result.stderr
    assert not (space / "new").exists() and not Evil.marker.exists()
