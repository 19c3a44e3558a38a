"""Every Python block in README.md runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, capsys):
    for module in re.findall(r"^(?:from|import) (sklearn|torch|safetensors\.torch|matplotlib)\b", BLOCKS[index], re.M):
        pytest.importorskip(module.split(".")[0], reason=f"the README block needs {module}")
    namespace = {}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    if "evaluate(X_test" in BLOCKS[index]:
        printed = capsys.readouterr().out
        accuracy = float(re.search(r"'accuracy': ([0-9.]+)", printed).group(1))
        assert accuracy > 0.93
