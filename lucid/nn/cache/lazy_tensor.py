"""``LazyTensor``: a :class:`~lucid.Tensor` whose array is built the first time it is read.

A cache can hand out what attention reads cheaply (codes, or a window out of temporal order)
without paying for the form a user reads: :func:`~lucid.nn.functional.scaled_dot_product_attention`
recognises the subclasses and reads their parts; anything else reads ``array``.
"""
from __future__ import annotations

from ... import dtypes
from ...tensor import Tensor

_ARRAY = Tensor.__dict__["array"]  # the slot that keeps the array once it is built


class LazyTensor(Tensor):
    """A tensor whose ``array`` is built by ``_build()`` on first read, then kept.

    Subclasses say their ``shape`` and ``_stored_dtype`` (a backend dtype) without building
    the array.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> from lucid.nn.cache.lazy_tensor import LazyTensor
    >>> layer = nn.SlidingWindowLayer(window=2, sink_tokens=1)
    >>> keys, _ = layer.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4))
    >>> keys, _ = layer.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4))
    >>> isinstance(keys, LazyTensor), keys.built, keys.shape, keys.numpy().shape, keys.built
    (True, False, (1, 1, 3, 4), (1, 1, 3, 4), True)
    """

    __slots__ = ()

    def _build(self):
        raise NotImplementedError

    @property
    def array(self):
        """The array, built on first read."""
        try:
            return _ARRAY.__get__(self, Tensor)
        except AttributeError:
            _ARRAY.__set__(self, self._build())
            return _ARRAY.__get__(self, Tensor)

    @property
    def built(self) -> bool:
        """Whether ``array`` has been read (and so built)."""
        try:
            _ARRAY.__get__(self, Tensor)
        except AttributeError:
            return False
        return True

    @property
    def ndim(self) -> int:
        """Number of axes (known without building the array)."""
        return len(self.shape)

    @property
    def dtype(self) -> dtypes.DType:
        """The lucid dtype (known without building the array)."""
        return dtypes.from_backend(self.backend, self._stored_dtype)
