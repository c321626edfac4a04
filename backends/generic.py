"""The backend interface, with a generic implementation over any array-API namespace.

Every operation here is written once against ``self.xp`` and uses only what the
array API standard (2024.12) offers, so it runs on ``array-api-strict``.  The
NumPy and CuPy modules subclass :class:`Backend` and override the few
operations they can do faster.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

_DLPACK_CPU = 1


class Backend:
    """One array library as lucid sees it: a namespace plus a few extra operations.

    Parameters
    ----------
    name : str
        Registry name, e.g. ``"numpy"``.
    xp : module
        The array-API namespace (from ``array-api-compat`` where needed).
    array_type : type
        The class of the library's arrays; used to recognise them cheaply.
    device : str
        ``"cpu"`` or ``"gpu"``: where this backend keeps its arrays.

    Examples
    --------
    >>> import lucid_backends
    >>> b = lucid_backends.get_backend()
    >>> b.name, b.device
    ('numpy', 'cpu')
    """

    def __init__(self, name: str, xp, array_type: type, device: str):
        self.name = name
        self.xp = xp
        self.array_type = array_type
        self.device = device

    def __repr__(self) -> str:
        return f"<backend {self.name!r} on {self.device}>"

    # -- dtypes and memory -----------------------------------------------
    def dtype(self, name: str):
        """This backend's dtype called ``name`` (``"float32"``, ``"bfloat16"``...), or ``None``.

        Examples
        --------
        >>> import lucid_backends
        >>> lucid_backends.load_backend("array_api_strict").dtype("bfloat16") is None
        True
        """
        return getattr(self.xp, name, None)

    def total_memory(self) -> int:
        """Bytes of memory on this backend's device (physical RAM for the CPU).

        Allocations larger than this can never succeed; callers use it to tell an absurd
        request (a ``ValueError`` naming the argument) from an out-of-memory fault.

        Examples
        --------
        >>> import lucid_backends
        >>> lucid_backends.load_backend("numpy").total_memory() > 2**20
        True
        """
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    # -- moving data -----------------------------------------------------
    def from_host(self, array: np.ndarray):
        """Return a backend array holding the contents of a NumPy array.

        Examples
        --------
        >>> import numpy as np, lucid_backends
        >>> strict = lucid_backends.load_backend("array_api_strict")
        >>> strict.from_host(np.ones(2)).shape
        (2,)
        """
        return self.xp.asarray(array)

    def to_host(self, array) -> np.ndarray:
        """Return a NumPy array holding the contents of a backend array.

        Examples
        --------
        >>> import lucid_backends
        >>> strict = lucid_backends.load_backend("array_api_strict")
        >>> strict.to_host(strict.xp.ones(2)).tolist()
        [1.0, 1.0]
        """
        return np.from_dlpack(array)

    def from_dlpack(self, obj):
        """Import any DLPack producer on this backend's device.

        Examples
        --------
        >>> import numpy as np, lucid_backends
        >>> lucid_backends.load_backend("numpy").from_dlpack(np.arange(3)).tolist()
        [0, 1, 2]
        """
        if obj.__dlpack_device__()[0] == _DLPACK_CPU:
            return self.from_host(np.from_dlpack(obj))
        return self.xp.from_dlpack(obj)

    def synchronize(self) -> None:
        """Block until queued work on the device is finished (no-op on CPU).

        Examples
        --------
        >>> import lucid_backends
        >>> lucid_backends.get_backend().synchronize()
        """

    # -- copying -----------------------------------------------------------
    def copy_rows(self, dst, src, rows) -> None:
        """Set ``dst[i] = src[rows[i]]`` along axis 0, in place (``rows``: host ints).

        One slice assignment per row: the bytes move once, straight into ``dst`` (a gather
        followed by an assignment would move them twice). Batch sizes are small.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> dst = b.xp.zeros((3, 2))
        >>> b.copy_rows(dst, b.xp.asarray([[1.0, 1.0], [2.0, 2.0]]), [1, 0, 1])
        >>> b.to_host(dst)[:, 0].tolist()
        [2.0, 1.0, 2.0]
        """
        for i, row in enumerate(rows):
            dst[i, ...] = src[row, ...]

    def take_rows(self, src, rows):
        """A new array of the rows ``rows`` (host ints) of ``src`` along axis 0.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> b.to_host(b.take_rows(b.xp.asarray([[1.0], [2.0]]), [1, 1])).ravel().tolist()
        [2.0, 2.0]
        """
        return self.xp.take(src, self.xp.asarray(rows), axis=0)

    # -- running independent pieces of work -----------------------------------
    def threads(self) -> int:
        """How many blocks :meth:`map_blocks` runs at once (1: one after another). ``ValueError``
        when a setting it reads (``LUCID_NUM_THREADS`` on NumPy) is wrong.

        Examples
        --------
        >>> import lucid_backends
        >>> lucid_backends.load_backend("array_api_strict").threads()
        1
        """
        return 1

    def map_blocks(self, fn: Callable[[Any], Any], blocks: Iterable) -> list:
        """``[fn(b) for b in blocks]``; backends may run the calls concurrently.

        ``fn`` must be safe to call from several threads at once on different blocks (it
        reads shared arrays and returns new ones). The NumPy backend spreads the blocks over
        the CPU's cores; a GPU backend queues them in order on its stream.

        Examples
        --------
        >>> import lucid_backends
        >>> lucid_backends.load_backend("array_api_strict").map_blocks(lambda b: b * b, range(4))
        [0, 1, 4, 9]
        """
        return [fn(block) for block in blocks]

    def parallel_region(self) -> contextlib.AbstractContextManager:
        """A context for a stretch of work done mostly through :meth:`map_blocks`.

        On NumPy, BLAS stays at one thread per call for the whole stretch, not only inside
        each ``map_blocks``: a multithreaded BLAS call in between would leave a thread
        spinning, after it returns, on a core the next blocks need. Elsewhere it does nothing.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> with b.parallel_region():
        ...     b.map_blocks(abs, [-1, 2])
        [1, 2]
        """
        return contextlib.nullcontext()

    # -- arithmetic ---------------------------------------------------------
    def matmul_dtype(self, dtype):
        """The dtype matrix products on arrays of ``dtype`` run fastest in: ``dtype`` itself,
        unless the library lacks fast products for it (NumPy has no float16 BLAS: float32).

        Examples
        --------
        >>> import lucid_backends
        >>> strict, numpy = lucid_backends.load_backend("array_api_strict"), lucid_backends.load_backend("numpy")
        >>> strict.matmul_dtype(strict.xp.float32) == strict.xp.float32, str(numpy.matmul_dtype(numpy.dtype("float16")))
        (True, 'float32')
        """
        return dtype

    def matmul_into(self, a, b, out):
        """``a @ b`` written into ``out`` (an array of the product's shape and dtype), which
        is returned: a product repeated many times (attention's tiles) reuses one buffer
        instead of allocating each time.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> out = b.xp.empty((1, 1))
        >>> b.to_host(b.matmul_into(b.xp.asarray([[1.0, 2.0]]), b.xp.asarray([[3.0], [4.0]]), out)).tolist()
        [[11.0]]
        """
        out[...] = a @ b
        return out

    def exp2_shifted(self, x, shift=None):
        """``2 ** (x - shift)`` (``2 ** x`` when ``shift`` is None), reusing ``x``'s memory where
        the library can (``x`` is consumed).

        Softmax's numerator over a block of attention scores kept in base 2 (``exp2`` is the
        faster exponential in CuPy and in NumPy on AVX-512 CPUs; where NumPy runs only ``exp``
        as vector code, its backend computes ``exp(x ln 2)``): computed in place, it saves
        passes over the block and the memory of temporaries.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> b.to_host(b.exp2_shifted(b.xp.asarray([1.0, 3.0]), b.xp.asarray(3.0))).tolist()
        [0.25, 1.0]
        """
        return self.xp.pow(2.0, x if shift is None else x - shift)

    def exp_negated(self, x):
        """``e ** -x`` as a new array (``x`` is left as it was): SiLU's exponential.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> b.to_host(b.exp_negated(b.xp.asarray([0.0, -1.0]))).tolist() == [1.0, 2.718281828459045]
        True
        """
        return self.xp.exp(-x)

    def overflow_quietly(self) -> contextlib.AbstractContextManager:
        """A context in which float overflow gives ``inf`` (and ``inf * 0`` NaN) without a
        warning, for computations that check their results and redo what overflowed. NumPy's
        error state (thread-local) covers the array libraries that compute through NumPy;
        CuPy's kernels never warn.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("numpy")
        >>> with b.overflow_quietly():
        ...     print(b.exp2_shifted(b.xp.asarray([200.0], dtype=b.xp.float32)).tolist())
        [inf]
        """
        return np.errstate(over="ignore", invalid="ignore")

    # -- writing tokens at positions -------------------------------------
    def prepare_scatter(self, buf, values, positions, lo: int, hi: int) -> Callable[[], None]:
        """Prepare to write ``values`` into ``buf`` in place at ``positions`` along axis -2;
        return the write.

        Everything that allocates happens here; the returned call only writes. So two
        scatters (a layer's keys and values) prepared first and written after change both
        buffers or, when memory runs out while preparing, neither.

        Parameters
        ----------
        buf : array, shape ``(B, ..., C, D)``
            Destination buffer; modified in place by the returned call.
        values : array, shape ``(B, ..., T, D)``
            Tokens to write.
        positions : integer array, shape ``(T,)`` or ``(B, T)``
            Distinct, non-negative slots (per batch row for 2-D positions).
        lo, hi : int
            ``min(positions)`` and ``max(positions) + 1``, known on the host.

        Notes
        -----
        The standard has no integer-array assignment, so this version rebuilds
        the touched region ``[lo, hi)`` with ``take``/``where`` while preparing and
        writes it back with one slice assignment. NumPy and CuPy write the tokens in
        place with advanced indexing.

        Examples
        --------
        >>> import lucid_backends
        >>> b = lucid_backends.load_backend("array_api_strict")
        >>> buf = b.xp.zeros((1, 1, 4, 1))
        >>> write = b.prepare_scatter(buf, b.xp.ones((1, 1, 2, 1)), b.xp.asarray([3, 1]), 1, 4)
        >>> b.to_host(buf).ravel().tolist()
        [0.0, 0.0, 0.0, 0.0]
        >>> write(); b.to_host(buf).ravel().tolist()
        [0.0, 1.0, 0.0, 1.0]
        """
        xp = self.xp
        seq_axis = values.ndim - 2
        slots = xp.arange(lo, hi, dtype=positions.dtype)
        if positions.ndim == 1:
            match = slots[:, None] == positions[None, :]  # (R, T)
            source = xp.argmax(xp.astype(match, xp.int8), axis=1)
            gathered = xp.take(values, source, axis=seq_axis)
            mask = xp.reshape(xp.any(match, axis=1), (hi - lo, 1))
        else:
            batch = positions.shape[0]
            match = slots[None, :, None] == positions[:, None, :]  # (B, R, T)
            lead = (batch,) + (1,) * (values.ndim - 3)
            source = xp.reshape(xp.argmax(xp.astype(match, xp.int8), axis=2), lead + (hi - lo, 1))
            gathered = xp.take_along_axis(values, source, axis=seq_axis)
            mask = xp.reshape(xp.any(match, axis=2), lead + (hi - lo, 1))
        region = xp.where(mask, gathered, buf[..., lo:hi, :])

        def write() -> None:
            buf[..., lo:hi, :] = region
        return write
