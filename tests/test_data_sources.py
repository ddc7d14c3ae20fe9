import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from fedmeta.data import ChecksumError, DatasetNotFound, femnist_federated, resolve_dataset
from fedmeta.data import sources
from fedmeta.data.sources import DATASETS, Source, convert_leaf_femnist, convert_omniglot_zips, is_reference_file


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """Isolate from the user's real cache: FEDMETA_DATA and HOME point into tmp."""
    monkeypatch.setenv("FEDMETA_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "data"


def test_missing_file_message_says_where_and_how(data_home):
    with pytest.raises(DatasetNotFound) as e:
        resolve_dataset("omniglot")
    msg = str(e.value)
    assert "\n" not in msg and str(data_home) in msg and "download=True" in msg
    with pytest.raises(DatasetNotFound, match="LEAF") as e:
        resolve_dataset("femnist", download=True)
    assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_dataset("omniglot", path=data_home / "nope.npz")
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_dataset("mnist")


def test_resolution_order(data_home, tmp_path, monkeypatch):
    explicit = tmp_path / "mine.npz"
    explicit.write_bytes(b"x")
    assert resolve_dataset("omniglot", path=explicit) == explicit
    (tmp_path / "home" / ".cache" / "fedmeta").mkdir(parents=True)
    home_file = tmp_path / "home" / ".cache" / "fedmeta" / "omniglot.npz"
    home_file.write_bytes(b"h")
    assert resolve_dataset("omniglot") == home_file
    data_home.mkdir()
    (data_home / "omniglot.npz").write_bytes(b"d")
    assert resolve_dataset("omniglot") == data_home / "omniglot.npz"
    assert resolve_dataset("omniglot", path=data_home) == data_home / "omniglot.npz"


def test_checksum_mismatch_leaves_no_file(data_home, tmp_path, monkeypatch):
    fake = tmp_path / "images_background.zip"
    fake.write_bytes(b"not the real zip")
    spec = dataclasses.replace(DATASETS["omniglot"], sources=(Source(fake.as_uri(), "0" * 32),))
    monkeypatch.setitem(DATASETS, "omniglot", spec)
    with pytest.raises(ChecksumError, match="checksum mismatch") as e:
        resolve_dataset("omniglot", download=True)
    assert "\n" not in str(e.value)
    assert not any(data_home.iterdir())


def test_fetch_reuses_verified_file(tmp_path, monkeypatch):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    md5 = sources.file_digest(src, "md5")
    dest = sources.fetch(src.as_uri(), tmp_path / "out" / "f.bin", md5)
    assert dest.read_bytes() == b"payload"
    src.unlink()  # a second call must not touch the network/source again
    assert sources.fetch(src.as_uri(), dest, md5) == dest


def test_reference_checksums(shared_data):
    assert is_reference_file("omniglot", shared_data / "omniglot.npz")
    assert is_reference_file("femnist", shared_data / "femnist.npz")
    recorded = dict(line.split()[::-1] for line in (shared_data / "SHA256SUMS").read_text().splitlines() if line)
    assert {n: s.sha256 for n, s in DATASETS.items()} == {n: recorded[f"{n}.npz"] for n in DATASETS}


def write_leaf_json(path, users):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "users": list(users), "num_samples": [len(d["y"]) for d in users.values()], "user_data": users,
    }))


def test_convert_leaf_femnist(tmp_path, data_home):
    white = [1.0] * 784
    ink = [0.0] + [1.0] * 783
    write_leaf_json(tmp_path / "leaf" / "train" / "a.json",
                    {"w2": {"x": [white, ink], "y": [3, 61]}, "w1": {"x": [white], "y": [0]}})
    write_leaf_json(tmp_path / "leaf" / "test" / "a.json", {"w2": {"x": [ink], "y": [5]}})
    out = convert_leaf_femnist(tmp_path / "leaf", tmp_path / "f.npz")
    with np.load(out, allow_pickle=False) as f:
        assert f["images"].shape == (4, 28, 28) and f["images"].dtype == np.uint8
        assert f["images"][1, 0, 0] == 255 and f["images"][1].sum() == 255 and f["images"][0].max() == 0
        assert f["labels"].tolist() == [3, 61, 0, 5] and f["leaf_split"].tolist() == [0, 0, 0, 1]
        assert f["writer_id"].tolist() == ["w2", "w2", "w1", "w2"] and f["writer"].tolist() == [1, 1, 0, 1]
    # a LEAF directory passed as path is converted once into the cache and then loads
    train, test = femnist_federated(tmp_path / "leaf", test_fraction=0.5)
    assert train.num_clients == test.num_clients == 1
    assert len(list(data_home.glob("femnist-leaf-*.npz"))) == 1
    with pytest.raises(DatasetNotFound, match="no LEAF json"):
        convert_leaf_femnist(tmp_path / "home", tmp_path / "g.npz")


def test_convert_omniglot_zips(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    zips = []
    for split, alphabets in (("background", ["Beta", "Alpha"]), ("evaluation", ["Gamma"])):
        zips.append(tmp_path / f"images_{split}.zip")
        with zipfile.ZipFile(zips[-1], "w") as zf:
            for a in alphabets:
                for ch in (1, 2):
                    for drawer in (2, 1):
                        img = np.full((105, 105), 255, np.uint8)
                        img[10:60, 10:60] = 0  # black ink on white, as in the official PNGs
                        buf = io.BytesIO()
                        Image.fromarray(img).convert("1").save(buf, format="PNG")
                        zf.writestr(f"images_{split}/{a}/character{ch:02d}/0{ch}0{drawer}_{drawer:02d}.png", buf.getvalue())
    out = convert_omniglot_zips(zips, tmp_path / "o.npz")
    with np.load(out, allow_pickle=False) as f:
        assert f["images"].shape == (12, 28, 28) and f["images_105"].shape == (12, 105, 105)
        assert f["images_105"][0, 20, 20] == 255 and f["images_105"][0, 0, 0] == 0
        assert f["images"].max() > 200 and f["images"][0, 27, 27] == 0
        assert f["alphabet"].tolist()[:4] == ["Alpha"] * 4 and f["split"].tolist()[-1] == "evaluation"
        assert f["char_id"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
        assert f["drawer"].tolist()[:2] == [1, 2] and f["character"].tolist()[:4] == [1, 1, 2, 2]


def test_lanczos_reproduces_reference_images(shared_data):
    pytest.importorskip("PIL.Image")
    with np.load(shared_data / "omniglot.npz", allow_pickle=False) as f:
        big, small = f["images_105"][::500], f["images"][::500]
    np.testing.assert_array_equal(sources.lanczos_28(big), small)


def test_missing_pillow_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name.startswith("PIL"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match="pip install pillow"):
        sources.lanczos_28(np.zeros((1, 105, 105), np.uint8))
