"""The ``mlp-xp`` command line.

- ``mlp-xp train``: train an MLP on the bundled digits, or on your own CSV / .npz / .npy
  data (``--data FILE``), and save it with its preprocessing (``--save model.safetensors``);
- ``mlp-xp predict MODEL --data FILE``: predictions in the original labels or units;
- ``mlp-xp evaluate MODEL --data FILE``: loss and metrics on labelled data;
- ``mlp-xp compare``: one model under several backends and precisions.

Every failure is one line on stderr and a non-zero exit status (2 for bad input, 1 for a
failed run, 130 for Ctrl-C); set ``MLP_XP_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .nn.layers import ACTIVATIONS
from .optim import OPTIMIZERS

TASKS = ("auto", "classification", "regression")
DEFAULT_COMPARE = ("numpy:float64", "numpy:float32", "numpy:tf32", "numpy:bfloat16", "numpy:float16",
                   "array_api_strict:float32", "torch:float32", "torch:bfloat16", "jax:float32", "cupy:float32",
                   "cupy:tf32", "cupy:float16", "cupy:bfloat16")
#: whole-number targets with more distinct values than this are taken as a regression target by --task auto
MAX_AUTO_CLASSES = 20
MISSING_CHOICES = ("error", "drop", "mean", "median")


class UsageError(ValueError):
    """Bad input from the command line (exit status 2)."""


def _hidden_layers(text):
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated widths like 128,64, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"--layers widths must be >= 1, got {text!r}")
    return widths


def _number(convert, accept, requirement):
    """An argparse type: ``convert(text)``, refused unless ``accept(value)``."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if convert is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda value: value >= 1, ">= 1")
_positive_float = _number(float, lambda value: 0 < value < float("inf"), "a finite number > 0")
_fraction = _number(float, lambda value: 0 <= value < 1, "in [0, 1)")


def _add_model_flags(parser, epochs):
    parser.add_argument("--layers", type=_hidden_layers, default=[128, 64], help="hidden layer widths, comma-separated")
    parser.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu", help="activation after each hidden layer")
    parser.add_argument("--epochs", type=_positive_int, default=epochs, help="passes over the training data")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="samples per optimizer step")
    parser.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam", help="optimizer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, the split and the batch order")


def _add_backend_flags(parser, dtype=True):
    parser.add_argument("--backend", default="numpy", help="numpy, array_api_strict, cupy, torch or jax")
    parser.add_argument("--device", default=None, help="the backend's device, e.g. cuda:0 for torch "
                        "(default: the backend's default device)")
    if dtype:
        parser.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="floating-point type")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's default in its help, except None and False: those helps say what happens
    without the flag ("(default: None)" beside "default: the last column" only confused)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    from . import __version__

    formatter = _DefaultsFormatter
    parser = argparse.ArgumentParser(prog="mlp-xp", description="Array-API MLPs: NumPy, CuPy, PyTorch, JAX.")
    parser.add_argument("--version", action="version", version=f"mlp-xp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,predict,evaluate,compare}")

    train = commands.add_parser("train", formatter_class=formatter,
                                help="train an MLP on the bundled digits or on your data (CSV, .npz, .npy)",
                                description="Train an MLP and report its accuracy (or R2) on held-out data.")
    train.add_argument("--data", default=None, help="CSV with a header row, .npz with arrays X and y, or .npy "
                       "features (default: the bundled digits data set, offline)")
    train.add_argument("--target", default=None, help="the target: a CSV column (default: the last one), an .npz "
                       "key (default: y), or the .npy file of targets for .npy features")
    train.add_argument("--features", default=None, help="comma-separated CSV feature columns (default: every "
                       "column but the target, the --drop ones and index or id columns)")
    train.add_argument("--drop", default=None, help="comma-separated CSV columns to leave out")
    train.add_argument("--missing", choices=MISSING_CHOICES, default="error",
                       help="missing values (empty, NA, nan, ?...): error names the columns; drop the rows; fill "
                       "features with the training rows' mean or median (text: the most frequent category) and "
                       "drop rows whose target is missing")
    train.add_argument("--task", choices=TASKS, default="auto", help="auto: classification for text or True/False "
                       f"targets and for whole numbers with at most {MAX_AUTO_CLASSES} distinct values that are "
                       "not sparse; regression for other numbers")
    _add_model_flags(train, epochs=20)
    train.add_argument("--dropout", type=_fraction, default=0.0, help="dropout after each hidden layer")
    train.add_argument("--weight-decay", type=_number(float, lambda value: 0 <= value < float("inf"), ">= 0"),
                       default=None, help="the optimizer's weight decay (default: its own, 0 but for adamw)")
    train.add_argument("--class-weight", choices=("balanced",), default=None,
                       help="weigh each class by rows / (classes x rows of the class) in the loss")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                       help="hold out 10%% of the training rows and stop when their loss has not improved for "
                       "this many epochs, keeping the best epoch's weights")
    train.add_argument("--test-size", type=_fraction, default=0.25,
                       help="fraction held out to validate each epoch and test at the end (0: none)")
    train.add_argument("--no-standardize", action="store_true",
                       help="use the features (and regression targets) as they are, unscaled")
    _add_backend_flags(train)
    train.add_argument("--save", default=None, help="write the trained model, with its preprocessing and class "
                       "labels, to this .safetensors file")
    train.add_argument("--json", default=None, help="write the history and the test metrics to this JSON file")
    train.add_argument("--plot", default=None, help="write the loss and metric curves to this PNG (needs matplotlib)")
    train.add_argument("--quiet", action="store_true", help="print only the final result")
    train.add_argument("--distributed", choices=("auto", "off", "mpi"), default="auto",
                       help="data-parallel training over processes; auto: MPI when started by mpiexec with "
                       "several processes (only process 0 prints and writes files)")

    predict = commands.add_parser("predict", formatter_class=formatter, help="predict with a saved model",
                                  description="Predict with a model saved by `mlp-xp train --save`: the same "
                                  "preprocessing is applied and classes come back as their original labels.")
    predict.add_argument("model", help="the .safetensors file written by mlp-xp train --save (or mx.save)")
    predict.add_argument("--data", required=True, help="CSV (the model's feature columns are picked by name; "
                         "other columns are ignored), .npz (array X) or .npy")
    predict.add_argument("--output", default=None, help="write the predictions to this CSV (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="also write each class's probability")
    predict.add_argument("--id", default=None, help="a CSV column copied into the output's first column (default: "
                         "the index or id column the model left out in training, if the file has it)")
    _add_backend_flags(predict, dtype=False)

    evaluate = commands.add_parser("evaluate", formatter_class=formatter, help="score a saved model on labelled data",
                                   description="Loss and metrics of a saved model on labelled data.")
    evaluate.add_argument("model", help="the .safetensors file written by mlp-xp train --save (or mx.save)")
    evaluate.add_argument("--data", required=True, help="CSV, .npz or .npy file with features and targets")
    evaluate.add_argument("--target", default=None, help="the target column / key / .npy file (default: the "
                          "column the model was trained on, or the last one)")
    evaluate.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    _add_backend_flags(evaluate, dtype=False)

    compare = commands.add_parser("compare", formatter_class=formatter,
                                  help="train one model under several backends/precisions and compare losses, "
                                  "parameters, accuracy, speed and memory")
    compare.add_argument("--configs", default=",".join(DEFAULT_COMPARE),
                         help="comma-separated backend:precision list; the first is the reference")
    _add_model_flags(compare, epochs=3)
    compare.add_argument("--json", default=None, help="write the full results (curves included) here")
    compare.add_argument("--plot", default=None, help="write loss and divergence curves to this PNG")
    return parser


# ---------------------------------------------------------------------------- checks before work


def _check_output(path, flag):
    """A file we will write at the end: refuse now, not after the run, if it cannot be written."""
    if path is not None:
        from .io import check_writable

        check_writable(path, flag)


def _check_plotting(path):
    if path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'mlp_xp[plot]'") from None


def _prepare_backend(backend, dtype):
    """JAX computes float64 only in 64-bit mode: the command line owns its process, so turn it on."""
    if backend == "jax" and dtype == "float64":
        try:
            import jax
        except ImportError:
            return  # resolve_backend says what to install
        jax.config.update("jax_enable_x64", True)


def _check_training_memory(model, batch_size, widths):
    from ._backend import check_memory

    on_host = model.backend.name in ("numpy", "array_api_strict") or (
        model.backend.name in ("jax", "torch") and str(model.backend.device or "cpu") == "cpu")
    if on_host:
        itemsize = model.backend.dtype_itemsize(model.dtype_name)
        # parameters, gradient, two optimizer moments and a scratch buffer; activations of one batch
        needed = itemsize * (5 * model.num_parameters + 4 * batch_size * sum(widths))
        check_memory(needed, f"training {model.num_parameters:,} parameters with batches of {batch_size}")


# ---------------------------------------------------------------------------- data


def _csv_like(path):
    return os.path.splitext(path)[1].lower() in (".csv", ".tsv", ".txt")


def _names(text, flag):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError(f"{flag} takes comma-separated column names, got {text!r}")
    return names


class _Data:
    """Training data ready for a model: the split, the encoded target, what was done and why."""

    def __init__(self, **values):
        self.__dict__.update(values)


def _training_data(args):
    """The data of ``mlp-xp train``: read, columns chosen, missing values handled, the task chosen,
    the target encoded, the rows split, and (CSV) the feature columns encoded by a TablePlan fitted
    on the training rows."""
    import numpy as np

    from .data import datasets

    notes = []
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the bundled digits have their own labels)")
        X, y = datasets.load_digits()
        return _split_arrays(args, X, y, tuple(f"pixel_{i}" for i in range(X.shape[1])), "digit", "digits", notes)
    for flag in ("features", "drop"):
        if getattr(args, flag) is not None and not _csv_like(args.data):
            raise UsageError(f"--{flag} takes column names of a CSV file")
    if args.missing != "error" and not _csv_like(args.data):
        raise UsageError("--missing applies to CSV files (.npz and .npy data are numbers already)")
    if not _csv_like(args.data):
        table = datasets.load_table(args.data, target=args.target)
        y = np.asarray(table.y)
        if y.dtype.kind not in "biufUS" and y.dtype != object:
            raise UsageError(f"the target has dtype {y.dtype}; give numbers or text labels")
        return _split_arrays(args, table.X, y, table.feature_names, table.target_name,
                             os.path.basename(args.data), notes)
    return _split_table(args, notes)


def _split_table(args, notes):
    import numpy as np

    from .data import tables

    if not os.path.isfile(args.data):
        raise FileNotFoundError(f"no such data file: {args.data!r}")
    raw = tables.read_csv(args.data)
    header = list(raw.header)
    target = args.target if args.target is not None else header[-1]
    if target not in header:
        raise UsageError(f"{args.data!r} has no column {target!r} for --target; its columns are {header}")
    dropped = _names(args.drop, "--drop") if args.drop is not None else []
    unknown = [name for name in dropped if name not in header]
    if unknown:
        raise UsageError(f"--drop names column(s) {unknown} that {args.data!r} does not have; it has {header}")
    if target in dropped:
        origin = "--target" if args.target is not None else "the target (the last column, by default)"
        raise UsageError(f"--drop lists {target!r}, which is {origin}: name the column to predict with --target")
    ids = {}
    if args.features is not None:
        features = _names(args.features, "--features")
        if target in features:
            origin = "--target" if args.target is not None else "the target (the last column, by default)"
            raise UsageError(f"--features lists {target!r}, which is {origin}: leave it out, or name another "
                             "--target")
        unknown = [name for name in features if name not in header]
        if unknown:
            raise UsageError(f"--features names column(s) {unknown} that {args.data!r} does not have; it has "
                             f"{header}")
        features = [name for name in features if name not in dropped]
    else:
        candidates = [name for name in header if name != target and name not in dropped]
        ids = tables.index_columns(raw, candidates)
        features = [name for name in candidates if name not in ids]
        for name, why in ids.items():
            notes.append(f"left out column {name!r}: it {why} (--features to choose the columns yourself)")
    if not features:
        raise UsageError(f"{args.data!r} has no feature column left (target {target!r}, columns {header})")
    counts = tables.missing_counts(raw, features + [target])
    if counts and args.missing == "error":
        listed = ", ".join(f"{name!r} {count} of {raw.rows} rows" for name, count in counts.items())
        raise UsageError(f"{args.data!r} has missing values (empty, NA, nan, ?...): {listed}; choose --missing "
                         "drop (leave those rows out) or --missing mean / median (fill the features), or fill them")
    keep = np.ones(raw.rows, dtype=bool)
    if target in counts:
        keep &= ~tables.missing_rows(raw, [target])
        notes.append(f"left out {counts[target]} row(s) whose target {target!r} is missing")
    if args.missing == "drop":
        lost = tables.missing_rows(raw, features) & keep
        if lost.any():
            notes.append(f"left out {int(lost.sum())} row(s) with missing features (--missing drop)")
        keep &= ~lost
    elif args.missing in ("mean", "median") and set(counts) - {target}:
        counts = tables.missing_counts(raw.take(keep), features)  # (the rows kept: those get filled)
        filled = ", ".join(f"{name!r} ({count})" for name, count in counts.items())
        if filled:
            notes.append(f"filled missing values with the training rows' {args.missing} (text: the most frequent "
                         f"category): {filled}")
    if not keep.all():
        raw = raw.take(keep)
    if raw.rows < 2:
        raise UsageError(f"{args.data!r} has {raw.rows} usable row(s): too few to train on")
    y = raw.columns[target]
    if y.dtype == object:
        y = np.array(y.tolist(), dtype=str)
    return _split_arrays(args, raw, y, None, target, os.path.basename(args.data), notes, features=features,
                         ids=tuple(ids))


def _split_arrays(args, X, y, feature_names, target_name, source, notes, features=None, ids=()):
    """Task, encoded target and split of ``X`` (an array, or with ``features`` a RawTable whose
    feature columns a TablePlan fitted on the training rows encodes)."""
    import numpy as np

    import mlp_xp as mx
    from .data import datasets, tables

    if len(y) < 2:
        raise UsageError(f"{source!r} holds {len(y)} row(s): too few to train on")
    task, why = _choose_task(y, args.task)
    classification = task == "classification"
    classes = None
    if classification:
        if y.dtype.kind == "f":
            y = y.astype(np.int64)  # (whole numbers: labels 3, not 3.0)
        y, classes = mx.datasets.encode_labels(y)
        if len(classes) < 2:
            raise UsageError(f"the target {target_name!r} has a single class {classes.tolist()[0]!r}: "
                             "nothing to learn")
    else:
        y = y.astype(np.float64)
    if args.test_size:
        if classification:
            _check_class_sizes(args.test_size, y, classes, target_name, why)
        try:
            train, test = datasets.split_indices(len(y), args.test_size, y if classification else None, args.seed)
        except ValueError as error:
            raise UsageError(f"--test-size {args.test_size}: {error}") from None
    else:
        train, test = np.arange(len(y)), None
    plan = None
    if features is not None:
        raw = X
        try:
            plan = tables.TablePlan.fit(raw.take(train), features, "error" if args.missing == "drop" else args.missing)
            X_train = plan.transform(raw.take(train), repr(source))[0]
            X_test = None if test is None else plan.transform(raw.take(test), repr(source))[0]
        except ValueError as error:
            raise UsageError(str(error)) from None
        categories = [f"{column.name!r}: {len(column.categories)} categories" for column in plan.columns
                      if column.kind == "category"]
        if categories:
            notes.append(f"one-hot encoded {len(categories)} text column(s) into one feature per category: "
                         + ", ".join(categories))
        feature_names = plan.feature_names
    else:
        X = np.asarray(X)
        X_train, X_test = X[train], (None if test is None else X[test])
    return _Data(source=source, notes=notes, task=task, why=why, classification=classification, classes=classes,
                 X_train=X_train, X_test=X_test, y_train=y[train], y_test=None if test is None else y[test],
                 feature_names=tuple(feature_names or ()), target_name=target_name, plan=plan, ids=ids)


def _check_class_sizes(test_size, codes, classes, target_name, why):
    """A stratified split keeps every class on both sides: refuse, naming the label, where one is too small."""
    import numpy as np

    from .data.datasets import _test_count

    counts = np.bincount(codes, minlength=len(classes))
    count = _test_count(test_size, len(codes))
    for code, members in enumerate(counts):
        take = int(round(members * count / len(codes)))
        if not 0 < take < members:
            label = classes[code].item() if isinstance(classes[code], np.generic) else classes[code]
            hint = ("--task regression if the target is a quantity, " if why.startswith("whole") else "")
            raise UsageError(f"class {label!r} of the target {target_name!r} has {members} row(s): too few to "
                             f"keep it in both the training and the test rows of --test-size {test_size}; use "
                             f"{hint}another --test-size (0: no test rows), or more data")


def _choose_task(y, requested):
    """("classification" | "regression", why) for a target array: text and True/False targets are
    classes; whole numbers are classes when they take at most MAX_AUTO_CLASSES distinct values that
    are not sparse (their range at most twice their count); other numbers are a regression."""
    import numpy as np

    y = np.asarray(y)
    text = y.dtype.kind in "USO" or y.dtype.kind == "b"
    if requested == "regression":
        if text:
            raise UsageError("--task regression needs a numeric target, but it holds text or booleans")
        return "regression", "--task regression"
    if requested == "classification":
        if y.ndim != 1:
            raise UsageError(f"--task classification needs one label per row, the target has shape {y.shape}")
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise UsageError("--task classification needs integer or text labels; the target holds fractions")
        return "classification", "--task classification"
    if text:
        return "classification", "text labels"
    if y.ndim == 1 and (y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(y == np.round(y)))):
        values = np.unique(y)
        span = float(values[-1] - values[0]) + 1
        if len(values) > MAX_AUTO_CLASSES:
            return "regression", (f"whole numbers with {len(values)} distinct values, more than {MAX_AUTO_CLASSES}; "
                                  "--task classification to override")
        if span > 2 * len(values):
            return "regression", (f"whole numbers, {len(values)} distinct values spread over {values[0]:g}.."
                                  f"{values[-1]:g}; --task classification to override")
        return "classification", f"whole numbers with {len(values)} distinct values; --task regression to override"
    return "regression", "numeric target"


def _activation(name):
    return ACTIVATIONS[name]


def _build_model(args, in_features, out_features, classification, **model_options):
    import mlp_xp as mx

    layers, width = [], in_features  # Sequential checks the memory its weights need before drawing them
    for hidden in args.layers:
        layers += [mx.Linear(width, hidden), _activation(args.activation)()]
        if getattr(args, "dropout", 0.0):
            layers.append(mx.Dropout(args.dropout))
        width = hidden
    layers.append(mx.Linear(width, out_features))
    if classification:
        layers.append(mx.Softmax())
    return mx.Sequential(*layers, seed=args.seed, **model_options)


def _optimizer(args):
    options = {} if getattr(args, "weight_decay", None) is None else {"weight_decay": args.weight_decay}
    return OPTIMIZERS[args.optimizer](lr=args.lr, **options)


# ---------------------------------------------------------------------------- commands


def train(args):
    import mlp_xp as mx

    engine = mx.distributed.resolve(None if args.distributed == "off" else args.distributed)
    if engine is not None and not engine.is_main:  # process 0 prints and writes
        args.quiet, args.save, args.json, args.plot = True, None, None, None
    for path, flag in ((args.save, "--save"), (args.json, "--json"), (args.plot, "--plot")):
        _check_output(path, flag)
    _check_plotting(args.plot)
    _prepare_backend(args.backend, args.dtype)

    data = _training_data(args)
    classification, classes = data.classification, data.classes
    X_train, X_test, y_train, y_test = data.X_train, data.X_test, data.y_train, data.y_test
    if args.class_weight is not None and not classification:
        raise UsageError("--class-weight needs a classification target; this one is a regression "
                         f"({data.why})")
    if args.early_stopping is not None and len(y_train) < 10:
        raise UsageError(f"--early-stopping holds out 10% of the {len(y_train)} training rows: too few")

    scaler = target_scaler = None
    if not args.no_standardize:
        scaler = mx.datasets.Standardizer().fit(X_train)
        if not classification:
            target_scaler = mx.datasets.Standardizer().fit(y_train)
    transform = (lambda data: data) if scaler is None else scaler.transform
    transform_y = (lambda data: data) if target_scaler is None else target_scaler.transform
    outputs = len(classes) if classification else (1 if y_train.ndim == 1 else y_train.shape[1])

    model = _build_model(args, X_train.shape[1], outputs, classification, backend=args.backend, device=args.device,
                         dtype=args.dtype)
    _check_training_memory(model, args.batch_size, args.layers)
    model.data = model.data._replace(scaler=scaler, target_scaler=target_scaler,
                                     classes=None if classes is None else tuple(classes.tolist()),
                                     feature_names=data.feature_names or None, target_name=data.target_name,
                                     table=None if data.plan is None else _table_info(data.plan, data.ids, args.missing))
    loss = mx.losses.CrossEntropy() if classification else mx.losses.MSE()
    metrics = [] if classification else ["mae", "r2"]
    if not args.quiet:
        kind = f"classification, {len(classes)} classes" if classification else "regression"
        test = f" / {len(X_test)} test" if X_test is not None else ""
        where = f" x {engine.size} processes" if engine is not None else ""
        print(f"{data.source}: {len(X_train)} train{test} samples, {X_train.shape[1]} features; target "
              f"{data.target_name!r}: {kind} ({data.why}); {model.num_parameters} parameters on {args.backend} "
              f"{args.dtype}{where}", flush=True)
        for note in data.notes:
            print(f"note: {note}", flush=True)
    options = {"validation_data": None if X_test is None else (transform(X_test), transform_y(y_test))}
    callbacks = []
    if args.early_stopping is not None:  # (validated on rows of the training part: the test rows stay unseen)
        options = {"validation_split": 0.1}
        callbacks.append(mx.callbacks.EarlyStopping(monitor="val_loss", patience=args.early_stopping,
                                                    restore_best_weights=True))
    optimizer = _optimizer(args)
    verbose = 0 if args.quiet else (1 if sys.stderr.isatty() else 2)
    history = model.fit(transform(X_train), transform_y(y_train), loss=loss, optimizer=optimizer,
                        epochs=args.epochs, batch_size=args.batch_size, metrics=metrics, verbose=verbose,
                        distributed=engine, callbacks=callbacks, class_weight=args.class_weight, **options)
    if engine is not None and not engine.is_main:
        return 0
    if callbacks and not args.quiet and callbacks[0].stopped_epoch:
        print(f"early stopping: stopped after epoch {callbacks[0].stopped_epoch}, kept the weights of epoch "
              f"{callbacks[0].best_epoch}", flush=True)
    scored_X, scored_y, split = (X_test, y_test, "test") if X_test is not None else (X_train, y_train, "train")
    result = _score(model, transform(scored_X), scored_y, classification)
    print(f"{split} " + ", ".join(f"{key} {value:.4f}" for key, value in result.items()), flush=True)
    if args.save:
        mx.save(model, args.save)
        if not args.quiet:
            print(f"saved: {args.save}")
    if args.json:
        _write_json(args.json, {"data": data.source, "task": data.task, "target": data.target_name,
                                "classes": model.data.classes, "notes": data.notes, "args": vars(args),
                                "history": dict(history), split: result})
    if args.plot:
        history.plot(args.plot)
        if not args.quiet:
            print(f"written: {args.plot}")
    return 0


def _table_info(plan, ids, missing):
    from .data.tables import TableInfo

    return TableInfo(plan, tuple(ids), missing == "drop")


def _score(model, X, y, classification):
    """Test metrics in the original units: accuracy (and loss) or MSE, MAE and R2."""
    import numpy as np

    import mlp_xp as mx

    if classification:
        result = model.evaluate(X, y, loss=mx.losses.CrossEntropy())
        return {"accuracy": result["accuracy"], "loss": result["loss"]}
    predicted = _regression_output(model, X).reshape(np.shape(y))
    residual = predicted - y
    total = np.sum((y - np.mean(y, axis=0)) ** 2, axis=0)
    r2 = np.mean(np.where(total > 0, 1 - np.sum(residual ** 2, axis=0) / np.where(total > 0, total, 1), 0.0))
    return {"r2": float(r2), "mae": float(np.mean(np.abs(residual))), "mse": float(np.mean(residual ** 2))}


def _regression_output(model, X):
    import numpy as np

    import mlp_xp as mx

    output = np.asarray(mx.to_numpy(model.predict(X)), dtype=np.float64)
    scaler = model.data.target_scaler
    return output if scaler is None else scaler.inverse_transform(output)


def _write_json(path, payload):
    import numpy as np

    def plain(value):
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return list(value)
        raise TypeError(f"not JSON: {value!r}")

    with open(path, "w") as file:
        json.dump(payload, file, indent=1, default=plain)
    print(f"written: {path}")


def _load_model(args):
    import mlp_xp as mx

    _prepare_backend(args.backend, "float64")  # a float64 model loads as float64 on JAX too
    return mx.load(args.model, backend=args.backend, device=args.device)


def _features_for(model, path, target=None, need_target=False, id_column=None):
    """(X scaled for the model, the target as read or None, the id column's (name, values) or None).

    A model trained on a CSV table by ``mlp-xp train`` (``model.data.table``) reads the file's
    columns by name and encodes them as in training; others read numeric features."""
    import numpy as np

    from .data import datasets, tables

    info = model.data.table
    csv_like = _csv_like(path)
    if id_column is not None and not csv_like:
        raise UsageError("--id takes a column name of a CSV file")
    if target is None and need_target:
        target = model.data.target_name if csv_like or os.path.splitext(path)[1].lower() == ".npz" else None
    identity = kept = None
    if info is not None and csv_like:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such data file: {path!r}")
        header = tables.csv_header(path)
        plan = info.plan
        names = [column.name for column in plan.columns]
        lacking = [name for name in names if name not in header]
        if lacking:
            raise UsageError(f"{path!r} lacks the feature column(s) {lacking} the model was trained on; it has "
                             f"{header}")
        if need_target and target not in header:
            raise UsageError(f"{path!r} has no column {target!r} for the target; its columns are {header}")
        if id_column is not None and id_column not in header:
            raise UsageError(f"{path!r} has no column {id_column!r} for --id; its columns are {header}")
        if id_column is None:
            id_column = next((name for name in info.ids if name in header), None)
        wanted = list(dict.fromkeys(names + ([target] if need_target else [])
                                    + ([id_column] if id_column is not None else [])))
        text = [column.name for column in plan.columns if column.kind == "category"]
        if id_column is not None:
            text.append(id_column)
        if need_target and any(isinstance(label, str) for label in model.data.classes or ()):
            text.append(target)
        raw = tables.read_csv(path, wanted, text_columns=text)
        if need_target:  # (rows without a target cannot be scored)
            lost = tables.missing_rows(raw, [target])
            if lost.any():
                print(f"mlp-xp: note: left out {int(lost.sum())} row(s) whose target {target!r} is missing",
                      file=sys.stderr)
                raw = raw.take(~lost)
        if info.drop_missing:  # (trained with --missing drop: rows with a missing feature get no output)
            lost = tables.missing_rows(raw, names)
            if lost.any():
                what = "left out" if need_target else "wrote no prediction for"
                print(f"mlp-xp: note: {what} {int(lost.sum())} row(s) with a missing feature (the model was "
                      "trained with --missing drop)", file=sys.stderr)
                kept = ~lost
                identity_raw = raw
                raw = raw.take(kept)
        X, unseen = plan.transform(raw, repr(path))
        for name, count in unseen.items():
            print(f"mlp-xp: note: {count} row(s) of column {name!r} hold a category the model was not trained on "
                  "(encoded as none of its categories)", file=sys.stderr)
        y = None
        if need_target:
            y = raw.columns[target]
            if y.dtype == object:
                y = np.array(y.tolist(), dtype=str)
            elif np.all(y == np.round(y)) and model.data.classes is not None:
                y = y.astype(np.int64)
        if id_column is not None:
            source = raw if kept is None or need_target else identity_raw
            identity = (id_column, ["" if value is None else value for value in source.columns[id_column]])
    else:
        names = model.data.feature_names
        table = datasets.load_table(path, target=target, features=names if csv_like and names else None,
                                    need_target=need_target)
        X, y = table.X, table.y
        if id_column is not None:
            raw = tables.read_csv(path, [id_column], text_columns=[id_column])
            identity = (id_column, ["" if value is None else value for value in raw.columns[id_column]])
    if X.shape[1] != model.in_features:
        raise UsageError(f"{path!r} has {X.shape[1]} features, the model takes {model.in_features}")
    scaler = model.data.scaler
    return (X if scaler is None else scaler.transform(X)), y, identity, (None if need_target else kept)


def predict(args):
    import csv

    import numpy as np

    import mlp_xp as mx

    _check_output(args.output, "--output")
    model = _load_model(args)
    X, _, identity, kept = _features_for(model, args.data, id_column=args.id)
    output = np.asarray(mx.to_numpy(model.predict(X)), dtype=np.float64)
    classes = model.data.classes
    name = model.data.target_name or "prediction"
    if classes is not None:
        header = [name] + ([f"probability_{label}" for label in classes] if args.proba else [])
        rows = ([classes[index]] + (row.tolist() if args.proba else [])
                for index, row in zip(np.argmax(output, axis=1), output))
    else:
        if args.proba:
            raise UsageError("--proba needs a classification model; this one predicts numbers")
        values = _regression_output(model, X)
        header = [name] if values.shape[1] == 1 else [f"{name}_{i}" for i in range(values.shape[1])]
        rows = (row.tolist() for row in values)
    if kept is not None:  # (rows without a prediction: empty fields, so the output lines up with the input)
        produced, width = iter(rows), len(header)
        rows = (next(produced) if keep else [""] * width for keep in kept)
    if identity is not None:  # (the id first, as it was in the input)
        header = [identity[0]] + header
        rows = ([ident] + row for ident, row in zip(identity[1], rows))
    file = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if args.output:
            file.close()
    if args.output:
        print(f"written: {args.output} ({len(output)} predictions)", file=sys.stderr)
    return 0


def evaluate(args):
    import numpy as np

    _check_output(args.json, "--json")
    model = _load_model(args)
    X, y, _, _ = _features_for(model, args.data, target=args.target, need_target=True)
    classes = model.data.classes
    y = np.asarray(y)
    if classes is not None:
        index = {label: code for code, label in enumerate(classes)}
        labels = y.tolist()
        unknown = sorted({str(label) for label in labels if label not in index})
        if unknown:
            raise UsageError(f"the target holds labels the model was not trained on: {unknown[:5]}; "
                             f"it knows {list(classes)}")
        y = np.array([index[label] for label in labels], dtype=np.int64)
        result = _score(model, X, y, classification=True)
    else:
        if y.dtype.kind not in "iuf":
            raise UsageError("the target must be numbers for a regression model")
        result = _score(model, X, y.astype(np.float64), classification=False)
    print(f"{os.path.basename(args.data)}: {len(X)} samples; " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if args.json:
        _write_json(args.json, {"model": args.model, "data": args.data, **result})
    return 0


def compare(args):
    import mlp_xp as mx

    for path, flag in ((args.json, "--json"), (args.plot, "--plot")):
        _check_output(path, flag)
    _check_plotting(args.plot)
    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, test_size=0.25, seed=args.seed)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    model = _build_model(args, X.shape[1], 10, True, dtype="float64")
    configs = [config.strip() for config in args.configs.split(",") if config.strip()]
    if not configs:
        raise UsageError("--configs is empty")
    result = mx.compare(model, X_train, y_train, mx.losses.CrossEntropy(), _optimizer(args), configs=configs,
                        reference=configs[0], epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(X_test, y_test))
    print(f"digits, {len(X_train)} training samples, {args.epochs} epochs; reference {configs[0]}; "
          "div: |loss - reference| / |reference| over steps")
    print(result.table())
    if args.json:
        result.to_json(args.json)
        print(f"written: {args.json}")
    if args.plot:
        result.plot(args.plot)
        print(f"written: {args.plot}")
    return 0


# ---------------------------------------------------------------------------- entry point


def _fail(message, status):
    print(f"mlp-xp: error: {message}", file=sys.stderr)
    return status


def _run(args):
    from ._errors import NonFiniteError

    import numpy as np

    handler = {"train": train, "predict": predict, "evaluate": evaluate, "compare": compare}[args.command]
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # NonFiniteError says it once
            return handler(args)
    except NonFiniteError as error:
        return _fail(f"training diverged: {error}", 1)
    except MemoryError as error:
        return _fail(f"out of memory: {error or 'the run needs more memory than this machine has'}", 1)
    except FileNotFoundError as error:
        return _fail(error.args[0] if len(error.args) == 1 else f"{error.strerror}: {error.filename!r}", 2)
    except PermissionError as error:
        return _fail(f"permission denied: {error.filename!r}", 2)
    except (ValueError, TypeError, ImportError) as error:
        return _fail(str(error), 2)
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        return _fail(f"{error.strerror or error}: {error.filename!r}" if error.filename else str(error), 1)


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status = _main(args)
    if status and getattr(args, "distributed", "off") != "off":
        from .train.distributed import launched_with_mpi

        if launched_with_mpi():  # the other processes may be waiting for this one: end them too
            sys.stderr.flush()
            from mpi4py import MPI

            MPI.COMM_WORLD.Abort(status)
    return status


def _main(args):
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("mlp-xp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`mlp-xp predict ... | head`): stop quietly, as other tools do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except Exception as error:  # a bug of ours: still one line, with how to see more
        if os.environ.get("MLP_XP_TRACEBACK"):
            raise
        return _fail(f"unexpected {type(error).__name__}: {error} (set MLP_XP_TRACEBACK=1 to see where; "
                     "please report it)", 1)


if __name__ == "__main__":
    sys.exit(main())
