"""Tables as people have them (mlp_xp.data.tables and the command line on them): pandas' and R's
exports with their index columns, missing values, text and True/False columns, whole-number
regression targets; the streaming CSV reader's fast and slow paths giving the same columns."""

import csv

import numpy as np
import pytest

import mlp_xp as mx
from mlp_xp import cli
from mlp_xp.data import tables

rng = np.random.default_rng(0)


def _write(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def _error(status, err, message):
    assert status == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err, err


# ---------------------------------------------------------------- the reader


@pytest.mark.parametrize("chunk", [4, 1 << 15])
def test_the_reader_gives_the_same_columns_by_both_paths(tmp_path, monkeypatch, chunk):
    """A numeric table read by numpy's parser equals the csv module's reading of it; a late text
    value turns its column to text (the file is read again), missing tokens become NaN / None."""
    monkeypatch.setattr(tables, "CHUNK_LINES", chunk)
    values = rng.normal(size=(30, 3))
    rows = [[repr(float(a)), repr(float(b)), repr(float(c)), "x" if i == 25 else str(i % 3)]
            for i, (a, b, c) in enumerate(values)]
    rows[7][1] = "NA"
    rows[9][2] = ""
    rows[11][0] = " ? "
    path = _write(tmp_path / "t.csv", ["a", "b", "c", "code"], rows)
    table = tables.read_csv(path)
    expected = values.copy()
    expected[7, 1] = expected[9, 2] = expected[11, 0] = np.nan
    for index, name in enumerate("abc"):
        np.testing.assert_array_equal(table.columns[name], expected[:, index])
    assert table.columns["code"].dtype == object and table.columns["code"][25] == "x"
    assert table.columns["code"][:4].tolist() == ["0", "1", "2", "0"]
    assert table.lines.tolist() == list(range(2, 32))
    only = tables.read_csv(path, columns=["c", "a"], text_columns=["a"])
    assert list(only.columns) == ["c", "a"] and only.columns["a"][0] == repr(float(values[0, 0]))


def test_the_reader_takes_quotes_semicolons_blank_lines_and_names_bad_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('"";"name";"size"\n"1";"a; b";1,5\n\n"2";NA;2\n')
    table = tables.read_csv(str(path))
    assert table.header == ("", "name", "size") and table.columns["name"].tolist() == ["a; b", None]
    assert table.columns["size"].tolist() == ["1,5", "2"] and table.lines.tolist() == [2, 4]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match="line 3 has 3 fields, the header has 2"):
        tables.read_csv(str(bad))
    twice = tmp_path / "twice.csv"
    twice.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(ValueError, match=r"duplicate column names in its header: \['a'\]"):
        tables.read_csv(str(twice))
    with pytest.raises(ValueError, match=r"has no column\(s\) \['z'\]"):
        tables.read_csv(str(tmp_path / "r.csv"), columns=["z"])


def test_a_latin_1_file_reads(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("ville,température\nMontréal,-5\nSète,12\n".encode("latin-1"))
    table = tables.read_csv(str(path))
    assert table.header == ("ville", "température") and table.columns["ville"].tolist() == ["Montréal", "Sète"]
    assert tables.csv_header(str(path)) == ["ville", "température"]


def test_index_columns_are_found():
    n = 12
    table = tables.RawTable(("", "id", "count", "x", "Unnamed: 0"), {
        "": np.arange(n, dtype=float) + 5, "id": np.arange(n, dtype=float) * 3, "count": np.arange(1, n + 1.0),
        "x": rng.normal(size=n), "Unnamed: 0": np.arange(n, dtype=float)}, np.arange(2, n + 2))
    found = tables.index_columns(table, ["", "id", "count", "x", "Unnamed: 0"])
    assert set(found) == {"", "id", "count", "Unnamed: 0"}
    assert "unnamed" in found[""] and "counts the rows 1..12" in found["count"]


def test_a_plan_encodes_categories_booleans_and_fills_what_it_learned():
    raw = tables.RawTable(("n", "kind", "flag"), {
        "n": np.array([1.0, np.nan, 3.0, 6.0]), "kind": np.array(["b", "a", None, "b"], dtype=object),
        "flag": np.array(["TRUE", "false", None, "True"], dtype=object)}, np.arange(2, 6))
    plan = tables.TablePlan.fit(raw, ["n", "kind", "flag"], missing="median")
    assert plan.feature_names == ("n", "kind=a", "kind=b", "flag")
    X, unseen = plan.transform(raw)
    np.testing.assert_array_equal(X, [[1, 0, 1, 1], [3, 1, 0, 0], [3, 0, 1, 1], [6, 0, 1, 1]])
    assert unseen == {}
    again = tables.TablePlan.from_json(plan.to_json())
    other = tables.RawTable(raw.header, {"n": np.array([2.0]), "kind": np.array(["c"], dtype=object),
                                         "flag": np.array(["false"], dtype=object)}, np.array([9]))
    X, unseen = again.transform(other)
    assert X.tolist() == [[2.0, 0.0, 0.0, 0.0]] and unseen == {"kind": 1}  # (an unseen category: all zeros)
    strict = tables.TablePlan.fit(raw, ["n"])
    with pytest.raises(ValueError, match="line 3, column 'n': the value is missing"):
        strict.transform(raw)
    many = tables.RawTable(("t",), {"t": np.array([f"name {i}" for i in range(150)], dtype=object)},
                           np.arange(150))
    with pytest.raises(ValueError, match="150 distinct values"):
        tables.TablePlan.fit(many, ["t"])


# ---------------------------------------------------------------- the command line on real tables


def _penguins(n=300):
    island = rng.choice(["Biscoe", "Dream", "Torgersen"], n)
    flipper = rng.normal(200, 12, n).round()
    mass = (flipper * 20 + (island == "Dream") * 400 + rng.normal(0, 60, n)).round()
    species = np.where(island == "Torgersen", "Adelie", np.where(flipper > 205, "Gentoo", "Chinstrap"))
    sex = rng.choice(["True", "False"], n)
    return island, flipper, mass, species, sex


def test_a_pandas_export_with_its_index_text_and_booleans_trains_without_pandas(tmp_path, capsys):
    island, flipper, mass, species, sex = _penguins()
    rows = [[i, a, b, c, d] for i, (a, b, c, d) in enumerate(zip(island, flipper, sex, species))]
    path = _write(tmp_path / "penguins.csv", ["", "island", "flipper", "male", "species"], rows)
    status, out, _ = _run(["train", "--data", path, "--epochs", "40", "--save", str(tmp_path / "m.safetensors")],
                          capsys)
    assert status == 0
    assert "5 features" in out and "classification, 3 classes (text labels)" in out
    assert "note: left out column '': it is unnamed: a row index" in out
    assert "'island': 3 categories" in out
    assert float(out.split("test accuracy ")[1].split(",")[0]) > 0.9
    model = mx.load(tmp_path / "m.safetensors")
    assert model.data.table.ids == ("",) and model.data.feature_names == (
        "island=Biscoe", "island=Dream", "island=Torgersen", "flipper", "male")
    # shuffled rows give the same features (the index was a feature before: accuracy changed with the order)
    shuffled = _write(tmp_path / "shuffled.csv", ["", "island", "flipper", "male", "species"],
                      [rows[i] for i in rng.permutation(len(rows))])
    status, out, _ = _run(["train", "--data", shuffled, "--epochs", "1"], capsys)
    assert status == 0 and "5 features" in out
    # predict carries the index through, and names a category it has not seen
    new = _write(tmp_path / "new.csv", ["", "island", "flipper", "male"],
                 [[7, "Biscoe", 210, "True"], [8, "Atlantis", 190, "False"]])
    status, out, err = _run(["predict", str(tmp_path / "m.safetensors"), "--data", new], capsys)
    assert status == 0 and out.splitlines()[0] == ",species" and out.splitlines()[1].startswith("7,")
    assert "1 row(s) of column 'island' hold a category the model was not trained on" in err
    status, out, _ = _run(["predict", str(tmp_path / "m.safetensors"), "--data", new, "--id", "flipper"], capsys)
    assert status == 0 and out.splitlines()[0] == "flipper,species" and out.splitlines()[2].startswith("190,")


def test_id_columns_and_drop(tmp_path, capsys):
    island, flipper, mass, species, sex = _penguins(200)
    rows = [[f"P{i:04d}", 1000 + i, a, b, c] for i, (a, b, c) in enumerate(zip(flipper, mass, species))]
    path = _write(tmp_path / "p.csv", ["id", "batch", "flipper", "mass", "species"], rows)
    status, out, _ = _run(["train", "--data", path, "--epochs", "1", "--drop", "batch"], capsys)
    assert status == 0 and "2 features" in out and "left out column 'id': it is named as an id" in out
    status, _, err = _run(["train", "--data", path, "--drop", "nope"], capsys)
    _error(status, err, "--drop names column(s) ['nope']")
    status, out, _ = _run(["train", "--data", path, "--epochs", "1"], capsys)  # ('batch' counts from 1000: a feature)
    assert status == 0 and "3 features" in out


def test_whole_number_targets_that_are_quantities_are_a_regression(tmp_path, capsys):
    years = rng.integers(0, 46, 300)
    salary = years * 1000 + rng.normal(0, 100, 300)
    path = _write(tmp_path / "salary.csv", ["salary", "years"], zip(salary, years))
    status, out, _ = _run(["train", "--data", path, "--epochs", "3"], capsys)
    assert status == 0 and "regression (whole numbers with 46 distinct values, more than 20" in out
    island, flipper, mass, species, sex = _penguins()
    path = _write(tmp_path / "mass.csv", ["flipper", "mass"], zip(flipper, mass.astype(int)))
    status, out, _ = _run(["train", "--data", path, "--epochs", "3"], capsys)
    assert status == 0 and "target 'mass': regression (whole numbers" in out
    grades = _write(tmp_path / "grades.csv", ["x", "grade"], zip(rng.normal(size=300), rng.integers(3, 9, 300)))
    status, out, _ = _run(["train", "--data", grades, "--epochs", "1"], capsys)
    assert status == 0 and "classification, 6 classes (whole numbers with 6 distinct values" in out
    sparse = _write(tmp_path / "sparse.csv", ["x", "price"], zip(rng.normal(size=300), rng.choice([100, 250, 900], 300)))
    status, out, _ = _run(["train", "--data", sparse, "--epochs", "1"], capsys)
    assert status == 0 and "regression (whole numbers, 3 distinct values spread over 100..900" in out
    labels = np.array([0, 1] * 150)
    labels[17] = 5
    rare = _write(tmp_path / "rare.csv", ["x", "label"], zip(rng.normal(size=300), labels))
    status, _, err = _run(["train", "--data", rare, "--epochs", "1"], capsys)
    _error(status, err, "class 5 of the target 'label' has 1 row(s): too few to keep it in both the training and "
                        "the test rows of --test-size 0.25; use --task regression if the target is a quantity")


def test_missing_values_are_named_and_handled_as_asked(tmp_path, capsys):
    x = rng.normal(size=(120, 2))
    label = np.where(x[:, 0] > 0, "yes", "no").astype(object)
    cells = [[f"{a:.4f}", f"{b:.4f}", c] for a, b, c in zip(x[:, 0], x[:, 1], label)]
    for row in (3, 50):
        cells[row][1] = "NA"
    for row in (10, 11, 12):
        cells[row][2] = "NA"
    path = _write(tmp_path / "na.csv", ["a", "b", "answer"], cells)
    status, _, err = _run(["train", "--data", path], capsys)
    _error(status, err, "has missing values (empty, NA, nan, ?...): 'b' 2 of 120 rows, 'answer' 3 of 120 rows; "
                        "choose --missing drop")
    status, out, _ = _run(["train", "--data", path, "--missing", "drop", "--epochs", "1"], capsys)
    train, test = out.split(" test samples")[0].split(": ")[1].split(" train / ")
    assert status == 0 and "classification, 2 classes" in out and int(train) + int(test) == 115
    assert "left out 3 row(s) whose target 'answer' is missing" in out and "left out 2 row(s) with missing" in out
    status, out, _ = _run(["train", "--data", path, "--missing", "mean", "--epochs", "1", "--save",
                           str(tmp_path / "m.safetensors")], capsys)
    assert status == 0 and "filled missing values with the training rows' mean" in out and "'b' (2)" in out
    fill = mx.load(tmp_path / "m.safetensors").data.table.plan.columns[1].fill
    kept = np.delete(np.arange(120), [10, 11, 12])  # (the rows with a target), split as train splits them
    train, _ = mx.datasets.split_indices(len(kept), 0.25, mx.datasets.encode_labels(label[kept].astype(str))[0], 0)
    column = np.round(x[kept[train], 1], 4)
    assert fill == pytest.approx(np.mean(column[~np.isin(kept[train], [3, 50])]), rel=1e-12)  # the training rows
    status, out, err = _run(["evaluate", str(tmp_path / "m.safetensors"), "--data", path], capsys)
    assert status == 0 and "left out 3 row(s) whose target 'answer' is missing" in err and "117 samples" in out


def test_the_features_never_include_the_target(tmp_path, capsys):
    path = _write(tmp_path / "t.csv", ["a", "b", "label"], zip(rng.normal(size=40), rng.normal(size=40),
                                                                 rng.integers(0, 2, 40)))
    for extra in ([], ["--target", "label"]):
        status, _, err = _run(["train", "--data", path, "--features", "a,b,label", *extra], capsys)
        _error(status, err, "--features lists 'label', which is")


def test_early_stopping_weight_decay_and_class_weight(tmp_path, capsys):
    x = rng.normal(size=(300, 3))
    y = x @ [1.0, -2.0, 0.5] + rng.normal(0, 0.1, 300)
    path = _write(tmp_path / "r.csv", ["a", "b", "c", "y"], zip(*x.T, y))
    status, out, _ = _run(["train", "--data", path, "--epochs", "300", "--early-stopping", "2", "--lr", "0.05",
                           "--weight-decay", "1e-4", "--json", str(tmp_path / "run.json")], capsys)
    assert status == 0 and "early stopping: stopped after epoch" in out
    assert len(out.split("epoch ")) < 300
    status, _, err = _run(["train", "--data", path, "--class-weight", "balanced"], capsys)
    _error(status, err, "--class-weight needs a classification target")
    labels = (x[:, 0] > 1.2).astype(int)
    path = _write(tmp_path / "c.csv", ["a", "b", "c", "rare"], zip(*x.T, labels))
    status, out, _ = _run(["train", "--data", path, "--epochs", "5", "--class-weight", "balanced"], capsys)
    assert status == 0 and "test accuracy" in out


def test_an_r_export_reads_as_written(tmp_path, capsys):
    """R's write.csv: every text quoted, row names as an unnamed first column, NA for missing."""
    island, flipper, mass, species, sex = _penguins(120)
    lines = ['"","island","flipper","species"']
    for i, (a, b, c) in enumerate(zip(island, flipper, species), start=1):
        lines.append(f'"{i}","{a}",{"NA" if i == 5 else int(b)},"{c}"')
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    status, out, _ = _run(["train", "--data", str(path), "--missing", "median", "--epochs", "20"], capsys)
    assert status == 0 and "4 features" in out and "left out column ''" in out


def test_what_a_tryout_found(tmp_path, capsys):
    """Decimal commas and dates are refused as categories, --drop cannot drop the target, a model
    trained with --missing drop scores and predicts files with missing features, fill counts are
    the rows filled."""
    x = rng.normal(size=(80, 2))
    label = np.where(x[:, 0] > 0, "yes", "no")
    euro = tmp_path / "euro.csv"
    euro.write_text("a;b;label\n" + "".join(f"{a:.1f};{b:.1f};{c}\n".replace(".", ",")
                                            for a, b, c in zip(x[:, 0], x[:, 1], label)))
    status, _, err = _run(["train", "--data", str(euro)], capsys)
    _error(status, err, "holds numbers with decimal commas")
    dates = _write(tmp_path / "d.csv", ["day", "x", "label"],
                   [[f"2024-01-{i % 28 + 1:02d}", a, c] for i, (a, c) in enumerate(zip(x[:, 0], label))])
    status, _, err = _run(["train", "--data", dates], capsys)
    _error(status, err, "column 'day' holds dates ('2024-01-01'), not categories")
    cells = [[f"{a:.4f}", f"{b:.4f}", c] for a, b, c in zip(x[:, 0], x[:, 1], label)]
    cells[5][1] = "NA"
    cells[6][2] = "NA"
    path = _write(tmp_path / "na.csv", ["a", "b", "answer"], cells)
    status, _, err = _run(["train", "--data", path, "--drop", "answer"], capsys)
    _error(status, err, "--drop lists 'answer', which is the target")
    status, out, _ = _run(["train", "--data", path, "--missing", "mean", "--epochs", "1"], capsys)
    assert status == 0 and "'b' (1)" in out
    model = str(tmp_path / "m.safetensors")
    assert _run(["train", "--data", path, "--missing", "drop", "--epochs", "1", "--save", model], capsys)[0] == 0
    status, out, err = _run(["evaluate", model, "--data", path], capsys)
    assert status == 0 and "78 samples" in out and "left out 1 row(s) with a missing feature" in err
    status, out, err = _run(["predict", model, "--data", path], capsys)
    lines = out.splitlines()
    assert status == 0 and len(lines) == 81 and lines[6] in ('', '""') and lines[7] in ("yes", "no")
