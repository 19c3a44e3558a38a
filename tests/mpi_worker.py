"""Run by tests/test_distributed.py under mpiexec: train one replica per process, write what it got.

    mpiexec -n 2 python tests/mpi_worker.py OUT MODE [EPOCHS]

MODE: "train" (fit, then save params and history per rank), "die" (process 1 exits during epoch 2),
"raise" (an uncaught exception in process 1 only), "stall" (process 1 hangs; process 0 has a 3 s timeout), "checkpoint" (fit with a ModelCheckpoint
written by process 0 only), "resume" (fit from OUT/checkpoint.safetensors), "mismatch:FIELD" (process 1 differs
from process 0 in FIELD, one of MISMATCHES; each process prints the ValueError fit raises and exits with status 1).
"""

import json
import os
import sys
import time

import numpy as np

import mlp_xp as mx


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5).astype(int)
    return X, y


def model():
    return mx.Sequential(mx.Linear(6, 16), mx.Tanh(), mx.Dropout(0.2), mx.LayerNorm(16), mx.Linear(16, 3),
                         mx.Softmax(), dtype="float64", seed=3)


def fit(net, epochs, distributed, **options):
    X, y = data()
    return net.fit(X, y, loss=mx.losses.CrossEntropy(), optimizer=options.pop("optimizer", mx.optim.Adam(lr=1e-2)),
                   epochs=epochs, batch_size=16, verbose=0, distributed=distributed,
                   validation_data=(X[:10], y[:10]), metrics=["top_2_accuracy"], **options)


#: process 1's change to (model keywords, fit keywords) of the "mismatch:FIELD" mode, by FIELD
MISMATCHES = {
    "optimizer.lr": ({}, {"optimizer": mx.optim.Adam(lr=0.1)}),
    "optimizer": ({}, {"optimizer": mx.optim.SGD(lr=1e-2)}),
    "optimizer.betas": ({}, {"optimizer": mx.optim.Adam(lr=1e-2, betas=(0.8, 0.999))}),
    "schedule": ({}, {"optimizer": mx.optim.Adam(lr=mx.optim.schedules.cosine(1e-2))}),
    "batch_size": ({}, {"batch_size": 32}),
    "epochs": ({}, {"epochs": 2}),
    "shuffle": ({}, {"shuffle": False}),
    "loss": ({}, {"loss": mx.losses.CrossEntropy(label_smoothing=0.1)}),
    "precision": ({"dtype": "float32", "precision": "float16"}, {}),
    "dtype": ({"dtype": "float32"}, {}),
    "on_nonfinite": ({}, {"on_nonfinite": "skip_batch"}),
    "sync_every": ({}, {"sync_every": 2}),
    "metrics": ({}, {"metrics": []}),
    "samples": ({}, {"rows": 40}),
    "weights": ({"seed": 4}, {}),
}


def mismatch(out, field, engine):
    """fit with process 1 changed in ``field``: every process must refuse at the start."""
    model_options, fit_options = MISMATCHES[field] if engine.rank == 1 else ({}, {})
    if "precision" in MISMATCHES[field][0]:
        model_options = {"dtype": "float32", **model_options}  # (float16 keeps float32 master weights)
    net = mx.Sequential(*model().layers, **{"dtype": "float64", "seed": 3, **model_options})
    X, y = data()
    rows = fit_options.pop("rows", len(X))
    options = {"loss": mx.losses.CrossEntropy(), "optimizer": mx.optim.Adam(lr=1e-2), "epochs": 3, "batch_size": 16,
               "metrics": ["top_2_accuracy"], **fit_options}
    try:
        net.fit(X[:rows], y[:rows], verbose=0, distributed=engine, **options)
    except ValueError:
        import traceback

        traceback.print_exc()  # (not raised on: an uncaught exception would end the other process before it prints)
        sys.stderr.flush()
        sys.exit(1)
    np.save(os.path.join(out, f"mismatch-params-{engine.rank}.npy"), mx.to_numpy(net.params))


def main():
    out, mode = sys.argv[1], sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    engine = mx.distributed.MPI(timeout={"stall": 3.0, "die": 20.0}.get(mode, 40.0 if ":" in mode else 60.0))
    if mode.startswith("mismatch:"):
        return mismatch(out, mode.partition(":")[2], engine)
    net = model()
    callbacks = []
    if mode in ("die", "stall", "raise") and engine.rank == 1:
        class Fail:
            def on_epoch_begin(self, epoch, model):
                if epoch == 2:
                    if mode == "die":
                        os._exit(3)
                    if mode == "raise":
                        raise RuntimeError("only process 1 fails")
                    time.sleep(600)
        callbacks.append(Fail())
    if mode == "stop" and engine.rank == 1:  # (one process's callback stops: every process must)
        class Stop:
            def on_epoch_end(self, epoch, logs, model):
                return epoch == 1
        callbacks.append(Stop())
    options = {}
    if mode == "checkpoint":
        callbacks.append(mx.callbacks.ModelCheckpoint(os.path.join(out, "checkpoint.safetensors")))
        callbacks.append(mx.callbacks.CSVLogger(os.path.join(out, "log.csv")))
    if mode == "resume":
        options["resume_from"] = os.path.join(out, "checkpoint.safetensors")
    history = fit(net, epochs, engine, callbacks=callbacks, **options)
    np.save(os.path.join(out, f"{mode}-params-{engine.rank}.npy"), mx.to_numpy(net.params))
    with open(os.path.join(out, f"{mode}-history-{engine.rank}.json"), "w") as file:
        json.dump(dict(history), file)


if __name__ == "__main__":
    main()
