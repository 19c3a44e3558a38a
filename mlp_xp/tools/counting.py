"""Count what a piece of code asks of an accelerator: array operations, host syncs, uploads.

On a GPU each array operation is a kernel launch, each host read (``float(x)``, ``bool(x)``,
a copy to numpy) stalls the pipeline until the device catches up, and each host-to-device copy
is a transfer. :func:`count_array_work` counts all three for code running on
`array_api_strict <https://data-apis.org/array-api-strict/>`_ arrays (on its simulated
``Device("device1")`` as well), so the cost of a training step can be checked on a machine with
no GPU:

    >>> import array_api_strict as xps, mlp_xp as mx
    >>> x = xps.ones(3)
    >>> with mx.counting.count_array_work() as work:
    ...     y = x * 2 + 1
    ...     total = float(xps.sum(y))
    >>> work.ops, work.syncs, work.uploads
    (3, 1, 0)

Views (indexing, ``reshape``, ``.T``) and dtype queries are not counted as operations.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["ArrayWork", "count_array_work"]

#: Array methods that read device data on the host
_SYNCS = ("__float__", "__bool__", "__int__", "__index__", "__complex__", "__array__", "__dlpack__", "__iter__")
#: namespace functions that compute nothing (metadata, views)
_FREE = {"finfo", "iinfo", "result_type", "can_cast", "isdtype", "reshape", "permute_dims", "expand_dims",
         "squeeze", "broadcast_to", "broadcast_arrays", "matrix_transpose", "asarray", "from_dlpack",
         "__array_namespace_info__", "get_array_api_strict_flags", "set_array_api_strict_flags",
         "reset_array_api_strict_flags", "ArrayAPIStrictFlags", "Device", "unstack", "meshgrid"}
_FREE_METHODS = {"__getitem__", "__array_namespace__", "__dlpack_device__", "__repr__", "__str__", "__format__",
                 "__hash__", "__init__", "__new__", "__getattribute__", "__setattr__", "__getstate__", "__sizeof__",
                 "__class__", "__dir__", "__reduce__", "__reduce_ex__", "__init_subclass__", "__subclasshook__",
                 "__delattr__", "__buffer__", "__module__", "__doc__", "__annotations__", "__slots__",
                 "__weakref__"}


class ArrayWork:
    """Counts: ``ops`` (array operations), ``syncs`` (host reads), ``uploads`` (host-to-device
    copies), ``by_name`` ({operation name: count}) to see where they come from, and ``numbers``
    ({(operation name, Python number): count}): the Python numbers handed to array operations.
    A number that changes from step to step (a bias correction computed on the host, say) shows
    as new entries in a longer run: a captured CUDA graph would replay the number of its capture."""

    def __init__(self):
        self.ops = self.syncs = self.uploads = 0
        self.by_name = {}
        self.numbers = {}

    def _op(self, name, args=()):
        self.ops += 1
        self.by_name[name] = self.by_name.get(name, 0) + 1
        for value in args:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                key = (name, value)
                self.numbers[key] = self.numbers.get(key, 0) + 1

    def __repr__(self):
        return f"ArrayWork(ops={self.ops}, syncs={self.syncs}, uploads={self.uploads})"


@contextlib.contextmanager
def count_array_work():
    """Count array operations, host syncs and uploads of array_api_strict arrays in the block.

    Yields an :class:`ArrayWork` whose counts grow while the block runs. Not thread-safe: the
    counting patches ``array_api_strict`` for the duration of the block.
    """
    import array_api_strict as xps
    from array_api_strict import _array_object

    Array = _array_object.Array
    work = ArrayWork()
    patched = []

    def patch(owner, name, replacement):
        patched.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def counting(original, name, kind):
        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            if kind == "sync":
                work.syncs += 1
            elif kind == "op":
                work._op(name, (*args, *kwargs.values()))
            return original(*args, **kwargs)
        return wrapper

    def asarray(obj, /, *args, **kwargs):
        if isinstance(obj, Array):
            if kwargs.get("copy"):
                work._op("asarray(copy)")
        else:
            work.uploads += 1
        return original_asarray(obj, *args, **kwargs)

    original_asarray = xps.asarray
    try:
        for name, value in list(vars(Array).items()):
            if not callable(value) or name in _FREE_METHODS:
                continue
            if name in _SYNCS:
                patch(Array, name, counting(value, name, "sync"))
            elif name.startswith("__"):
                patch(Array, name, counting(value, name, "op"))
        for name in xps.__all__:
            value = getattr(xps, name, None)
            if not callable(value) or isinstance(value, type) or name in _FREE:
                continue
            patch(xps, name, counting(value, name, "op"))
        patch(xps, "asarray", asarray)
        yield work
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
