"""``WindowTensor``: the sinks and the window of a sliding-window layer, joined only when read."""
from __future__ import annotations

from .lazy_tensor import LazyTensor


class WindowTensor(LazyTensor):
    """Keys or values of a :class:`~lucid.nn.SlidingWindowLayer` whose window has slid: the
    sinks (if any), then the window, in temporal order.

    The layer keeps the window as a ring whose oldest slot moves along at every step, so the
    ordered whole would be a copy; it is made the first time ``array`` is read. ``unordered``
    is a view of the same positions as the layer holds them (the sinks, then the window's ring
    out of order), which
    :func:`~lucid.nn.functional.scaled_dot_product_attention` reads when every query may see
    every key: the softmax does not depend on the keys' order. Like every tensor a cache
    returns, it reads the layer's storage, and is valid until the next call that changes the
    cache.

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> layer = nn.SlidingWindowLayer(window=3, sink_tokens=1)
    >>> keys, _ = layer.update(lucid.arange(7.0).reshape(1, 1, 7, 1), lucid.zeros(1, 1, 7, 1))
    >>> keys, _ = layer.update(lucid.full((1, 1, 1, 1), 7.0), lucid.zeros(1, 1, 1, 1))
    >>> keys.numpy().ravel().tolist(), keys.unordered.ravel().tolist()
    ([0.0, 5.0, 6.0, 7.0], [0.0, 7.0, 5.0, 6.0])
    """

    __slots__ = ("buffer", "sinks", "window", "oldest")

    def __init__(self, buffer, sinks: int, window: int, oldest: int, backend):
        # buffer: the layer's (..., sinks + window, D) storage, the sinks then the ring, whose
        # slot `oldest` holds the window's first position.
        self.buffer, self.sinks, self.window, self.oldest, self.backend = buffer, sinks, window, oldest, backend

    @property
    def unordered(self):
        """The sinks, then the window's ring as it lies (the oldest position not first): a view."""
        return self.buffer

    def _build(self):
        buffer, sinks, cut = self.buffer, self.sinks, self.sinks + self.oldest
        return self.backend.xp.concat([buffer[..., :sinks, :], buffer[..., cut:, :], buffer[..., sinks:cut, :]], axis=-2)

    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each axis (read without joining)."""
        return tuple(self.buffer.shape)

    @property
    def _stored_dtype(self):
        return self.buffer.dtype
