"""The bundled digits data and the split / standardize helpers."""

import numpy as np
import pytest

from mlp_xp.data import datasets


def test_digits_shape_and_content():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16 and sorted(np.unique(y)) == list(range(10))
    assert np.bincount(y).min() > 170


def test_split_is_stratified_disjoint_and_seeded():
    X, y = datasets.load_digits()
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=1)
    assert len(X_train) + len(X_test) == len(X) and abs(len(X_test) - 0.2 * len(X)) <= 10
    assert np.all(np.abs(np.bincount(y_test) / len(y_test) - 0.1) < 0.01)
    train_rows = {row.tobytes() for row in X_train}
    assert sum(row.tobytes() in train_rows for row in X_test) < 5  # digits has a few duplicate images
    again = datasets.train_test_split(X, y, test_size=0.2, seed=1)
    assert np.array_equal(again[1], X_test)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        datasets.train_test_split(X, y, test_size=0.0)
    with pytest.raises(ValueError, match="leaves no train or no test"):
        datasets.train_test_split(X, y, test_size=len(X))
    with pytest.raises(ValueError, match="X has 1797 samples but y has 10"):
        datasets.train_test_split(X, y[:10])


def test_standardize_uses_training_statistics():
    X, _ = datasets.load_digits()
    train, test = datasets.standardize(X[:1000], X[1000:])
    varying = X[:1000].std(axis=0) > 0
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(axis=0)[varying], 1)
    assert np.all(np.isfinite(test)) and np.all(train[:, ~varying] == 0)
    assert datasets.standardize(X).shape == X.shape


import gzip  # noqa: E402

import mlp_xp as mx  # noqa: E402

from .conftest import numpy_of  # noqa: E402


def _idx(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


def _write_mnist(directory, train=50, test=20, gz=False):
    rng = np.random.default_rng(0)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, train),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, test)}
    for name, array in parts.items():
        data = _idx(array)
        (directory / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return parts


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx_files(tmp_path, gz):
    parts = _write_mnist(tmp_path, gz=gz)
    X_train, y_train, X_test, y_test = datasets.load_mnist(tmp_path)
    assert X_train.shape == (50, 784) and X_test.shape == (20, 784)
    np.testing.assert_array_equal(X_train * 255, parts["train-images-idx3-ubyte"].reshape(50, 784))
    np.testing.assert_array_equal(y_test, parts["t10k-labels-idx1-ubyte"])
    assert 0 <= X_train.min() and X_train.max() <= 1


def test_load_mnist_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), "y_train": rng.integers(0, 10, 30),
              "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), "y_test": rng.integers(0, 10, 10)}
    np.savez(tmp_path / "mnist.npz", **arrays)
    X_train, y_train, X_test, y_test = datasets.load_mnist(tmp_path / "mnist.npz")
    assert X_train.shape == (30, 784) and np.array_equal(y_train, arrays["y_train"])
    np.savez(tmp_path / "partial.npz", x_train=arrays["x_train"])
    with pytest.raises(ValueError, match=r"lacks \['y_train', 'x_test', 'y_test'\]"):
        datasets.load_mnist(tmp_path / "partial.npz")


def test_load_mnist_rejects_wrong_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        datasets.load_mnist(tmp_path)
    parts = _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match=r"declares shape \(50, 28, 28\).*truncated"):
        datasets.load_mnist(tmp_path)
    path.write_bytes(b"\x89PNG" + data[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        datasets.load_mnist(tmp_path)
    path.write_bytes(_idx(np.zeros((50, 32, 32), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"MNIST images are \(n, 28, 28\)"):
        datasets.load_mnist(tmp_path)
    path.write_bytes(_idx(parts["train-images-idx3-ubyte"][:40]))
    with pytest.raises(ValueError, match="labels have shape"):
        datasets.load_mnist(tmp_path)
    (tmp_path / "broken.gz").write_bytes(gzip.compress(data)[:50])
    with pytest.raises(ValueError, match="truncated or corrupt gzip"):
        datasets.load_idx(tmp_path / "broken.gz")


def test_streamed_batches_train_exactly_like_in_memory_data():
    X, y = datasets.load_digits()
    X, y = datasets.standardize(X)[:300], y[:300]

    def run(streamed):
        model = mx.Sequential(mx.Linear(64, 16), mx.ReLU(), mx.Dropout(0.1), mx.Linear(16, 10), seed=1)
        data = (datasets.Batches(X, y, batch_size=32), None) if streamed else (X, y)
        history = model.fit(*data, loss=mx.losses.CrossEntropy(), optimizer=mx.optim.Adam(), epochs=3,
                            batch_size=32, verbose=0)
        return numpy_of(model.params), history

    (streamed, streamed_history), (in_memory, memory_history) = run(True), run(False)
    assert np.array_equal(streamed, in_memory) and streamed_history == memory_history


def test_batches_check_their_input():
    with pytest.raises(ValueError, match="X has 3 samples but y has 2"):
        datasets.Batches(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="batch_size"):
        datasets.Batches(np.zeros((3, 2)), np.zeros(3), batch_size=0)
    model = mx.Sequential(mx.Linear(2, 2), seed=0)
    with pytest.raises(ValueError, match="pass y=None"):
        model.fit(datasets.Batches(np.zeros((3, 2)), np.zeros(3)), np.zeros(3), loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.SGD())
    with pytest.raises(ValueError, match="label out of range"):
        model.fit(datasets.Batches(np.zeros((3, 2)), np.full(3, 5)), None, loss=mx.losses.CrossEntropy(),
                  optimizer=mx.optim.SGD())


@pytest.mark.parametrize("test_size,message", [(True, "fraction in"), (1.0, "must lie in"), (0, "leaves no"),
                                               ("0.2", "fraction in"), (0.0001, "leaves no")])
def test_split_refuses_an_empty_side(test_size, message):
    X, y = np.zeros((20, 2)), np.arange(20) % 2
    with pytest.raises(ValueError, match=message):
        datasets.train_test_split(X, y, test_size=test_size)


def test_stratified_split_refuses_a_class_missing_from_the_test_set():
    X, y = np.zeros((21, 2)), np.array([0] * 10 + [1] * 10 + [2])
    with pytest.raises(ValueError, match=r"class 2 has 1 sample.*none of it in the test set"):
        datasets.train_test_split(X, y, test_size=0.25)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.25, stratify=False)
    assert len(X_test) == 5 and len(X_train) == 16


def test_split_of_string_labels_is_stratified():
    y = np.array(["cat", "dog"] * 10)
    _, _, y_train, y_test = datasets.train_test_split(np.zeros((20, 1)), y, test_size=0.2, seed=3)
    assert sorted(y_test.tolist()) == ["cat", "cat", "dog", "dog"]


def test_standardizer_is_reusable_and_matches_standardize():
    rng = np.random.default_rng(0)
    X_train, X_new = rng.normal(5, 3, size=(50, 4)), rng.normal(5, 3, size=(7, 4))
    X_train[:, 2] = 1.0  # a constant feature: centred, not scaled
    scaler = datasets.Standardizer().fit(X_train)
    scaled_train, scaled_new, returned = datasets.standardize(X_train, X_new, return_scaler=True)
    assert np.allclose(scaled_train.mean(axis=0), 0) and np.allclose(scaled_train[:, [0, 1, 3]].std(axis=0), 1)
    assert np.array_equal(scaler.transform(X_new), scaled_new) and np.array_equal(returned.mean, scaler.mean)
    assert np.allclose(scaler.inverse_transform(scaled_new), X_new)
    assert np.array_equal(datasets.standardize(X_train), scaled_train)
    with pytest.raises(ValueError, match="fitted on 4 features"):
        scaler.transform(X_new[:, :3])
    with pytest.raises(ValueError, match="not fitted"):
        datasets.Standardizer().transform(X_new)


def test_standardize_takes_one_dimensional_data():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    scaled = datasets.standardize(values)
    assert scaled.shape == (4,) and np.isclose(scaled.mean(), 0) and np.isclose(scaled.std(), 1)
    train, test = datasets.standardize(values, np.array([2.5]))
    assert test.shape == (1,) and np.isclose(test[0], 0)


def test_encode_labels_round_trips():
    y = np.array(["setosa", "virginica", "setosa", "versicolor"])
    codes, classes = datasets.encode_labels(y)
    assert codes.dtype == np.int64 and codes.tolist() == [0, 2, 0, 1]
    assert np.array_equal(classes[codes], y)
