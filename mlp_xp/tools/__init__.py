"""Tools that use a model: backend comparison (:mod:`~mlp_xp.tools.compare`), gradient checks
(:mod:`~mlp_xp.tools.gradcheck`), layer statistics (:mod:`~mlp_xp.tools.diagnostics`) and the
count of what a step asks of a device (:mod:`~mlp_xp.tools.counting`)."""
