"""Learning-rate schedules at PyTorch parity: multistep (MultiStepLR), one_cycle (OneCycleLR),
cosine_warm_restarts (CosineAnnealingWarmRestarts) and warmup's start_factor / end_factor
(LinearLR, and SequentialLR around a base schedule), value by value on the host and in their
device form (numpy, array_api_strict on both its devices, every installed backend), per step and
per epoch; their arguments' errors; resolve and continue_schedule; mx.save / mx.load; fit."""

import warnings

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp.ops import GenericOps
from mlp_xp.optim import schedules

from .conftest import numpy_of

STEPS = 200
BASE_LR = 0.5


def _lr_scheduler():
    torch = pytest.importorskip("torch")
    return torch, torch.optim.lr_scheduler


def _torch_lrs(make, steps=STEPS, lr=BASE_LR):
    """The learning rate a torch SGD trains with at each of ``steps`` updates, under the scheduler
    ``make(optimizer)`` stepped once after each update (as a training loop does)."""
    torch, _ = _lr_scheduler()
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch's warnings about the order of step calls)
        scheduler = make(optimizer)
        lrs = []
        for _ in range(steps):
            lrs.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            scheduler.step()
    return lrs


# (id naming the torch scheduler, our schedule given its unit options, the torch scheduler, steps compared)
CASES = [
    ("MultiStepLR", lambda **unit: schedules.multistep(BASE_LR, [60, 10, 25, 25], gamma=0.3, **unit),
     lambda L, o: L.MultiStepLR(o, milestones=[60, 10, 25, 25], gamma=0.3), STEPS),
    ("MultiStepLR-no-milestones", lambda **unit: schedules.multistep(BASE_LR, [], **unit),
     lambda L, o: L.MultiStepLR(o, milestones=[]), 20),
    ("CosineAnnealingWarmRestarts",
     lambda **unit: schedules.cosine_warm_restarts(BASE_LR, T_0=10, eta_min=0.01, **unit),
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10, eta_min=0.01), STEPS),
    ("CosineAnnealingWarmRestarts-T_mult2",
     lambda **unit: schedules.cosine_warm_restarts(BASE_LR, T_0=3, T_mult=2, **unit),
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2), STEPS),
    ("CosineAnnealingWarmRestarts-T_mult3",
     lambda **unit: schedules.cosine_warm_restarts(BASE_LR, T_0=1, T_mult=3, eta_min=0.05, **unit),
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=1, T_mult=3, eta_min=0.05), STEPS),
    ("OneCycleLR", lambda **unit: schedules.one_cycle(0.8, total_steps=STEPS, **unit),
     lambda L, o: L.OneCycleLR(o, max_lr=0.8, total_steps=STEPS, cycle_momentum=False), STEPS),
    ("OneCycleLR-linear-three_phase",
     lambda **unit: schedules.one_cycle(0.8, STEPS, anneal_strategy="linear", three_phase=True, **unit),
     lambda L, o: L.OneCycleLR(o, max_lr=0.8, total_steps=STEPS, anneal_strategy="linear", three_phase=True,
                               cycle_momentum=False), STEPS),
    ("OneCycleLR-factors-three_phase",
     lambda **unit: schedules.one_cycle(0.8, 150, pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
                                        three_phase=True, **unit),
     lambda L, o: L.OneCycleLR(o, max_lr=0.8, total_steps=150, pct_start=0.25, div_factor=10.0,
                               final_div_factor=100.0, three_phase=True, cycle_momentum=False), 150),
    ("OneCycleLR-short", lambda **unit: schedules.one_cycle(0.8, total_steps=7, **unit),  # (a rise of 1.1 steps)
     lambda L, o: L.OneCycleLR(o, max_lr=0.8, total_steps=7, cycle_momentum=False), 7),
    ("LinearLR", lambda **unit: schedules.warmup(BASE_LR, 10, start_factor=0.1, **unit),
     lambda L, o: L.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10), STEPS),
    ("LinearLR-decay-to-0", lambda **unit: schedules.warmup(BASE_LR, 50, start_factor=1.0, end_factor=0.0, **unit),
     lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=50), STEPS),
    ("LinearLR-end_factor", lambda **unit: schedules.warmup(BASE_LR, 5, start_factor=0.25, end_factor=0.5, **unit),
     lambda L, o: L.LinearLR(o, start_factor=0.25, end_factor=0.5, total_iters=5), STEPS),
    ("SequentialLR-LinearLR-CosineAnnealingLR",  # (compared while torch's cosine has not turned back up)
     lambda **unit: schedules.warmup(schedules.cosine(BASE_LR, 100, **unit), 10, start_factor=0.1, **unit),
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=10),
                                     L.CosineAnnealingLR(o, T_max=100)], milestones=[10]), 111),
    ("SequentialLR-LinearLR-MultiStepLR",
     lambda **unit: schedules.warmup(schedules.multistep(BASE_LR, [20, 50], gamma=0.5, **unit), 8, start_factor=0.2,
                                     **unit),
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.2, total_iters=8),
                                     L.MultiStepLR(o, milestones=[20, 50], gamma=0.5)], milestones=[8]), STEPS),
    ("LinearLR-default-warmup", lambda **unit: schedules.warmup(BASE_LR, 10, **unit),  # base/W ... base
     lambda L, o: L.LinearLR(o, start_factor=0.1, total_iters=9), STEPS),
]
IDS = [case[0] for case in CASES]


def _close(ours, reference, scale):
    """Equal to 1e-12 relative (to 1e-15 of the schedule's scale near 0, where torch's running products
    stop a rounding short of it)."""
    return abs(ours - reference) <= 1e-12 * max(abs(ours), abs(reference)) + 1e-15 * scale


def _device_forms():
    """The device form's evaluators: the generic ops on numpy, array_api_strict and its second
    device, and numpy's fast ops."""
    strict = pytest.importorskip("array_api_strict")
    from mlp_xp.ops.numpy_ops import UfuncOps

    return {"numpy": GenericOps(np), "numpy-ufunc": UfuncOps(np), "array_api_strict": GenericOps(strict),
            "array_api_strict:device1": GenericOps(strict, strict.Device("device1"))}


def _on_device(schedule, ops, count):
    value = schedule.on_device(ops, ops.as_scalar(ops.xp.asarray(count, device=ops.device)))
    if hasattr(value, "dtype"):
        assert value.shape == () and value.dtype == ops.xp.float64
        if ops.device is not None:
            assert value.device == ops.device
    return float(value)


@pytest.mark.parametrize("name,make,torch_scheduler,steps", CASES, ids=IDS)
def test_each_step_equals_the_torch_scheduler(name, make, torch_scheduler, steps):
    _, L = _lr_scheduler()
    reference = _torch_lrs(lambda optimizer: torch_scheduler(L, optimizer), steps)
    schedule = make()
    assert schedule.has_device_form()
    scale = max(reference)
    for count in range(steps):
        assert _close(schedule(count), reference[count], scale), (count, schedule(count), reference[count])
    for where, ops in _device_forms().items():
        for count in range(steps):
            value = _on_device(schedule, ops, count)
            assert _close(value, reference[count], scale), (where, count, value, reference[count])


@pytest.mark.parametrize("name,make,torch_scheduler,steps", CASES, ids=IDS)
def test_per_epoch_steps_the_torch_scheduler_once_an_epoch(name, make, torch_scheduler, steps):
    _, L = _lr_scheduler()
    epochs, steps_per_epoch = min(steps, 60), 3
    reference = _torch_lrs(lambda optimizer: torch_scheduler(L, optimizer), epochs)
    schedule = make(per="epoch", steps_per_epoch=steps_per_epoch)
    scale = max(reference)
    forms = _device_forms()
    for count in range(epochs * steps_per_epoch):
        expected = reference[count // steps_per_epoch]
        assert _close(schedule(count), expected, scale), (count, schedule(count), expected)
        for where in ("numpy", "array_api_strict:device1"):
            assert _close(_on_device(schedule, forms[where], count), expected, scale), (where, count)


@pytest.mark.parametrize("name,make", [(case[0], case[1]) for case in CASES[::2]], ids=IDS[::2])
def test_the_training_steps_rate_matches_the_host_on_every_backend(name, make, backend):
    """What an optimizer computes in the training step (the device form, at its device count) is the
    schedule's host value, on every installed backend and device."""
    model = mx.Sequential(mx.Linear(3, 2), seed=0, dtype="float64", **backend.options)
    optimizer = mx.optim.SGD(lr=make())
    assert not optimizer.lr_on_host
    zero = optimizer._zero_count(model.params)
    for count in [0, 1, 2, 3, 9, 10, 11, 24, 25, 26, 44, 45, 46, 59, 60, 61, 92, 93, 94, 149, 150, 199]:
        lr = optimizer._lr(model.ops, zero + count, model.params.dtype)
        assert float(lr) == pytest.approx(optimizer.learning_rate(count), rel=1e-12, abs=1e-15), count


def test_default_warmup_is_unchanged_bit_for_bit():
    """warmup without start_factor climbs base(0) * (t + 1) / warmup_steps, exactly as before."""
    base = schedules.cosine(0.3, total_steps=40, final_lr=0.01)
    warm = schedules.warmup(base, warmup_steps=7)
    assert warm.start_factor is None and warm.end_factor == 1.0
    for count in range(60):
        expected = base.value(0) * (count + 1) / 7 if count < 7 else base.value(count - 7)
        assert warm(count) == expected
    ops = GenericOps(np)
    for count in range(60):
        t = ops.as_scalar(count)
        assert float(warm.on_device(ops, t)) == float(np.where(t < 7, base.value(0) * (t + 1.0) / 7,
                                                               base.device_value(ops, t - 7)))


@pytest.mark.parametrize("T_0,T_mult", [(1, 2), (1, 3), (5, 2), (3, 7)])
def test_warm_restarts_device_form_finds_the_cycle_at_every_restart(T_0, T_mult):
    """Around each restart up to 2**52 steps, where the device form's logarithm rounds across the
    restart (both ways), it settles on the cycle the host's integer arithmetic (torch's) counts."""
    schedule = schedules.cosine_warm_restarts(1.0, T_0=T_0, T_mult=T_mult, eta_min=0.1)
    ops = GenericOps(np)
    cycle = 1
    while T_0 * (T_mult ** cycle - 1) // (T_mult - 1) < 2 ** 52:
        start = T_0 * (T_mult ** cycle - 1) // (T_mult - 1)
        for count in (max(start - 2, 0), start - 1, start, start + 1):
            assert _on_device(schedule, ops, count) == pytest.approx(schedule(count), rel=1e-12), count
        assert schedule(start) == 1.0
        cycle += 1


def test_one_cycle_stays_at_its_minimum_after_total_steps():
    """torch raises past total_steps; the schedule holds its last rate (fit may run longer)."""
    schedule = schedules.one_cycle(1.0, total_steps=30, div_factor=5.0, final_div_factor=20.0)
    last = schedule(29)
    assert last == pytest.approx(1.0 / 5.0 / 20.0, rel=1e-12)
    ops = GenericOps(np)
    for count in (30, 31, 100):
        assert schedule(count) == last and _on_device(schedule, ops, count) == pytest.approx(last, rel=1e-14)


def test_multistep_keeps_its_milestones_sorted_as_a_tuple():
    schedule = schedules.multistep(1.0, milestones=[9, 3, 3], gamma=0.5)
    assert schedule.milestones == (3, 3, 9) and schedule == schedules.multistep(1.0, (3, 3, 9), gamma=0.5)
    assert [schedule(c) for c in (2, 3, 8, 9)] == [1.0, 0.25, 0.25, 0.125]
    hash(schedule)  # (frozen: usable as a key, like the others)


@pytest.mark.parametrize("make,match", [
    (lambda: schedules.multistep(0.1, "30"), "milestones must be a list of ints >= 0"),
    (lambda: schedules.multistep(0.1, 30), "milestones must be a list of ints >= 0"),
    (lambda: schedules.multistep(0.1, [10, -1]), r"milestones must be a list of ints >= 0, got \[10, -1\] \(with -1\)"),
    (lambda: schedules.multistep(0.1, [10.5]), "milestones must be a list of ints >= 0"),
    (lambda: schedules.multistep(0.1, [True]), "milestones must be a list of ints >= 0"),
    (lambda: schedules.multistep(0.1, [10], gamma=-0.5), r"gamma must be a finite number in \[0, inf\)"),
    (lambda: schedules.multistep(float("nan"), [10]), "lr must be a finite number"),
    (lambda: schedules.multistep(lambda c: 0.1, [10]), "lr must be a finite number"),
    (lambda: schedules.multistep(0.1, [10], per="batch"), "per must be one of"),
    (lambda: schedules.cosine_warm_restarts(0.1, T_0=0), "T_0 must be an int >= 1"),
    (lambda: schedules.cosine_warm_restarts(0.1, T_0=2.5), "T_0 must be an int >= 1"),
    (lambda: schedules.cosine_warm_restarts(0.1, T_0=5, T_mult=0), "T_mult must be an int >= 1"),
    (lambda: schedules.cosine_warm_restarts(0.1, T_0=5, T_mult=1.5), "T_mult must be an int >= 1"),
    (lambda: schedules.cosine_warm_restarts(0.1, T_0=5, eta_min=-0.1), "eta_min must be a finite number"),
    (lambda: schedules.cosine_warm_restarts(-0.1, T_0=5), "lr must be a finite number"),
    (lambda: schedules.one_cycle(-1.0), "max_lr must be a finite number"),
    (lambda: schedules.one_cycle(1.0, total_steps=0), "total_steps must be an int >= 1 or None"),
    (lambda: schedules.one_cycle(1.0, pct_start=1.0), r"pct_start must be a finite number in \[0, 1\)"),
    (lambda: schedules.one_cycle(1.0, pct_start=-0.1), "pct_start must be"),
    (lambda: schedules.one_cycle(1.0, anneal_strategy="cosine"), "anneal_strategy must be one of"),
    (lambda: schedules.one_cycle(1.0, div_factor=0.0), r"div_factor must be a finite number in \(0, inf\)"),
    (lambda: schedules.one_cycle(1.0, final_div_factor=float("inf")), "final_div_factor must be a finite number"),
    (lambda: schedules.one_cycle(1.0, three_phase="yes"), "three_phase must be True or False"),
    (lambda: schedules.one_cycle(1.0, total_steps=10, pct_start=0.1), "phase 1 zero steps long"),
    (lambda: schedules.one_cycle(1.0, total_steps=10, pct_start=0.55, three_phase=True), "phase 3 zero steps long"),
    (lambda: schedules.warmup(0.1, 5, start_factor=1.5), r"start_factor must be a finite number in \[0, 1\]"),
    (lambda: schedules.warmup(0.1, 5, start_factor=True), "start_factor must be a finite number"),
    (lambda: schedules.warmup(0.1, 5, start_factor=0.1, end_factor=-0.1), "end_factor must be a finite number"),
    (lambda: schedules.warmup(0.1, 5, end_factor=0.5), "end_factor=0.5 needs a start_factor"),
])
def test_bad_arguments_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_one_cycle_without_total_steps_says_what_is_missing():
    schedule = schedules.one_cycle(1.0)
    with pytest.raises(ValueError, match="no total_steps: give it one, or use it in fit"):
        schedule(3)
    with pytest.raises(ValueError, match="no total_steps"):
        schedule.on_device(GenericOps(np), GenericOps(np).as_scalar(3))


def test_resolve_fills_one_cycles_length():
    assert schedules.resolve(schedules.one_cycle(1.0), steps_per_epoch=5, epochs=4).total_steps == 20
    epochs = schedules.resolve(schedules.one_cycle(1.0, per="epoch"), steps_per_epoch=5, epochs=4)
    assert epochs.total_steps == 4 and epochs.steps_per_epoch == 5
    warm = schedules.resolve(schedules.warmup(schedules.one_cycle(1.0), 6, start_factor=0.5), 5, 4)
    assert warm.base.total_steps == 14 and warm.start_factor == 0.5
    for complete in (schedules.multistep(1.0, [3]), schedules.cosine_warm_restarts(1.0, 4),
                     schedules.one_cycle(1.0, total_steps=7)):
        assert schedules.resolve(complete, steps_per_epoch=5, epochs=4) is complete
    with pytest.raises(ValueError, match="phase 1 zero steps long"):  # (a length fit sets that one_cycle refuses)
        schedules.resolve(schedules.one_cycle(1.0, pct_start=0.1), steps_per_epoch=5, epochs=2)


def test_continue_schedule_resumes_an_open_one_cycle():
    saved = schedules.one_cycle(0.5, total_steps=40)
    assert schedules.continue_schedule(schedules.one_cycle(0.5), saved, count=20) == saved
    with pytest.raises(ValueError, match="leaves its length open"):
        schedules.continue_schedule(schedules.one_cycle(0.9), saved, count=20)
    assert schedules.continue_schedule(schedules.one_cycle(0.5), saved, count=39) == saved  # (its last update)
    with pytest.raises(ValueError, match="ended at update 40 and the checkpoint is at update 40"):
        schedules.continue_schedule(schedules.one_cycle(0.5), saved, count=40)
    warm = schedules.warmup(schedules.one_cycle(0.5, total_steps=30), 10, start_factor=0.2)
    assert schedules.continue_schedule(schedules.warmup(schedules.one_cycle(0.5), 10, start_factor=0.2), warm,
                                       count=12) == warm
    for complete in (schedules.multistep(1.0, [3]), schedules.cosine_warm_restarts(1.0, 4)):  # (taken as given)
        assert schedules.continue_schedule(complete, saved, count=20) is complete


# ---------------------------------------------------------------- in fit, saved, loaded, resumed

rng = np.random.default_rng(0)
X = rng.normal(size=(60, 4))
LABELS = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
SPE = 4  # (steps per epoch at batch_size 16)

FIT_SCHEDULES = {
    "multistep": lambda: schedules.multistep(0.2, [3, 9], gamma=0.5),
    "multistep-epoch": lambda: schedules.multistep(0.2, [1, 2], gamma=0.5, per="epoch"),
    "one_cycle": lambda: schedules.one_cycle(0.3),
    "one_cycle-epoch": lambda: schedules.one_cycle(0.3, pct_start=0.4, three_phase=True, per="epoch"),
    "cosine_warm_restarts": lambda: schedules.cosine_warm_restarts(0.2, T_0=3, T_mult=2, eta_min=0.01),
    "cosine_warm_restarts-epoch": lambda: schedules.cosine_warm_restarts(0.2, T_0=2, per="epoch"),
    "linear-warmup": lambda: schedules.warmup(schedules.one_cycle(0.3), 3, start_factor=0.25),
    "linear-decay": lambda: schedules.warmup(0.2, 12, start_factor=1.0, end_factor=0.0),
}


def _model(**options):
    return mx.Sequential(mx.Linear(4, 8), mx.ReLU(), mx.Linear(8, 3), seed=1, dtype="float64", **options)


def _fit(model, optimizer, epochs=3, **options):
    return model.fit(X, LABELS, loss=mx.losses.CrossEntropy(), optimizer=optimizer, epochs=epochs, batch_size=16,
                     verbose=0, **options)


@pytest.mark.parametrize("name", list(FIT_SCHEDULES))
def test_fit_trains_with_each_schedule_and_logs_its_rate(name):
    optimizer = mx.optim.SGD(lr=FIT_SCHEDULES[name]())
    model = _model()
    history = _fit(model, optimizer)
    assert np.all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert history["lr"] == [optimizer.lr(SPE * epoch - 1) for epoch in (1, 2, 3)]
    assert len(set(optimizer.lr(count) for count in range(3 * SPE))) > 1  # (the rate did change)
    # the device form the step used is the host schedule: the same training with the host's numbers
    host = _model()
    _fit(host, mx.optim.SGD(lr=lambda count, schedule=optimizer.lr: schedule(count)))
    np.testing.assert_allclose(numpy_of(model.params), numpy_of(host.params), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["one_cycle", "cosine_warm_restarts", "multistep"])
def test_fit_on_a_second_device_follows_the_schedule(name):
    strict = pytest.importorskip("array_api_strict")
    model = _model(backend="array_api_strict", device=strict.Device("device1"))
    optimizer = mx.optim.SGD(lr=FIT_SCHEDULES[name]())
    history = _fit(model, optimizer)
    reference = _model()
    _fit(reference, mx.optim.SGD(lr=FIT_SCHEDULES[name]()))
    assert history["lr"] == [optimizer.lr(SPE * epoch - 1) for epoch in (1, 2, 3)]
    np.testing.assert_allclose(numpy_of(model.params), numpy_of(reference.params), rtol=1e-12, atol=1e-14)


def test_fit_refuses_a_one_cycle_it_would_divide_by_zero_before_training():
    model = _model()
    before = numpy_of(model.params)
    with pytest.raises(ValueError, match="phase 1 zero steps long"):  # (pct_start * 5 epochs * 2 steps = 1)
        model.fit(X[:40], LABELS[:40], loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.SGD(lr=schedules.one_cycle(0.3, pct_start=0.1)), epochs=5, batch_size=20,
                  verbose=0)
    assert np.array_equal(numpy_of(model.params), before)


@pytest.mark.parametrize("name", list(FIT_SCHEDULES))
def test_each_schedule_saves_and_loads(name, tmp_path):
    optimizer = mx.optim.Adam(lr=FIT_SCHEDULES[name]())
    model = _model()
    _fit(model, optimizer, epochs=2)
    mx.save(model, tmp_path / "m.safetensors", optimizer=optimizer)
    loaded = mx.load(tmp_path / "m.safetensors").optimizer.lr
    assert loaded == optimizer.lr and type(loaded) is type(optimizer.lr)
    assert [loaded(count) for count in range(20)] == [optimizer.lr(count) for count in range(20)]


def test_a_resumed_one_cycle_continues_the_interrupted_run(tmp_path):
    """A 4-epoch run cut after 2 and resumed with one_cycle() (its length open) trains exactly as the
    run that was not cut."""
    straight = _model()
    full = _fit(straight, mx.optim.SGD(lr=schedules.one_cycle(0.3)), epochs=4)
    first = _model()
    _fit(first, mx.optim.SGD(lr=schedules.one_cycle(0.3)), epochs=4,
         callbacks=[mx.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.safetensors")), _StopAfter(2)])
    fresh = _model()
    optimizer = mx.optim.SGD(lr=schedules.one_cycle(0.3))
    resumed = _fit(fresh, optimizer, epochs=2, resume_from=tmp_path / "ck-02.safetensors")
    assert optimizer.lr.total_steps == 4 * SPE
    assert resumed["lr"] == full["lr"][2:]
    np.testing.assert_array_equal(numpy_of(fresh.params), numpy_of(straight.params))


class _StopAfter(mx.callbacks.Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs, model):
        return epoch >= self.epochs

