"""What PyTorch and Keras users reach for, in mlp_xp: their optimizer, loss and schedule options, Keras's
callbacks and names, BatchNorm, and export to PyTorch and ONNX.

Run: python examples/from_pytorch_and_keras.py [--epochs 12] [--folder DIR]

Each part prints one line; ``main`` returns what it measured.
"""

import argparse
import os
import tempfile

import numpy as np

import mlp_xp as mx


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--folder", default=None, help="where the exported files go (default: a temporary folder)")
    args = parser.parse_args(argv)
    folder = args.folder or tempfile.mkdtemp()

    X, y = mx.datasets.load_digits()
    X_train, X_test, y_train, y_test = mx.datasets.train_test_split(X, y, seed=0)
    X_train, X_test = mx.datasets.standardize(X_train, X_test)
    result = {}

    # 1. Keras's way of writing it: activations inside Linear, BatchNorm after it, names for the loss and the
    #    optimizer, callbacks that see self.model, ReduceLROnPlateau, and model.stop_training from a LambdaCallback
    #    (BatchNorm's momentum is PyTorch's, the weight of each batch: Keras's momentum=0.99 is 0.01 here);
    #    class_weight="balanced" with the training accuracy also logged weighted (Keras's weighted_metrics)
    model = mx.Sequential(mx.Linear(64, 64, activation="relu"), mx.BatchNorm(64, momentum=0.1), mx.Dropout(0.1),
                          mx.Linear(64, 10), seed=0)
    seen = []
    history = model.fit(
        X_train, y_train, loss="cross_entropy", optimizer="adam", epochs=args.epochs, batch_size=32,
        validation_data=(X_test, y_test), verbose=0, class_weight="balanced", weighted_metrics=["accuracy"],
        callbacks=[mx.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1),
                   mx.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))])
    result["keras_accuracy"] = model.evaluate(X_test, y_test, "cross_entropy")["accuracy"]  # (running statistics)
    running_var = mx.to_numpy(model.state_dict()["1.running_var"])
    print(f"Keras habits: {len(seen)} epochs, learning rates {sorted(set(history['lr']), reverse=True)[:3]}, "
          f"training accuracy {history['accuracy'][-1]:.3f} (weighted {history['weighted_accuracy'][-1]:.3f}), "
          f"test accuracy {result['keras_accuracy']:.3f}; BatchNorm running variances "
          f"{running_var.min():.2f}..{running_var.max():.2f}")

    # 2. PyTorch's options: AdamW with amsgrad, a OneCycleLR schedule (its length set by fit), a weighted,
    #    label-smoothed cross-entropy that ignores label -100, as torch.nn.functional.cross_entropy computes it;
    #    and Keras's per-row sample_weight
    weights = np.bincount(y_train, minlength=10).max() / np.bincount(y_train, minlength=10)
    loss = mx.losses.CrossEntropy(weight=weights.tolist(), label_smoothing=0.05, ignore_index=-100)
    optimizer = mx.optim.AdamW(lr=mx.optim.schedules.one_cycle(3e-3), amsgrad=True)
    torch_model = mx.Sequential(mx.Linear(64, 64), mx.GELU(), mx.LayerNorm(64), mx.Linear(64, 10), mx.Softmax(),
                                seed=1, dtype="float64")
    labels = y_train.copy()
    labels[:20] = -100  # (rows whose label is unknown: they count for nothing)
    torch_model.fit(X_train, labels, loss=loss, optimizer=optimizer, epochs=args.epochs, batch_size=32, verbose=0,
                    sample_weight=np.where(np.arange(len(labels)) % 10 == 0, 2.0, 1.0))  # (Keras's per-row weights)
    result["torch_options_accuracy"] = torch_model.evaluate(X_test, y_test, mx.losses.CrossEntropy())["accuracy"]
    per_sample = mx.losses.CrossEntropy(weight=weights.tolist(), reduction="none")  # (for custom code)
    values = per_sample.value(torch_model.forward(X_test[:3], loss=per_sample), y_test[:3])
    print(f"PyTorch options: AdamW(amsgrad) + one_cycle + weighted CrossEntropy: test accuracy "
          f"{result['torch_options_accuracy']:.3f}; per-sample losses of 3 rows {np.round(mx.to_numpy(values), 3)}")

    # 3. Export: an equivalent torch.nn.Sequential, and an ONNX file, each checked against predict
    try:
        import torch
    except ImportError:
        print("to_torch: skipped (pip install torch)")
    else:
        net = torch_model.to_torch()
        with torch.no_grad():
            theirs = net(torch.tensor(X_test)).numpy()
        result["torch_difference"] = float(np.max(np.abs(theirs - mx.to_numpy(torch_model.predict(X_test)))))
        print(f"to_torch: {type(net).__name__} of {len(net)} modules, largest difference from predict "
              f"{result['torch_difference']:.1e}")
    try:
        import onnxruntime
    except ImportError:
        print("export_onnx: skipped (pip install 'mlp_xp[onnx]')")
    else:
        path = os.path.join(folder, "digits.onnx")
        model.export_onnx(path)  # (its BatchNorm with the running statistics, as predict computes it)
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        theirs = session.run(None, {"input": X_test.astype(np.float32)})[0]
        result["onnx_difference"] = float(np.max(np.abs(theirs - mx.to_numpy(model.predict(X_test)))))
        print(f"export_onnx: {path}, largest difference from predict {result['onnx_difference']:.1e}")
    return result


if __name__ == "__main__":
    main()
