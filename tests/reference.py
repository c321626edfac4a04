"""An obviously-correct model of one KV cache, written with plain Python loops over NumPy.

Each layer is a NumPy array (B, H, length, D) per key/value; positions are
written token by token, row by row. Slow on purpose: it is the oracle.
"""
import numpy as np


class ReferenceCache:
    def __init__(self, max_cache_len=None, max_batch_size=None):
        self.max_cache_len = max_cache_len
        self.max_batch_size = max_batch_size
        self.layers = {}  # layer_idx -> [keys, values]

    def _check_batch(self, batch):
        if self.max_batch_size is not None and batch > self.max_batch_size:
            raise ValueError("past max_batch_size")

    def batch(self):
        return next((k.shape[0] for k, _ in self.layers.values()), None)

    def update(self, k, v, layer_idx, positions):
        """``positions``: None (append) or an int / list / list of lists of ints."""
        batch, n_tokens = k.shape[0], k.shape[-2]
        self._check_batch(batch)
        old = self.layers.get(layer_idx)
        length = 0 if old is None else old[0].shape[-2]
        if positions is None:
            rows = [list(range(length, length + n_tokens))] * batch
        elif isinstance(positions, int):
            rows = [[positions]] * batch
        elif isinstance(positions[0], int):
            rows = [list(positions)] * batch
        else:
            rows = [list(r) for r in positions]
        new_length = max([length] + [p + 1 for row in rows for p in row])
        if self.max_cache_len is not None and new_length > self.max_cache_len:
            raise ValueError("past max_cache_len")
        keys = np.zeros(k.shape[:-2] + (new_length, k.shape[-1]), k.dtype)
        values = np.zeros(v.shape[:-2] + (new_length, v.shape[-1]), v.dtype)
        if old is not None:
            keys[..., :length, :] = old[0]
            values[..., :length, :] = old[1]
        for b, row in enumerate(rows):
            for t, p in enumerate(row):
                keys[b, ..., p, :] = k[b, ..., t, :]
                values[b, ..., p, :] = v[b, ..., t, :]
        self.layers[layer_idx] = [keys, values]

    def select(self, rows):
        if self.layers:
            self._check_batch(len(rows))
        for layer in self.layers.values():
            layer[0] = layer[0][list(rows)]
            layer[1] = layer[1][list(rows)]

    def repeat(self, repeats):
        self.select([b for b in range(self.batch()) for _ in range(repeats)])

    def crop(self, max_length):
        for layer in self.layers.values():
            length = layer[0].shape[-2]
            if length > max_length:
                layer[0] = layer[0][..., length - max_length:, :]
                layer[1] = layer[1][..., length - max_length:, :]

    def trim(self, n):
        if any(k.shape[-2] < n for k, _ in self.layers.values()) or (n and not self.layers):
            raise ValueError("past the start")
        for layer in self.layers.values():
            length = layer[0].shape[-2]
            layer[0], layer[1] = layer[0][..., :length - n, :], layer[1][..., :length - n, :]

    def reset(self):
        self.layers = {}


class ReferenceHistory:
    """Every token ever appended to one layer, in full precision: the oracle of the append-only
    layers (sliding window, quantized). ``keys``/``values`` are (B, H, n, D) NumPy arrays."""

    def __init__(self):
        self.keys = self.values = None

    @property
    def length(self):
        return 0 if self.keys is None else self.keys.shape[-2]

    def append(self, k, v):
        self.keys = k.copy() if self.keys is None else np.concatenate([self.keys, k], axis=-2)
        self.values = v.copy() if self.values is None else np.concatenate([self.values, v], axis=-2)

    def select(self, rows):
        if self.keys is not None:
            self.keys, self.values = self.keys[list(rows)], self.values[list(rows)]

    def crop(self, max_length):
        if self.keys is not None and self.length > max_length:
            start = self.length - max_length
            self.keys, self.values = self.keys[..., start:, :], self.values[..., start:, :]


    def trim(self, n):
        if self.keys is not None:
            self.keys, self.values = self.keys[..., :self.length - n, :], self.values[..., :self.length - n, :]


def window_positions(length, window, sinks, new_tokens=1):
    """The absolute positions a sliding window returns after an update of ``new_tokens`` tokens."""
    first = max(sinks, length - window - new_tokens + 1)
    return list(range(min(sinks, length))) + list(range(first, length))
