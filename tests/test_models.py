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


def char_lstm_params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def test_char_lstm_computes_torch_lstm():
    """The step-by-step LSTM against torch's own `nn.LSTM` given the same weights (its second
    bias zero: ours has one bias a gate)."""
    model = build_model("char-lstm", (80,), 80, hidden=16)
    params = char_lstm_params(model)
    reference = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)
    reference.load_state_dict({
        f"{name}_l{layer}": value for layer in range(2) for name, value in (
            ("weight_ih", params[f"features.lstm.{layer}.ih.weight"]),
            ("bias_ih", params[f"features.lstm.{layer}.ih.bias"]),
            ("weight_hh", params[f"features.lstm.{layer}.hh.weight"]),
            ("bias_hh", torch.zeros(64)))})
    x = torch.randint(80, (3, 80))
    expected = reference(model.features.embedding(x))[0][:, -1]
    torch.testing.assert_close(model.features(x), expected)
    assert model(x).shape == (3, 80)


def test_char_lstm_second_order_and_vmapped_gradients():
    """MAML's meta-gradient differentiates through an inner step (it differs from the first
    order one), and vmap over clients gives each client's own gradient."""
    from torch.func import grad, vmap
    model = build_model("char-lstm", (80,), 80, hidden=8)
    params = char_lstm_params(model)
    x, y = torch.randint(80, (2, 4, 80)), torch.randint(80, (2, 4))
    loss = lambda p, x, y: torch.nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    def meta_loss(p, detach):
        g = grad(loss)({k: v.detach() for k, v in p.items()} if detach else p, x[0], y[0])
        return loss({k: p[k] - 0.5 * g[k] for k in p}, x[1], y[1])

    second, first = grad(meta_loss)(params, False), grad(meta_loss)(params, True)
    assert all(v.isfinite().all() for v in second.values())
    assert not torch.allclose(second["features.lstm.0.hh.weight"],
                              first["features.lstm.0.hh.weight"])
    stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
    batched = vmap(grad(loss))(stacked, x, y)
    for i in range(2):
        one = grad(loss)({k: v[i] for k, v in stacked.items()}, x[i], y[i])
        for k in params:
            torch.testing.assert_close(batched[k][i], one[k])
    with pytest.raises(ValueError, match="char-lstm needs token inputs"):
        build_model("char-lstm", (1, 28, 28), 80)


def test_cnn_is_fedavgs_cnn_in_pfllibs_shape():
    """McMahan et al. 2017's CNN without padding, as PFLlib trains it on Fashion-MNIST: 28 ->
    24 -> 12 -> 8 -> 4 pixels a side, so 64 * 4 * 4 = 1024 inputs to the 512-unit layer;
    832 + 51,264 + 524,800 + 5,130 = 582,026 params."""
    model = build_model("cnn", (1, 28, 28), 10, hidden=512)
    assert sum(p.numel() for p in model.parameters()) == 582_026
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert not list(model.buffers())
    with_norm = build_model("cnn", (1, 28, 28), None, hidden=16, batch_norm=True)
    assert with_norm(torch.rand(2, 1, 28, 28)).shape == (2, 16)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in with_norm.modules()) == 2
    assert not list(with_norm.buffers())
    with pytest.raises(ValueError, match="cnn needs image inputs"):
        build_model("cnn", (60,), None)
    with pytest.raises(ValueError, match="at least 16 pixels"):
        build_model("cnn", (1, 8, 8), 10)
