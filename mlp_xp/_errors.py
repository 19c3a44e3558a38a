"""The library's own exception types."""


class ShapeError(ValueError):
    """A layer received features of a size it cannot take.

    The message names the layer index, the layer and both shapes.
    """


class NonFiniteError(FloatingPointError):
    """Training (or predict / evaluate) produced NaN or infinity.

    The message names the epoch, the step and the first parameter (or the loss)
    that went non-finite; from predict and evaluate, the first row and the first layer
    whose output is not finite. The model keeps its last finite weights.

    Attributes:
        epoch: 1-based epoch in which it happened (None outside ``fit``).
        step: 1-based optimizer step within that epoch.
        name: state_dict key of the first non-finite parameter, ``"loss"``, ``"gradient"`` (a
            finite loss whose gradient overflowed), ``"optimizer.<field>"`` (optimizer state), or
            ``"output"`` (predict / evaluate: a layer's output overflowed).
    """

    def __init__(self, message, *, epoch=None, step=None, name=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.name = name
