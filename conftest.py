"""Doctest collection: modules whose optional dependency is missing are not collected."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("sklearn") else ["mlp_xp/sklearn.py"]
