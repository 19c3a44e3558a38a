"""The benchmark harnesses run (in their small modes) and write the results they promise."""

import json
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def test_gpu_harness_in_smoke_mode(tmp_path):
    pytest.importorskip("torch", reason="the GPU harness compares against PyTorch")
    output = tmp_path / "gpu.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu.py"), "--smoke", "--rounds", "1", "--steps", "2",
                             "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert report["smoke"] and set(report["workloads"]) == {"G1 float32", "G1 tf32", "G1 float16", "G2 float32", "G3",
                                                            "sklearn"}
    sklearn_rows = report["workloads"]["sklearn"]
    assert sklearn_rows["mlp_xp.sklearn"]["final_loss"] == pytest.approx(sklearn_rows["scikit-learn (CPU)"]["final_loss"],
                                                                         rel=1e-4)  # the same fit
    g2 = report["workloads"]["G2 float32"]["contenders"]
    assert {"floor", "mlp_xp-cupy", "mlp_xp-torch", "torch-eager"} <= set(g2)
    assert g2["mlp_xp-cupy"]["loss"] == pytest.approx(g2["torch-eager"]["loss"], rel=1e-3)  # same computation
    g1 = report["workloads"]["G1 float16"]["contenders"]
    assert g1["mlp_xp-cupy"]["loss"] == pytest.approx(g1["torch-eager"]["loss"], rel=2e-2)  # mixed precision too
    assert "GPU" in report["workloads"]["G2 float32"]["not_run"]["torch-graphs"]


def test_distributed_harness(tmp_path):
    import os
    import shutil

    pytest.importorskip("mpi4py")
    if shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")) is None:
        pytest.skip("no mpiexec here (the [test] extra's mpich wheel has one)")
    output = tmp_path / "distributed.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "distributed.py"), "--workloads", "W2", "--rounds", "1",
                             "--epochs", "1", "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert 0 < report["workloads"]["W2"]["scaling_efficiency"] < 2
    assert 0.5 < report["nvlink_model"]["G1 batch 8192 (1024 per GPU)"]["efficiency"] < 1
