"""Every Python block in README.md and docs/**/*.md runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
DOCS = sorted((README.parent / "docs").rglob("*.md"))
PAGES = (README, *DOCS)
BLOCKS = [block for page in PAGES for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
NAMES = [f"{page.relative_to(README.parent)} block {index}" for page in PAGES
         for index, _ in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))]


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
    assert re.search(r"```python\n", README.read_text()), "the README shows no Python example"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=NAMES)
def test_readme_block_runs(index, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    for module in re.findall(r"^(?:from|import) (sklearn|torch|safetensors\.torch|matplotlib)\b", BLOCKS[index], re.M):
        pytest.importorskip(module.split(".")[0], reason=f"the block needs {module}")
    namespace = {}
    exec(compile(BLOCKS[index], NAMES[index], "exec"), namespace)
    if "evaluate(X_test" in BLOCKS[index]:
        printed = capsys.readouterr().out
        accuracy = float(re.search(r"'accuracy': ([0-9.]+)", printed).group(1))
        assert accuracy > 0.93


def test_readme_command_line_walkthrough_runs(tmp_path, monkeypatch):
    """The CSV made by the command-line guide's Python block goes through its train / predict / evaluate
    commands (docs/cli.md)."""
    import shutil
    import subprocess

    make_csv = next(block for block in BLOCKS if "plants.csv" in block)
    commands = next(block for page in PAGES for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
                    if "mlp-xp predict" in block and "plants.csv" in block)
    monkeypatch.chdir(tmp_path)
    exec(compile(make_csv, "plants block", "exec"), {})
    assert shutil.which("mlp-xp"), "the mlp-xp console script is not installed"
    for line in commands.strip().splitlines():
        result = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, f"{line}: {result.stderr}"
    predicted = (tmp_path / "predicted.csv").read_text().splitlines()
    assert predicted[0] == "species,probability_setosa,probability_versicolor,probability_virginica"
    assert predicted[1].split(",")[0] in ("setosa", "versicolor", "virginica")
    prices = [float(line) for line in (tmp_path / "prices.csv").read_text().splitlines()[1:]]
    assert len(prices) == 300 and 950 < sum(prices) / len(prices) < 1050
