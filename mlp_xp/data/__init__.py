"""Data: bundled and streamed datasets, splits, scaling and tables (:mod:`~mlp_xp.data.datasets`),
and the checks every input passes before training (:mod:`~mlp_xp.data.checks`)."""
