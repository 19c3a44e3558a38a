"""Every CPU configuration of PyTorch's own optimizer test grid (``optim_inputs_func_sgd``,
``_adam``, ``_adamw``, ``_rmsprop`` in torch/testing/_internal/common_optimizers.py), 30 float64
steps of mlp_xp against torch.optim from the same weights: equal to 1e-10 relative.

The grid is read from torch where its test module imports (it needs ``expecttest``); the copy
below is checked against it there, and used where it does not import."""

import numpy as np
import pytest

import mlp_xp as mx

from .conftest import torch_twin

#: torch 2.13's CPU grid, as (kwargs, desc); the "tensor lr" one, torch.tensor(0.001) (float32), holds its
#: value here (made a tensor, or a 0-d numpy array for mlp_xp, below)
GRID = {
    "SGD": [({}, "default"), ({"lr": 0.01}, "non-default lr"), ({"lr": ("tensor", float(np.float32(0.001)))}, "tensor lr"),
            ({"weight_decay": 0.5}, "non-zero weight_decay"), ({"momentum": 0.9}, "momentum"),
            ({"weight_decay": 0.1, "maximize": True}, "maximize"),
            ({"momentum": 0.9, "dampening": 0.5}, "dampening"),
            ({"momentum": 0.9, "weight_decay": 0.1}, "weight_decay w/ momentum"),
            ({"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, "nesterov")],
    "Adam": [({}, "default"), ({"lr": 0.01}, "non-default lr"), ({"weight_decay": 0.1}, "nonzero weight_decay"),
             ({"weight_decay": 0.1, "maximize": True}, "maximize"),
             ({"weight_decay": 0.1, "amsgrad": True}, "amsgrad")],
    "RMSprop": [({}, "default"), ({"lr": 1e-3}, "non-default lr"), ({"weight_decay": 0.1}, "nonzero weight_decay"),
                ({"maximize": True}, "maximize"), ({"weight_decay": 0.1, "centered": True}, "centered"),
                ({"maximize": True, "weight_decay": 0.1}, "maximize, weight_decay"),
                ({"weight_decay": 0.1, "centered": True, "momentum": 0.1}, "momentum"),
                ({"weight_decay": 0.1, "centered": True, "momentum": 0.1, "maximize": True},
                 "maximize, centered, weight_decay, w/ momentum")],
}
GRID["AdamW"] = GRID["Adam"]  # (optim_inputs_func_adamw returns Adam's)
CASES = [(name, index) for name in ("SGD", "Adam", "AdamW", "RMSprop") for index in range(len(GRID[name]))]


def _torch_grid(torch, name):
    try:
        from torch.testing._internal import common_optimizers
    except ImportError:  # (it needs expecttest)
        return None
    inputs = getattr(common_optimizers, f"optim_inputs_func_{name.lower()}")("cpu")
    return [({key: ("tensor", float(value)) if isinstance(value, torch.Tensor) else value
              for key, value in item.kwargs.items()}, item.desc) for item in inputs]


def test_the_copied_grid_is_torchs():
    torch = pytest.importorskip("torch")
    found = {name: _torch_grid(torch, name) for name in GRID}
    if found["SGD"] is None:
        pytest.skip("torch's optimizer test grid does not import here (pip install expecttest)")
    assert found == GRID  # (a new torch with new CPU configurations: add them to GRID)
    assert sum(len(GRID[name]) for name in GRID) == 27


def _kwargs(torch, kwargs, tensors):
    return {key: (torch.tensor(value[1], dtype=torch.float32) if tensors else np.asarray(value[1]))
            if isinstance(value, tuple) and value[:1] == ("tensor",) else value for key, value in kwargs.items()}


@pytest.mark.parametrize("ops_name", ["fast", "generic"])
@pytest.mark.parametrize("name,index", CASES, ids=[f"{name}-{GRID[name][index][1]}" for name, index in CASES])
def test_every_cpu_configuration_of_torchs_grid_matches_torch_optim(name, index, ops_name):
    """30 float64 steps of fit against torch.optim.<name>(**kwargs) on the same MLP, weights and batches."""
    torch = pytest.importorskip("torch")
    kwargs, desc = GRID[name][index]
    rng = np.random.default_rng(index)
    X, y = rng.normal(size=(48, 5)), rng.integers(0, 3, size=48)
    model = mx.Sequential(mx.Linear(5, 12), mx.Tanh(), mx.Linear(12, 3), dtype="float64", seed=index)
    if ops_name == "generic":
        model.ops = None
    weights = {k: mx.to_numpy(v) for k, v in model.state_dict().items()}
    net = torch_twin(torch, model)
    ours = getattr(mx.optim, name)(**_kwargs(torch, kwargs, tensors=False))
    theirs = getattr(torch.optim, name)(net.parameters(), **_kwargs(torch, kwargs, tensors=True), foreach=False)
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=ours, epochs=30, batch_size=48, shuffle=False,
              verbose=0)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(30):
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        theirs.step()
    for layer in (0, 2):
        for part, theirs_value in (("weight", net[layer].weight.detach().numpy().T),
                                   ("bias", net[layer].bias.detach().numpy())):
            np.testing.assert_allclose(mx.to_numpy(model.state_dict()[f"{layer}.{part}"]), theirs_value,
                                       rtol=1e-10, atol=1e-13, err_msg=f"{name} {desc} {layer}.{part}")
    assert not np.allclose(mx.to_numpy(model.state_dict()["0.weight"]), weights["0.weight"])  # it trained
    if kwargs.get("amsgrad"):
        state = theirs.state[net[0].weight]
        ours_max = mx.to_numpy(model.optimizer_state.max_exp_avg_sq)[:60].reshape(5, 12)
        np.testing.assert_allclose(ours_max, state["max_exp_avg_sq"].numpy().T, rtol=1e-10)


def test_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    import inspect

    for name in ("SGD", "Adam", "AdamW", "RMSprop"):
        ours = inspect.signature(getattr(mx.optim, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        for key, parameter in ours.items():
            if key in theirs and key != "params":
                expected = theirs[key].default
                assert parameter.default == expected, (name, key, parameter.default, expected)


@pytest.mark.parametrize("make", [lambda: mx.optim.Adam(lr=1e-2, amsgrad=True, maximize=True, clip_norm=0.5),
                                  lambda: mx.optim.AdamW(amsgrad=True),
                                  lambda: mx.optim.SGD(lr=0.1, momentum=0.9, maximize=True),
                                  lambda: mx.optim.RMSprop(maximize=True, centered=True, momentum=0.3)])
def test_new_options_give_the_same_update_on_every_backend(make, backend):
    from mlp_xp._backend import resolve_backend

    from .conftest import numpy_of

    start, grads = np.array([1.0, -2.0, 0.5]), np.array([0.5, -1.0, 2.0])
    results = []
    for target in (resolve_backend("numpy"), resolve_backend(backend, backend.device)):
        optimizer = make()
        params = target.asarray(start, dtype=target.xp.float64)
        state = optimizer.init(params)
        for step in range(3):
            params, state = optimizer.update(target.asarray(grads * (step + 1), dtype=target.xp.float64), state,
                                             params, target.xp)
        results.append(numpy_of(params))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-14)


def test_amsgrad_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 4)), rng.integers(0, 2, size=32)
    model = mx.Sequential(mx.Linear(4, 3), mx.ReLU(), mx.Linear(3, 2), seed=0)
    optimizer = mx.optim.Adam(lr=1e-2, amsgrad=True, maximize=False)
    model.fit(X, y, mx.losses.CrossEntropy(), optimizer, epochs=2, batch_size=8, verbose=0)
    mx.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    loaded = mx.load(tmp_path / "m.safetensors")
    assert loaded.optimizer.amsgrad and np.array_equal(mx.to_numpy(loaded.optimizer_state.max_exp_avg_sq),
                                                       mx.to_numpy(model.optimizer_state.max_exp_avg_sq))
    model.fit(X, y, mx.losses.CrossEntropy(), optimizer, epochs=1, batch_size=8, verbose=0)
    loaded.fit(X, y, mx.losses.CrossEntropy(), loaded.optimizer, epochs=1, batch_size=8, verbose=0)
    assert np.array_equal(mx.to_numpy(loaded.params), mx.to_numpy(model.params))


@pytest.mark.parametrize("bad,match", [({"amsgrad": "yes"}, "amsgrad must be True or False"),
                                       ({"maximize": 1}, "maximize must be True or False"),
                                       ({"lr": np.array([0.1, 0.2])}, "lr must be a finite number")])
def test_bad_options_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        mx.optim.Adam(**bad)
