"""The network's pieces: layers (:mod:`~mlp_xp.nn.layers`), losses computed from logits
(:mod:`~mlp_xp.nn.losses`) and weight initializers (:mod:`~mlp_xp.nn.initializers`). Layers and
losses compute through the model's :mod:`mlp_xp.ops`."""

from . import initializers, layers, losses

__all__ = ["initializers", "layers", "losses"]
