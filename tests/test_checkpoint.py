import pytest
import torch

from fedmeta.engine.checkpoint import load_checkpoint, save_checkpoint
from fedmeta.errors import UserError
from fedmeta.optim import adam


def test_roundtrip_params_and_server_state(tmp_path):
    params = {"features.0.weight": torch.randn(4, 3), "head.bias": torch.randn(2)}
    state = {"0": {}, "1": adam(0.1).init(params)}
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, params, state, 7)
    loaded, loaded_state, round_index = load_checkpoint(path)
    assert round_index == 7
    for k in params:
        assert torch.equal(loaded[k], params[k])
    assert torch.equal(loaded_state["1"]["m"]["head.bias"], state["1"]["m"]["head.bias"])
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(path)
