"""Numerically stable elementwise building blocks shared by layers and losses.

Each takes the namespace ``xp`` first and uses only Array API functions.
"""


def sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow: exp is only ever taken of -|x| <= 0."""
    e = xp.exp(-xp.abs(x))
    s = 1.0 / (1.0 + e)
    return xp.where(x >= 0, s, e * s)


def softplus(xp, x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): finite for any finite x."""
    return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def softmax(xp, x):
    """Softmax over the last axis, shifted by the row maximum so exp never overflows."""
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def log_softmax(xp, x):
    """log(softmax(x)) over the last axis by log-sum-exp: finite for any finite x."""
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
