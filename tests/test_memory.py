"""Training holds what Adam needs and little more: the gradient, two moments, no copy of the
weights (benchmarks/memory.py measures M1, the 2048-wide net; this checks a smaller one whose
update still goes in pieces)."""

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from memory import peak_beyond_parameters  # noqa: E402

OPS = ["ufunc", "generic", "strict-device1"]
if importlib.util.find_spec("numba") is not None:
    OPS.append("numba")


@pytest.mark.parametrize("ops_name", OPS)
def test_fit_with_adam_holds_at_most_four_times_the_parameters(ops_name):
    # P = 2.1 M: above one piece of the generic update (GenericOps.chunk_size), so it goes in pieces
    peak = peak_beyond_parameters(ops_name, widths=(1024, 1024, 1024, 10), batch=8, rows=32, epochs=2)
    assert 2.9 < peak <= 4.0, f"{ops_name}: {peak:.2f} P"
