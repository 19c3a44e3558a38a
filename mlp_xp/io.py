"""The file format: one record of named tensors and JSON metadata, written atomically and read
as one verified snapshot (safetensors; never pickle, so an untrusted file cannot run code).

- :func:`write` puts a sha256 checksum over the metadata and every tensor into the metadata, and
  writes to a temporary file renamed over the target: a crash mid-save leaves the previous file
  intact (and the next save in that folder removes the temporaries that a killed process, or an
  interrupted save of this one, left). A full disk is an ``OSError`` (ENOSPC) naming the file.
- :func:`open_record` opens a file once and reads from that one open file: its tensors' shapes and
  the metadata first, without reading tensor data (so a file that declares the wrong shapes is
  refused before it can take memory), then the tensors, checked against the checksum. A save that
  replaces the file meanwhile (a rename) cannot mix two files into one read.

What a record holds for a model (its layers, weights, optimizer state, generators) is
:mod:`mlp_xp.checkpoint`'s business: this module knows nothing of models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets

import numpy as np

__all__ = ["FORMAT_VERSION", "check_writable", "write", "open_record", "Record", "parse_json", "metadata_errors"]

FORMAT_VERSION = "1"


def check_writable(path, what):
    """A ValueError now, before any work, if ``path`` cannot be written later.

    The folder must exist and the file be creatable (or appendable, if it exists); it is
    probed by opening it, since ``os.access`` says yes to root everywhere, and nothing that
    exists is truncated.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path!r} is a folder, not a file")
    if not os.path.isdir(directory):
        raise ValueError(f"{what} {path!r}: the folder {directory!r} does not exist")
    existed = os.path.exists(path)
    try:
        with open(path, "a" if existed else "x"):
            pass
        if not existed:
            os.remove(path)
    except OSError as error:
        raise ValueError(f"{what} {path!r} is not writable: {error.strerror or error}") from None


def parse_json(text, key):
    """The metadata field ``key`` parsed as JSON, or a ValueError that names it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"its {key!r} metadata is nested too deeply") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"its {key!r} metadata is not valid JSON: {error}") from None


_TEMPORARY_PREFIX = ".tmp-mlp_xp-"
#: this process's temporaries being written now (by any thread): the only ones of ours kept. (No lock:
#: Ctrl-C between a lock's acquisition and its ``with`` block would leave it held; set operations are atomic.)
_WRITING = set()
#: this process's temporaries: its id, and a token of its own (containers sharing a folder can share ids)
_OWN_PREFIX = f"{_TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"


def _after_fork():  # (a forked child is another process: its own id, token and saves under way)
    global _OWN_PREFIX
    _OWN_PREFIX = f"{_TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-"
    _WRITING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _write_atomically(path, write):
    """``write(temporary)`` then rename it over ``path``: a crash leaves the old file intact.

    A symlink is written through to its target; an existing file keeps its permissions (a new
    one gets the umask's); a target that is not a regular file (a folder, a device such as
    /dev/full, a socket) is refused rather than replaced. Temporaries that killed saves left in
    that folder (named with their process id, which no longer runs), and this process's own that
    no save of it is writing now (an interrupted save's), are removed first.
    """
    target = os.path.realpath(path)
    if os.path.exists(target) and not os.path.isfile(target):
        raise ValueError(f"{path!r} is not a regular file (a folder, device or socket): refusing to replace it")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the folder {directory!r} of {path!r} does not exist")
    _remove_stale_temporaries(directory)
    if os.path.exists(target):
        mode = os.stat(target).st_mode & 0o7777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    # (the temporary's name is chosen, and listed as being written, before the file exists, all inside
    # the try: an interrupt anywhere leaves no file, or one that the next save removes)
    temporary = os.path.join(directory, f"{_OWN_PREFIX}{secrets.token_hex(8)}.safetensors")
    try:
        _WRITING.add(temporary)
        os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        write(temporary)
        os.chmod(temporary, mode)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if error.filename == temporary:  # (a read-only folder, say: name the file the user asked for)
            raise type(error)(error.errno, error.strerror, path) from None
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    finally:
        _WRITING.discard(temporary)


def _remove_stale_temporaries(directory):
    """Delete mlp_xp temporaries whose writing process is gone (left by a kill -9 mid-save), and
    this process's own that none of its saves is writing (left by an interrupted save)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_TEMPORARY_PREFIX) and name.endswith(".safetensors")):
            continue
        pid = name[len(_TEMPORARY_PREFIX):].split("-", 1)[0]
        path = os.path.join(directory, name)
        if not pid.isdigit():
            continue
        if name.startswith(_OWN_PREFIX):  # this process's (its id and its token: not a namesake's)
            if path not in _WRITING:  # (not another thread's save, under way)
                with contextlib.suppress(OSError):
                    os.remove(path)
            continue
        if int(pid) == os.getpid():  # (another process with our id: another container sharing the folder)
            continue
        if _process_alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(path)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, but not ours to signal
    return True


def _checksum(tensors, metadata):
    """sha256 over the metadata (but this checksum) and every tensor's name, dtype, shape and bytes:
    a flipped byte anywhere in a file is caught at load rather than loaded as other weights."""
    digest = hashlib.sha256()
    digest.update(json.dumps({key: value for key, value in metadata.items() if key != "checksum"},
                             sort_keys=True).encode())
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        digest.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


class Record:
    """One open mlp_xp file (from :func:`open_record`): ``shapes`` ({key: shape}) and ``metadata``
    read from its header, and :meth:`tensors`, read from the same open file."""

    def __init__(self, path, file, shapes, metadata):
        self.path, self._file, self.shapes, self.metadata = path, file, shapes, metadata

    def tensors(self):
        """Every tensor of the file, verified against the checksum written with it."""
        try:
            tensors = {key: self._file.get_tensor(key) for key in self._file.keys()}
        except Exception as error:
            raise ValueError(f"{self.path!r} is not a readable safetensors file (truncated or corrupt?): "
                             f"{error}") from None
        expected = self.metadata.get("checksum")
        if expected is not None and _checksum(tensors, self.metadata) != expected:
            raise ValueError(f"{self.path!r} is corrupt: its contents do not match the checksum saved with it")
        return tensors


@contextlib.contextmanager
def open_record(path):
    """The mlp_xp file ``path`` opened once, as a :class:`Record`: its header is read (no tensor
    data) and checked for the mlp_xp format, and its tensors are read, when asked, from the same
    open file, so that a save replacing the file in between cannot mix two files."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path!r}")
    with contextlib.ExitStack() as stack:
        try:
            file = stack.enter_context(safe_open(path, framework="numpy"))
            metadata = file.metadata() or {}
            shapes = {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
        except Exception as error:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{path!r} is not a readable safetensors file (truncated or corrupt?): "
                             f"{error}") from None
        if metadata.get("format") != "mlp_xp":
            raise ValueError(f"{path!r} is a safetensors file but not an mlp_xp model (no mlp_xp metadata)")
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path!r} has mlp_xp format version {metadata.get('format_version')!r}; "
                             f"this mlp_xp reads version {FORMAT_VERSION}")
        yield Record(path, file, shapes, metadata)


@contextlib.contextmanager
def metadata_errors(path):
    """Turn whatever malformed metadata makes the rebuilding code trip over into a ValueError
    (a ShapeError stays one) that names the file."""
    from ._errors import ShapeError

    try:
        yield
    except ImportError:
        raise
    except ShapeError as error:
        raise ShapeError(f"{os.fspath(path)!r}: {error}") from None
    except ValueError as error:  # ours already name the problem; json's need no rebuilding by type
        raise ValueError(f"{os.fspath(path)!r}: {error}") from None
    except (KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as error:
        raise ValueError(f"{os.fspath(path)!r} has malformed mlp_xp metadata: {type(error).__name__}: "
                         f"{str(error)[:200]}") from None


def write(path, tensors, metadata):
    """Write ``tensors`` ({name: numpy array}) and ``metadata`` ({str: str}) to ``path``, with a
    checksum over both, atomically (see the module's description)."""
    from safetensors.numpy import save_file

    metadata = dict(metadata, checksum=_checksum(tensors, metadata))
    path = os.fspath(path)

    def write_file(temporary):
        try:
            save_file(tensors, temporary, metadata=metadata)
        except Exception as error:  # safetensors' SafetensorError wraps the OS error (a full disk: ENOSPC)
            number = re.search(r"os error (\d+)", str(error))
            if number is None:
                raise
            code = int(number.group(1))
            raise OSError(code, os.strerror(code), path) from None  # ("[Errno 28] No space left on device: 'path'")

    _write_atomically(path, write_file)
