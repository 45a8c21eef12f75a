"""Reading pickle files without running code from them.

The MultiSports / MOC formats are pickles (ground truth ``*_GT.pkl``, ``frame_detections.pkl``,
``video_detections.pkl``). A plain ``pickle.load`` imports and calls whatever the file names, so a
crafted file runs code. Every pickle the project reads goes through :func:`load` /
:func:`loads`, whose unpickler admits only what those formats hold:

- Python containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None need no
  import; ``set``, ``frozenset``, ``complex``, ``bytes``, ``bytearray`` and ``collections.OrderedDict``
  by name, under Python 3's ``builtins`` and Python 2's ``__builtin__``);
- numpy arrays, dtypes and scalars, under numpy 1's (``numpy.core``) and numpy 2's
  (``numpy._core``) module paths (``_reconstruct``, ``_frombuffer``, ``scalar``, ``ndarray``,
  ``dtype``);
- ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for ``bytes``.

Anything else (``os.system``, ``builtins.eval``, a class of some package, ...) is refused before it
is imported, with a :class:`RefusedPickle` naming the file and the global. Python 2 pickles (the
official MultiSports files were written by Python 2 era code) are read with ``encoding="latin1"``
when their byte strings are not ASCII, as numpy documents for its arrays.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

_BUILTINS = ("set", "frozenset", "complex", "bytes", "bytearray")


class RefusedPickle(pickle.UnpicklingError, ValueError):
    """A pickle names a global outside the allow-list; nothing from it was imported or called."""


def _allowed() -> dict[tuple[str, str], object]:
    import builtins
    import codecs
    from collections import OrderedDict

    import numpy as np

    try:  # numpy 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric
    table: dict[tuple[str, str], object] = {}
    for pkg in ("numpy.core", "numpy._core"):  # files name the module of the numpy that wrote them
        table[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{pkg}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    table[("numpy", "ndarray")] = np.ndarray
    table[("numpy", "dtype")] = np.dtype
    for mod in ("builtins", "__builtin__"):
        for name in _BUILTINS:
            table[(mod, name)] = getattr(builtins, name)
    table[("_codecs", "encode")] = codecs.encode
    table[("collections", "OrderedDict")] = OrderedDict
    return table


_ALLOWED: dict[tuple[str, str], object] | None = None


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise RefusedPickle(f"persistent id {pid!r}")


def loads(data: bytes, where: str | os.PathLike = "pickle", kind: str = "MultiSports files"):
    """Unpickle ``data`` with the allow-list; errors name ``where`` (and ``kind``, what the file should be).

    :class:`RefusedPickle` for a global outside the allow-list, ValueError for a damaged pickle.
    """
    for encoding in ("ASCII", "latin1"):  # Python 3 pickles never need latin1; Python 2 ones may
        try:
            return _Unpickler(io.BytesIO(data), encoding=encoding).load()
        except RefusedPickle as exc:
            raise RefusedPickle(f"{where}: refused to load this pickle: it imports or calls {exc}, which "
                                f"{kind} do not hold (only containers, numbers, strings and "
                                "numpy arrays are allowed); nothing in the file was run") from None
        except UnicodeDecodeError:
            if encoding == "latin1":
                raise ValueError(f"{where}: cannot read pickle: undecodable byte string") from None
        except Exception as exc:  # truncated / not a pickle / inconsistent numpy state
            raise ValueError(f"{where}: cannot read pickle: {type(exc).__name__}: {exc}") from None
    raise AssertionError("unreachable")


def load(path: str | os.PathLike, kind: str = "MultiSports files"):
    """Read a pickle file with the allow-list (see :func:`loads`); FileNotFoundError if missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return loads(path.read_bytes(), path, kind)
