"""Help and types: ``help(model.fit)`` shows the parameters, and ``mypy --strict`` on a user script flags wrong
argument types (the package ships ``py.typed``; its public signatures are annotated)."""

import inspect
import pathlib
import re
import shutil

import pytest

import mlp_xp as mx
from mlp_xp.train import loop

#: a user script, one deliberate type error per line marked "# error"
WRONG = """\
import mlp_xp as mx

X, y = mx.datasets.load_digits()
layer = mx.Linear("4", 8)  # error
model = mx.Sequential(mx.Linear(64, 10), mx.Softmax(), seed="0")  # error
model.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.SGD(), epochs="10")  # error
optimizer = mx.optim.Adam(lr="fast")  # error
drop = mx.Dropout(p=None)  # error
loaded = mx.load(3)  # error
loss = mx.losses.CrossEntropy(reduction="average")  # error
stop = mx.callbacks.EarlyStopping(patience=2.5)  # error
X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, test_size="20%")  # error
model.save(path=None)  # error
"""

#: the README's example, and more of the public API, as a user writes it
RIGHT = """\
import pathlib

import numpy as np
import mlp_xp as mx

X, y = mx.datasets.load_digits()
X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
X_train, X_test = mx.datasets.standardize(X_train, X_test)
scaler = mx.datasets.Standardizer().fit(X_train)

model = mx.Sequential(mx.Linear(64, 128), mx.ReLU(), mx.Dropout(0.1), mx.Linear(128, 10), mx.Softmax(),
                      backend="numpy", dtype="float32", seed=0)
optimizer = mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-3, total_steps=100), betas=(0.9, 0.99))
history = model.fit(X_train, y_train, loss=mx.losses.CrossEntropy(label_smoothing=0.1), optimizer=optimizer,
                    epochs=2, batch_size=32, validation_data=(X_test, y_test), verbose=0,
                    callbacks=[mx.callbacks.EarlyStopping(patience=3, restore_best_weights=True),
                               mx.callbacks.CSVLogger(pathlib.Path("log.csv"))])
scores: dict[str, float] = model.evaluate(X_test, y_test, loss="cross_entropy", metrics=["accuracy"])
probabilities = mx.to_numpy(model.predict(X_test[:5]))
labels = np.argmax(probabilities, axis=1)
model.save(pathlib.Path("model.safetensors"), optimizer=optimizer)
again = mx.load("model.safetensors", dtype="float64")
again.load_state_dict(model.state_dict())
text: str = again.to(backend="numpy").summary()
table = mx.datasets.load_table("data.csv", target="label")
regressor = mx.Sequential(mx.Linear(3, 16, activation="relu"), mx.LayerNorm(16), mx.BatchNorm(16),
                          mx.Linear(16, 1))
regressor.fit(np.zeros((8, 3)), np.zeros(8), loss=mx.losses.Huber(delta=2.0),
              optimizer=mx.optim.SGD(lr=0.1, momentum=0.9),
              epochs=1, callbacks=[mx.callbacks.LearningRateScheduler(lambda epoch: 0.1 / epoch),
                                   mx.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: print(logs))])
steps = mx.optim.RMSprop(lr=mx.optim.schedules.multistep(0.1, milestones=[2, 4]))
warm = mx.optim.AdamW(lr=mx.optim.schedules.warmup(lambda count: 0.01, 10), weight_decay=0.1)
"""


def _mypy(tmp_path, scripts):
    """mypy --strict's error lines for each script, by script name: [(line, message)]. mypy checks a copy of
    the installed package (an editable install's import hook is invisible to it); errors inside it are not
    reported (--follow-imports=silent), only the scripts'."""
    api = pytest.importorskip("mypy.api")
    shutil.copytree(pathlib.Path(mx.__file__).parent, tmp_path / "mlp_xp",
                    ignore=shutil.ignore_patterns("__pycache__", "*.npz"))
    paths = []
    for name, text in scripts.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    stdout, stderr, status = api.run(["--strict", "--follow-imports=silent", "--no-pretty",
                                      "--cache-dir", str(tmp_path / ".mypy_cache"), *paths])
    assert status in (0, 1), stderr + stdout
    errors = {name: [] for name in scripts}
    for match in re.finditer(r"^(.*?):(\d+): error: (.*)$", stdout, re.M):
        name = pathlib.Path(match[1]).name
        assert name in errors, f"mypy reported an error outside the scripts:\n{stdout}"
        errors[name].append((int(match[2]), match[3]))
    return errors, stdout


def test_mypy_strict_flags_wrong_argument_types_and_passes_correct_use(tmp_path):
    errors, output = _mypy(tmp_path, {"wrong.py": WRONG, "right.py": RIGHT})
    expected = {number for number, line in enumerate(WRONG.splitlines(), 1) if line.endswith("# error")}
    flagged = {number for number, message in errors["wrong.py"]
               if message.endswith(("[arg-type]", "[call-overload]"))}
    assert flagged == expected, output
    assert errors["right.py"] == [], output


def _sections(doc):
    """{section: text} of a cleaned Google-style docstring, and {parameter: text} of its Args."""
    sections = dict(re.findall(r"^(\w+):\n(.*?)(?=^\S|\Z)", doc, re.M | re.S))
    return sections, dict(re.findall(r"^    (\w+): (.*?)(?=^    \S|\Z)", sections.get("Args", ""), re.M | re.S))


@pytest.mark.parametrize("name", ["fit", "evaluate", "predict"])
def test_help_shows_the_parameters(name):
    method, function = getattr(mx.Sequential, name), getattr(loop, name)
    sections, args = _sections(inspect.getdoc(method))
    assert {"Args", "Returns", "Raises"} <= set(sections)
    assert list(args) == list(inspect.signature(method).parameters)[1:]
    # what mlp_xp.train.loop says, the method says in the same words (they cannot drift apart)
    function_sections, function_args = _sections(inspect.getdoc(function))
    assert {key: text for key, text in function_args.items() if key != "model"}.items() <= args.items()
    for section in ("Returns", "Raises"):
        assert function_sections.get(section, sections[section]) == sections[section]
