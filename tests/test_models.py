import pytest
import torch
from torch.func import functional_call

from fedmeta.models import Conv4, MLP, build_model


def test_conv4_embedding_and_head_shapes():
    x = torch.rand(6, 1, 28, 28)
    assert Conv4()(x).shape == (6, 64)
    assert Conv4(num_classes=5)(x).shape == (6, 5)
    assert Conv4(hidden=8, image_size=84, in_channels=3)(torch.rand(2, 3, 84, 84)).shape == (2, 8 * 5 * 5)


def test_conv4_is_a_pure_function_of_its_params():
    model = Conv4(hidden=8, num_classes=3)
    assert not list(model.buffers())  # batch norm keeps no running statistics
    params = {k: v.detach() + 0.01 for k, v in model.named_parameters()}
    x = torch.rand(4, 1, 28, 28)
    first = functional_call(model, params, (x,))
    assert torch.equal(first, functional_call(model, params, (x,)))
    assert not torch.allclose(first, model(x))


def test_mlp_and_builder():
    assert MLP((60,), (32, 32), 10)(torch.rand(3, 60)).shape == (3, 10)
    assert build_model("mlp", (1, 28, 28), None, hidden=16)(torch.rand(2, 1, 28, 28)).shape == (2, 16)
    with pytest.raises(ValueError, match="conv4 needs image inputs"):
        build_model("conv4", (60,), None)
