"""Names for type checkers, shared by the public signatures (no runtime behaviour)."""

from __future__ import annotations

import os
from typing import Any

#: the data ``fit``, ``evaluate``, ``predict`` and the data functions take (numpy arrays, nested lists,
#: arrays of any backend)
ArrayLike = Any
#: a file path (a str or a ``pathlib.Path``)
PathLike = str | os.PathLike[str]
