"""Optimizers: one hand-computed step each, float64 trajectories against torch.optim, clipping,
schedules, and the same update on every backend."""

import math

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp._backend import resolve_backend
from mlp_xp.optim import schedules

from .conftest import numpy_of, torch_twin

P0 = np.array([1.0, -2.0, 0.5])
G = np.array([0.5, -1.0, 2.0])


def _one_step(optimizer, params=P0, grads=G):
    state = optimizer.init(params)
    return optimizer.update(grads, state, params)[0]


def test_sgd_step():
    np.testing.assert_allclose(_one_step(mx.optim.SGD(lr=0.1)), P0 - 0.1 * G)
    # weight decay adds wd * p to the gradient
    np.testing.assert_allclose(_one_step(mx.optim.SGD(lr=0.1, weight_decay=0.01)), P0 - 0.1 * (G + 0.01 * P0))


def test_sgd_momentum_and_nesterov_two_steps():
    opt = mx.optim.SGD(lr=0.1, momentum=0.9)
    state = opt.init(P0)
    p1, state = opt.update(G, state, P0)          # buf = g
    p2, state = opt.update(G, state, p1)          # buf = 0.9 g + g
    np.testing.assert_allclose(p2, P0 - 0.1 * G - 0.1 * 1.9 * G)
    nesterov = mx.optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(_one_step(nesterov), P0 - 0.1 * (G + 0.9 * G))


def test_adam_first_step_is_lr_times_sign():
    # step 1: m = 0.1 g, v = 0.001 g^2 -> m / (1 - 0.9) / (sqrt(v / (1 - 0.999)) + eps) = g / (|g| + eps)
    expected = P0 - 1e-2 * G / (np.abs(G) + 1e-8)
    np.testing.assert_allclose(_one_step(mx.optim.Adam(lr=1e-2)), expected, rtol=1e-12)


def test_adamw_decays_before_the_step_and_adam_adds_l2():
    lr, wd = 1e-2, 0.1
    decayed = P0 * (1 - lr * wd)
    np.testing.assert_allclose(_one_step(mx.optim.AdamW(lr=lr, weight_decay=wd)),
                               decayed - lr * G / (np.abs(G) + 1e-8), rtol=1e-12)
    g = G + wd * P0
    np.testing.assert_allclose(_one_step(mx.optim.Adam(lr=lr, weight_decay=wd)), P0 - lr * g / (np.abs(g) + 1e-8),
                               rtol=1e-12)


def test_rmsprop_step():
    v = 0.01 * G * G
    np.testing.assert_allclose(_one_step(mx.optim.RMSprop(lr=0.01)), P0 - 0.01 * G / (np.sqrt(v) + 1e-8), rtol=1e-12)


def test_clip_norm_rescales_to_max_norm():
    norm = np.linalg.norm(G)
    clipped = _one_step(mx.optim.SGD(lr=1.0, clip_norm=1.0))
    np.testing.assert_allclose(P0 - clipped, G / (norm + 1e-6), rtol=1e-12)
    unclipped = _one_step(mx.optim.SGD(lr=1.0, clip_norm=100.0))
    np.testing.assert_allclose(unclipped, P0 - G)


TORCH_CASES = {
    "sgd": (lambda: mx.optim.SGD(lr=0.05), lambda t, p: t.optim.SGD(p, lr=0.05)),
    "sgd-momentum-wd": (lambda: mx.optim.SGD(lr=0.05, momentum=0.9, weight_decay=1e-3),
                        lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    "sgd-nesterov": (lambda: mx.optim.SGD(lr=0.05, momentum=0.8, nesterov=True),
                     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (lambda: mx.optim.Adam(lr=1e-2), lambda t, p: t.optim.Adam(p, lr=1e-2)),
    "adam-l2": (lambda: mx.optim.Adam(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2),
                lambda t, p: t.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2)),
    "adamw": (lambda: mx.optim.AdamW(lr=1e-2), lambda t, p: t.optim.AdamW(p, lr=1e-2)),
    "rmsprop": (lambda: mx.optim.RMSprop(lr=1e-3), lambda t, p: t.optim.RMSprop(p, lr=1e-3)),
    "rmsprop-centered-momentum": (
        lambda: mx.optim.RMSprop(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-3),
        lambda t, p: t.optim.RMSprop(p, lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-3)),
    "adam-clip": (lambda: mx.optim.Adam(lr=1e-2, clip_norm=0.5), lambda t, p: t.optim.Adam(p, lr=1e-2)),
    "sgd-momentum-dampening": (lambda: mx.optim.SGD(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3),
                               lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3)),
    "adamw-wd": (lambda: mx.optim.AdamW(lr=1e-2, betas=(0.85, 0.98), eps=1e-6, weight_decay=0.1),
                 lambda t, p: t.optim.AdamW(p, lr=1e-2, betas=(0.85, 0.98), eps=1e-6, weight_decay=0.1)),
}


@pytest.mark.parametrize("case", sorted(TORCH_CASES))
def test_float64_trajectory_matches_torch(case):
    """Train the same MLP for 50 steps with mlp_xp and with torch.nn + torch.optim."""
    torch = pytest.importorskip("torch")
    make_ours, make_torch = TORCH_CASES[case]
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 6)), rng.integers(0, 3, size=64)
    model = mx.Sequential(mx.Linear(6, 16), mx.Tanh(), mx.Linear(16, 3), dtype="float64", seed=3)
    weights = {k: mx.to_numpy(v) for k, v in model.state_dict().items()}
    net = torch_twin(torch, model)
    ours, theirs = make_ours(), make_torch(torch, net.parameters())
    Xt, yt = torch.tensor(X), torch.tensor(y)
    model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=ours, epochs=50, batch_size=64, shuffle=False, verbose=0)
    for _ in range(50):
        theirs.zero_grad()
        torch.nn.functional.cross_entropy(net(Xt), yt).backward()
        if ours.clip_norm:
            torch.nn.utils.clip_grad_norm_(net.parameters(), ours.clip_norm)
        theirs.step()
    for index in (0, 2):
        ours_w = mx.to_numpy(model.state_dict()[f"{index}.weight"])
        np.testing.assert_allclose(ours_w, net[index].weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(mx.to_numpy(model.state_dict()[f"{index}.bias"]),
                                   net[index].bias.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(ours_w, weights[f"{index}.weight"])  # it did train


@pytest.mark.parametrize("make", [lambda: mx.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda: mx.optim.Adam(clip_norm=0.3), lambda: mx.optim.AdamW(),
                                  lambda: mx.optim.RMSprop(momentum=0.5, centered=True)])
def test_same_update_on_every_backend(make, backend):
    be = resolve_backend(backend, backend.device)
    results = []
    for xp_backend in (resolve_backend("numpy"), be):
        optimizer = make()
        params = xp_backend.asarray(P0, dtype=xp_backend.xp.float64)
        state = optimizer.init(params)
        for _ in range(3):
            params, state = optimizer.update(xp_backend.asarray(G, dtype=xp_backend.xp.float64), state, params,
                                             xp_backend.xp)
        results.append(numpy_of(params))
    np.testing.assert_allclose(results[1], results[0], rtol=1e-14)


def test_schedules():
    assert schedules.constant(0.1)(1000) == 0.1
    step = schedules.step(1.0, step_size=10, gamma=0.5)
    assert [step(c) for c in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cosine = schedules.cosine(1.0, total_steps=100, final_lr=0.1)
    assert cosine(0) == 1.0 and cosine(100) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)
    assert cosine(50) == pytest.approx(0.55)
    warm = schedules.warmup(0.4, warmup_steps=4)
    assert [warm(c) for c in range(6)] == [0.1, 0.2, 0.30000000000000004, 0.4, 0.4, 0.4]


def test_schedule_drives_the_learning_rate():
    opt = mx.optim.SGD(lr=schedules.step(1.0, step_size=1, gamma=0.5))
    state = opt.init(P0)
    p1, state = opt.update(G, state, P0)
    p2, state = opt.update(G, state, p1)
    np.testing.assert_allclose(p2, P0 - 1.0 * G - 0.5 * G)


def test_cosine_matches_torch_scheduler():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.01)
    ours = schedules.cosine(0.3, total_steps=20, final_lr=0.01)
    for count in range(20):
        assert math.isclose(opt.param_groups[0]["lr"], ours(count), rel_tol=1e-12)
        opt.step(), sched.step()


@pytest.mark.parametrize("make,match", [
    (lambda: mx.optim.SGD(lr=-1), "lr must be"), (lambda: mx.optim.SGD(lr="fast"), "lr must be"),
    (lambda: mx.optim.SGD(nesterov=True), "Nesterov"), (lambda: mx.optim.Adam(betas=(1.0, 0.9)), "betas"),
    (lambda: mx.optim.Adam(clip_norm=0), "clip_norm"), (lambda: mx.optim.RMSprop(alpha=2), "alpha"),
    (lambda: schedules.cosine(0.1, total_steps=0), "total_steps"),
    (lambda: schedules.warmup(0.1, warmup_steps=0), "warmup_steps"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dampening_is_checked_and_excludes_nesterov():
    with pytest.raises(ValueError, match="dampening must be a finite number >= 0"):
        mx.optim.SGD(momentum=0.9, dampening=-0.1)
    with pytest.raises(ValueError, match="Nesterov momentum requires momentum > 0 and zero dampening"):
        mx.optim.SGD(momentum=0.9, nesterov=True, dampening=0.1)
