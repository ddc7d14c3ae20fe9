import numpy as np
import pytest
import torch

from fedmeta.data import EpisodeSampler, load_omniglot_arrays, omniglot_federated
from fedmeta.errors import UserError


@pytest.fixture(scope="module")
def omniglot(shared_data):
    return shared_data / "omniglot.npz"


def all_labels(ds):
    return torch.cat([ds.client(i).y for i in range(ds.num_clients)])


def test_alphabet_split_matches_paper(omniglot):
    train, test = omniglot_federated(omniglot)
    assert (train.num_clients, test.num_clients) == (30, 20)
    assert (train.num_classes, test.num_classes) == (964, 659)
    ytr, yte = all_labels(train), all_labels(test)
    assert ytr.unique().numel() == 964 and yte.unique().numel() == 659
    assert len(ytr) == 964 * 20 and len(yte) == 659 * 20
    assert not np.intersect1d(ytr.numpy(), yte.numpy()).size
    assert train.input_shape == (1, 28, 28) and train.client(0).x.dtype == torch.uint8


def test_drawer_clients_have_one_example_per_class(omniglot):
    train, test = omniglot_federated(omniglot, partition="drawer")
    assert train.num_clients == test.num_clients == 20
    c = train.client(3)
    assert len(c) == 964 and c.classes.numel() == 964
    assert not EpisodeSampler(5, 1, 1).eligible(c)


def test_random_partition_deals_whole_characters(omniglot):
    train, test = omniglot_federated(omniglot, partition="random", num_clients=10, seed=3)
    assert train.num_clients == test.num_clients == 10
    owners = {}
    for i in range(train.num_clients):
        c = train.client(i)
        assert torch.bincount(c.y).max() == 20 == torch.bincount(c.y)[c.classes].min()
        for label in c.classes.tolist():
            assert owners.setdefault(label, i) == i
    assert len(owners) == 964
    with pytest.raises(ValueError, match="num_clients"):
        omniglot_federated(omniglot, partition="random")


def test_rotations_are_new_classes(omniglot):
    plain, _ = omniglot_federated(omniglot)
    rot, rot_test = omniglot_federated(omniglot, rotations=True)
    assert rot.num_classes == 4 * 964 and rot_test.num_classes == 4 * 659
    p, r = plain.client(0), rot.client(0)
    assert len(r) == 4 * len(p) == rot.client_size(0)
    assert torch.equal(r.y.view(-1, 4), p.y.unsqueeze(1) * 4 + torch.arange(4))
    assert torch.equal(r.x[1], torch.rot90(p.x[0], 1, dims=(0, 1)))
    assert torch.equal(r.x[4], p.x[1])


def test_compact_bits_variant_round_trips(omniglot, tmp_path):
    a = load_omniglot_arrays(omniglot)
    assert a["images"].shape == (32460, 28, 28) and a["images"].dtype == np.uint8
    binary = np.where(a["images"] > 127, 255, 0).astype(np.uint8)
    bits = np.packbits(a["images"] > 127, axis=-1)
    assert bits.shape == (32460, 28, 4)
    np.savez(tmp_path / "compact.npz", bits=bits, **{k: v for k, v in a.items() if k != "images"})
    b = load_omniglot_arrays(tmp_path / "compact.npz")
    np.testing.assert_array_equal(b["images"], binary)
    np.testing.assert_array_equal(b["char_id"], a["char_id"])
    train, test = omniglot_federated(tmp_path / "compact.npz")
    assert (train.num_classes, test.num_classes) == (964, 659)


def test_missing_arrays_rejected(tmp_path):
    np.savez(tmp_path / "x.npz", labels=np.zeros(3))
    with pytest.raises(UserError, match="missing arrays alphabet, character"):
        load_omniglot_arrays(tmp_path / "x.npz")
    np.savez(tmp_path / "x.npz", **{key: np.zeros(3) for key in
                                    ("alphabet", "character", "drawer", "split", "char_id")})
    with pytest.raises(UserError, match="no 'images' or 'bits'"):
        load_omniglot_arrays(tmp_path / "x.npz")
