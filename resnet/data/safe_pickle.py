"""Load CIFAR-10's Python batches without letting a pickle run code.

`pickle.load` calls whatever callable a file names, so a crafted "data_batch_1" can run any command.
The official batches hold only a dict of bytes keys, lists, ints, bytes and one uint8 numpy array;
this unpickler admits exactly the few globals those need and refuses every other one before it is
looked up, let alone called.
"""

import io
import pickle

# (module, name) pairs the official batches reference. numpy arrays pickle through
# _reconstruct/ndarray/dtype (numpy 2 spells the module numpy._core); Python 3 writing protocol 2
# encodes bytes through _codecs.encode. None of these can reach the file system or a shell.
_ALLOWED = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class ForbiddenPickle(pickle.UnpicklingError):
    """The pickle names a global outside the CIFAR format: refused, never called."""


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise ForbiddenPickle(
            f"refers to {module}.{name}, which a CIFAR batch never holds (refused, not run)")


def loads(data: bytes):
    """Unpickle bytes written in the CIFAR-10 Python format (latin1 for Python 2's str)."""
    return _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
