"""Run by tests/test_distributed.py under mpiexec: train one replica per process, write what it got.

    mpiexec -n 2 python tests/mpi_worker.py OUT MODE [EPOCHS]

MODE: "train" (fit, then save params and history per rank), "die" (process 1 exits during epoch 2),
"raise" (an uncaught exception in process 1 only), "stall" (process 1 hangs; process 0 has a 3 s timeout), "checkpoint" (fit with a ModelCheckpoint
written by process 0 only), "resume" (fit from OUT/checkpoint.safetensors).
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


def main():
    out, mode = sys.argv[1], sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    engine = mx.distributed.MPI(timeout={"stall": 3.0, "die": 20.0}.get(mode, 60.0))
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
