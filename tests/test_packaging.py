"""What ``pip install .`` gives a user: every module and data file, the console script, --version."""

import pathlib
import subprocess
import sys
import zipfile

import pytest

import mlp_xp

SOURCE = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = SOURCE / "mlp_xp"


def _package_tree():
    """Every file of the source package a wheel must carry, as wheel paths."""
    return {path.relative_to(SOURCE).as_posix() for path in PACKAGE.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (in the [test] extra)")
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(folder), str(SOURCE)], capture_output=True, text=True, timeout=300,
                            cwd=folder)
    assert result.returncode == 0, result.stderr
    (path,) = folder.glob("mlp_xp-*.whl")
    return path


def test_wheel_holds_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tree = _package_tree()
    assert {"mlp_xp/ops/__init__.py", "mlp_xp/data/digits.npz", "mlp_xp/__main__.py"} <= tree
    assert tree - names == set(), "files of mlp_xp/ missing from the wheel"
    assert {name for name in names if name.startswith("mlp_xp/")} - tree == set(), "wheel files not in mlp_xp/"


def test_wheel_declares_the_console_script_and_version(wheel):
    archive = zipfile.ZipFile(wheel)
    info = next(name for name in archive.namelist() if name.endswith(".dist-info/entry_points.txt"))
    assert "mlp-xp = mlp_xp.cli:main" in archive.read(info).decode()
    assert wheel.name.startswith(f"mlp_xp-{mlp_xp.__version__}-")


def test_the_package_under_test_is_this_tree_or_its_installed_copy():
    """An installed (non-editable) copy must hold exactly the source tree's files, byte for byte."""
    installed = pathlib.Path(mlp_xp.__file__).resolve().parent
    if installed == PACKAGE:  # an editable install or a run from the source tree
        return
    for name in _package_tree():
        relative = pathlib.Path(name).relative_to("mlp_xp")
        assert (installed / relative).read_bytes() == (PACKAGE / relative).read_bytes(), f"{name} differs"


@pytest.mark.parametrize("command", [["-m", "mlp_xp", "--version"], ["-m", "mlp_xp.cli", "--version"]])
def test_version_from_the_command_line(command, tmp_path):
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"mlp-xp {mlp_xp.__version__}"


def test_the_wheel_depends_on_numba_where_it_has_wheels_and_import_stays_light(wheel):
    """numba is a core dependency (behind markers: CPython below 3.15), and ``import mlp_xp`` does not
    import it (nor torch, jax or cupy): the first numpy training step does."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA")))
    requires = [line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist: numba")]
    assert any("platform_python_implementation" in line and "python_version" in line and "extra" not in line
               for line in requires), requires
    code = ("import sys, mlp_xp; heavy = {'numba', 'torch', 'jax', 'cupy', 'scipy'} & set(sys.modules); "
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
