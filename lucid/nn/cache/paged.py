"""``PagedKVCache``: keys and values in fixed-size blocks of one pool, sequences sharing blocks
copy-on-write."""
from __future__ import annotations

import array
import collections
import hashlib
from typing import Callable

from ...tensor import Tensor
from ...validation import check_int
from .arguments import check_append, host_integers, parse_batch_indices, repeat_indices
from .base import Cache
from .cache_layer import Spec, as_arrays, check_pair, check_saved
from .paged_tensor import PagedTensor

_wrap = Tensor.wrap
#: The key position of a shorter row's padding: past every query, so causal masks hide it.
PADDING = 2**62


class PagedKVCache(Cache):
    """A cache whose memory is one pool of ``num_blocks`` blocks of ``block_size`` positions per
    layer; each sequence holds a table of the blocks its positions live in (vLLM's paged
    attention layout).

    Sequences come and go at any time (:meth:`add_sequence`, :meth:`remove_sequence`) and only
    hold the blocks their positions fill, so memory follows the live tokens. :meth:`fork` gives a
    new sequence the same blocks: nothing is copied until one of them writes into a shared
    block, and then that block only (copy-on-write). The batch operations of generation work
    the same way: ``batch_repeat_interleave`` and ``reorder_cache`` for beam search fork rows
    instead of copying their history.

    ``update`` writes the rows of :attr:`batch` (the sequences in row order; a first update
    into a cache without sequences makes one per row) and returns their keys and values,
    ``(B, ..., length, D)``, as :class:`~lucid.nn.cache.paged_tensor.PagedTensor` s: gathered
    out of the blocks when read, and read where they lie by a decode step's attention. Writes
    are appends, each row at its own length: the rows may hold different numbers of positions
    (requests of different lengths decoding together; ``cache_position`` then ``None`` or
    ``(B, T)``), shorter rows padded with zeros that :meth:`key_positions` places past every
    query. Like every tensor a cache returns, they read the cache's storage and are valid
    until the next call that changes the cache. ``get_seq_length`` answers for the first row.
    A write that needs more blocks than are free is a ``ValueError`` naming ``num_blocks``,
    and changes nothing.

    Prefix caching (vLLM's scheme): a sequence added with its prompt's ids
    (``add_sequence(tokens)``) registers each block its prompt fills, under a hash of every
    token up to the block's end (between forward passes, when every layer has written it:
    as the next sequence is added, or as it leaves); a later sequence added with
    the same leading tokens starts on those blocks (``get_seq_length`` says how many positions
    it holds; the caller prefills the rest). Blocks no sequence holds stay registered until
    their memory is needed, the least recently released first.

    Parameters
    ----------
    num_blocks : int
        Blocks in each layer's pool (>= 1), allocated at the layer's first write.
    block_size : int
        Positions per block (>= 1).

    Examples
    --------
    >>> import lucid, lucid.nn as nn
    >>> cache = nn.PagedKVCache(num_blocks=8, block_size=4)
    >>> k, v = cache.update(lucid.randn(1, 2, 6, 8), lucid.randn(1, 2, 6, 8), 0)
    >>> k.shape, cache.blocks_used()
    ((1, 2, 6, 8), 2)
    >>> cache.batch_repeat_interleave(3)  # three rows on the same two blocks
    >>> cache.blocks_used()
    2
    >>> _ = cache.update(lucid.randn(3, 2, 1, 8), lucid.randn(3, 2, 1, 8), 0)
    >>> cache.blocks_used()  # each row copied the block it wrote into, and only that one
    4
    """

    def __init__(self, num_blocks: int, block_size: int = 16):
        self.num_blocks = check_int(num_blocks, "num_blocks", minimum=1)
        self.block_size = check_int(block_size, "block_size", minimum=1)
        self.pools: list = []  # per layer: (keys, values, spec), or None before its first write
        self.tables: dict[int, list[int]] = {}  # sequence -> its blocks, in position order
        self.lengths: dict[int, list[int]] = {}  # sequence -> positions held, per layer
        self.batch: list[int] = []  # the sequences update() writes, in row order
        self._refs = [0] * self.num_blocks
        self._free = list(range(self.num_blocks - 1, -1, -1))  # popped from the end: block 0 first
        self._cached: collections.OrderedDict[int, None] = collections.OrderedDict()  # unheld, registered: LRU
        self._hash_of: dict[int, str] = {}  # registered block -> the hash of every token up to its end
        self._block_of: dict[str, int] = {}
        self._tokens: dict[int, list] = {}  # sequence -> the prompt ids it was added with
        self._next = 0

    # -- sequences ---------------------------------------------------------
    def add_sequence(self, tokens=None) -> int:
        """A new sequence, appended to :attr:`batch`; its id. With ``tokens`` (the prompt's ids)
        it starts on the registered blocks of its longest cached prefix (leaving at least one
        token to prefill), and registers its own prompt blocks once written.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(8, block_size=2)
        >>> first = cache.add_sequence(tokens=[5, 6, 7, 8, 9])
        >>> _ = cache.update(lucid.randn(1, 1, 5, 4), lucid.randn(1, 1, 5, 4), 0)
        >>> cache.batch = []
        >>> second = cache.add_sequence(tokens=[5, 6, 7, 8, 1, 2])
        >>> cache.get_seq_length(0), cache.tables[second] == cache.tables[first][:2]
        (4, True)
        """
        if tokens is not None:
            # Between forward passes every layer has written what the sequences hold: the time
            # to register their prompt blocks (mid-pass, later layers would still write them).
            self._register(list(self.tables))
        seq = self._new_id()
        self.tables[seq], self.lengths[seq] = [], []
        if tokens is not None:
            ids = host_integers(tokens, "tokens")
            if ids.ndim != 1:
                raise ValueError(f"tokens must be a 1-D sequence of ids, got shape {tuple(ids.shape)}")
            self._tokens[seq] = [int(t) for t in ids]
            for digest in self._digests(self._tokens[seq])[:(len(ids) - 1) // self.block_size]:
                block = self._block_of.get(digest)
                if block is None:
                    break
                self._cached.pop(block, None)
                self._refs[block] += 1
                self.tables[seq].append(block)
            held = len(self.tables[seq]) * self.block_size
            self.lengths[seq] = [held] * len(self.pools) if held else []
        self.batch.append(seq)
        return seq

    def _digests(self, tokens: list) -> list:
        """The hash of every token up to the end of each whole block of ``tokens``."""
        digest, out = hashlib.sha256(f"lucid-paged/{self.block_size}".encode()), []
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            digest.update(array.array("q", tokens[start:start + self.block_size]).tobytes())
            out.append(digest.hexdigest())
        return out

    def _register(self, seqs: list) -> None:
        """Register the prompt blocks of ``seqs`` that every layer has filled (called between
        forward passes: when a sequence is added with its tokens, and when one leaves)."""
        for seq in seqs:
            tokens = self._tokens.get(seq)
            if not tokens or not self.lengths[seq]:
                continue
            written = min(self.lengths[seq]) if len(self.lengths[seq]) == len(self.pools) else 0
            full = min(written, len(tokens)) // self.block_size
            for block, digest in zip(self.tables[seq][:full], self._digests(tokens[:full * self.block_size])):
                if block not in self._hash_of and digest not in self._block_of:
                    self._hash_of[block], self._block_of[digest] = digest, block

    def fork(self, seq: int) -> int:
        """A new sequence holding ``seq``'s positions on the same blocks (nothing copied),
        appended to :attr:`batch`; its id.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=4)
        >>> _ = cache.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2), 0)
        >>> twin = cache.fork(0)
        >>> cache.tables[twin] == cache.tables[0], cache.blocks_used()
        (True, 2)
        """
        self._check_seq(seq, "seq")
        twin = self._new_id()
        self._share(twin, seq)
        self.batch.append(twin)
        return twin

    def blocks_needed(self, seqs, count: int = 1) -> int:
        """Free blocks a write of ``count`` positions to each of ``seqs`` would take: blocks past
        the ends of their tables, and copies of the blocks they share (copy-on-write).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=4)
        >>> _ = cache.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2), 0)
        >>> twin = cache.fork(0)
        >>> cache.blocks_needed([0]), cache.blocks_needed([0, twin])  # the last sharer writes in place
        (1, 1)
        >>> cache.blocks_needed([0, twin], count=3)  # and the block after it: one each
        3
        """
        seqs = list(seqs)
        for seq in seqs:
            self._check_seq(seq, "seqs")
        starts = [self._length(seq, 0) if seq in self.lengths else 0 for seq in seqs]
        return len(self._plan(seqs, starts, check_int(count, "count", minimum=1), pretend=True)[1])

    def remove_sequence(self, seq: int) -> None:
        """Forget ``seq``: its blocks go back to the pool (those it shared stay with the others).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=4)
        >>> _ = cache.update(lucid.randn(1, 1, 6, 2), lucid.randn(1, 1, 6, 2), 0)
        >>> cache.remove_sequence(0); cache.blocks_used(), cache.batch
        (0, [])
        """
        self._check_seq(seq, "seq")
        self._forget(seq)
        self.batch = [s for s in self.batch if s != seq]

    def blocks_used(self) -> int:
        """Blocks some sequence holds.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.PagedKVCache(4).blocks_used()
        0
        """
        return self.num_blocks - len(self._free) - len(self._cached)

    def _new_id(self) -> int:
        self._next += 1
        return self._next - 1

    def _check_seq(self, seq, name: str) -> None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq not in self.tables:
            raise ValueError(f"{name} must be the id of a sequence of this cache ({sorted(self.tables)}), got {seq!r}")

    def _share(self, twin: int, seq: int) -> None:
        self.tables[twin] = list(self.tables[seq])
        self.lengths[twin] = list(self.lengths[seq])
        if seq in self._tokens:
            self._tokens[twin] = list(self._tokens[seq])
        for block in self.tables[twin]:
            self._refs[block] += 1

    def _forget(self, seq: int) -> None:
        self._register([seq])
        self._release(self.tables.pop(seq))
        del self.lengths[seq]
        self._tokens.pop(seq, None)

    def _release(self, blocks: list) -> None:
        for block in blocks:
            self._refs[block] -= 1
            if not self._refs[block]:
                if block in self._hash_of:  # kept for a later prefix until its memory is needed
                    self._cached[block] = None
                else:
                    self._free.append(block)

    # -- reading -----------------------------------------------------------
    def _length(self, seq: int, layer_idx: int) -> int:
        lengths = self.lengths[seq]
        return lengths[layer_idx] if layer_idx < len(lengths) else 0

    def _gather(self, pools, tables: list, lengths: list):
        """``(keys, values)`` of the first ``lengths[i]`` positions of the sequence whose block
        table is ``tables[i]``: :class:`~lucid.nn.cache.paged_tensor.PagedTensor` s over a
        layer's ``pools`` (rows shorter than the longest padded with block 0)."""
        keys, values, spec = pools
        xp, size = spec.backend.xp, self.block_size
        count = -(-max(lengths) // size)
        rows = [table[:-(-length // size)] for table, length in zip(tables, lengths)]
        table = xp.asarray([row + [0] * (count - len(row)) for row in rows], dtype=xp.int64)
        return PagedTensor(keys, table, lengths, spec.backend), PagedTensor(values, table, lengths, spec.backend)

    def _written(self, layer_idx: int) -> bool:
        return bool(self.batch) and layer_idx < len(self.pools) and self.pools[layer_idx] is not None

    def get(self, layer_idx: int):
        """``(keys, values)`` of the batch's sequences in ``layer_idx`` (``PagedTensor`` s),
        or ``None`` before it is written.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=2)
        >>> _ = cache.update(lucid.randn(2, 1, 3, 4), lucid.randn(2, 1, 3, 4), 0)
        >>> cache.get(0)[0].shape, cache.get(1)
        ((2, 1, 3, 4), None)
        """
        layer_idx = check_int(layer_idx, "layer_idx")
        if not self._written(layer_idx):
            return None
        return self._gather(self.pools[layer_idx], [self.tables[seq] for seq in self.batch],
                            [self._length(seq, layer_idx) for seq in self.batch])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions the batch's sequences hold in ``layer_idx``.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.PagedKVCache(4).get_seq_length()
        0
        """
        layer_idx = check_int(layer_idx, "layer_idx")
        return self._length(self.batch[0], layer_idx) if self.batch else 0

    def key_positions(self, layer_idx: int, new_tokens: int = 1):
        """Absolute positions of the keys ``update`` returns: ``0 .. length - 1``; with rows of
        different lengths, ``(B, longest)``, each row's padding at :data:`PADDING` (a causal
        mask never shows it).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=2)
        >>> _ = cache.update(lucid.randn(1, 1, 3, 4), lucid.randn(1, 1, 3, 4), 0)
        >>> cache.key_positions(0).tolist()
        [0, 1, 2]
        """
        if not self._written(check_int(layer_idx, "layer_idx")):
            return None
        backend = self.pools[layer_idx][2].backend
        xp = backend.xp
        lengths = [self._length(seq, layer_idx) for seq in self.batch]
        if len(set(lengths)) == 1:
            return _wrap(xp.arange(lengths[0], dtype=xp.int64), backend)
        # Rows of different lengths: a row per sequence, its padding at a position no query reaches.
        span = xp.arange(max(lengths), dtype=xp.int64)
        ends = xp.asarray(lengths, dtype=xp.int64)[:, None]
        return _wrap(xp.where(span < ends, span, xp.asarray(PADDING, dtype=xp.int64)), backend)

    def batch_size(self) -> int | None:
        """Rows of the batch, or ``None`` when it holds none.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.PagedKVCache(4).batch_size() is None
        True
        """
        return len(self.batch) or None

    def nbytes(self) -> int:
        """Bytes of the pools allocated (every block, used or free).

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=2)
        >>> _ = cache.update(lucid.randn(1, 1, 1, 4), lucid.randn(1, 1, 1, 4), 0)
        >>> cache.nbytes()  # 4 blocks x 2 positions x (4 + 4) float32 values
        256
        """
        return sum((keys.size + values.size) * spec.lucid_dtype.itemsize
                   for keys, values, spec in filter(None, self.pools))

    # -- writing -------------------------------------------------------------
    def update(self, key, value, layer_idx: int, cache_position=None):
        """Append ``key``/``value`` ``(B, ..., T, D)`` to the batch's sequences in ``layer_idx``
        and return their keys and values (``PagedTensor`` s). See the class docstring.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(8, block_size=4)
        >>> _ = cache.update(lucid.randn(2, 1, 5, 4), lucid.randn(2, 1, 5, 4), 0)
        >>> k, _ = cache.update(lucid.randn(2, 1, 1, 4), lucid.randn(2, 1, 1, 4), 0, cache_position=[5])
        >>> k.shape, cache.tables
        ((2, 1, 6, 4), {0: [0, 1], 1: [2, 3]})
        """
        layer_idx = check_int(layer_idx, "layer_idx", maximum=(1 << 16) - 1)
        k, v = as_arrays(key, value)
        spec = self._spec_for(layer_idx, k, v)
        rows, count = k.shape[0], k.shape[-2]
        batch = self.batch or [self._next + i for i in range(rows)]  # a first write makes the rows' sequences
        if len(batch) != rows:
            raise ValueError(f"the batch holds {len(batch)} sequences; the update has {rows} rows")
        starts = [self._length(seq, layer_idx) if seq in self.lengths else 0 for seq in batch]
        self._check_positions(cache_position, starts, count)
        plan, taken = self._plan(batch, starts, count)
        pools = self.pools[layer_idx] if layer_idx < len(self.pools) and self.pools[layer_idx] else self._allocate(spec)
        # Copy-on-write copies and the new tokens go to blocks no sequence shows yet; the
        # tables, lengths and reference counts change only after everything has succeeded.
        # A cached prefix block about to be written over leaves the prefix cache first, so a
        # write that fails part-way never leaves a registered block with other contents.
        for block in set(taken) & set(self._cached):
            del self._cached[block]
            del self._block_of[self._hash_of.pop(block)]
            self._free.append(block)
        self._copy_blocks(plan, pools)
        tables = [plan[seq][0] for seq in batch]
        for row, start in enumerate(starts):
            self._write(pools, tables[row], k[row, ...], v[row, ...], start, start + count)
        out = self._gather(pools, tables, [start + count for start in starts])
        self._commit(layer_idx, pools, batch, plan, taken, count)
        return out

    def _check_positions(self, cache_position, starts: list, count: int) -> None:
        """Writes are appends: ``cache_position`` is ``None``, the next positions of every row
        (when the rows hold one length), or ``(B, T)`` positions, each row its next ones."""
        if len(set(starts)) == 1:
            check_append(cache_position, starts[0], count, len(starts), "a paged cache")
            return
        if cache_position is None:
            return
        positions = host_integers(cache_position, "cache_position")
        expected = [list(range(start, start + count)) for start in starts]
        if positions.ndim != 2 or positions.tolist() != expected:
            raise ValueError(f"the batch's sequences hold different lengths {starts}: cache_position must be None or "
                             f"(batch, seq_len) positions, each row its next ones ({expected[:2]}...)")

    def _spec_for(self, layer_idx: int, k, v) -> Spec:
        """The layer's layout (its first write's, checked against this one's)."""
        check_pair(k, v)
        spec = Spec.of(k, v)
        held = self.pools[layer_idx] if layer_idx < len(self.pools) else None
        if held is not None and not spec.same_layout(held[2].with_batch(k.shape[0])):
            raise ValueError(f"layer {layer_idx} holds keys of {held[2].step_k[1:]} per row in "
                             f"{held[2].lucid_dtype}; the update has {spec.step_k[1:]} in {spec.lucid_dtype}")
        return spec

    def _plan(self, batch: list, starts: list, count: int, pretend: bool = False):
        """Each sequence's table after a write of ``count`` positions from its ``starts`` entry, with the copy-on-write copies
        it needs (``seq -> (table, [(old, new)])``), and the free blocks that takes; a
        ``ValueError`` naming ``num_blocks`` when there are too few (``pretend``: never, and
        the blocks taken are placeholders, for counting)."""
        free, cached, taken, plan = list(self._free), list(self._cached), [], {}
        sharers = {}  # a block shared within this batch: every sharer but the last copies it

        def take() -> int:
            if pretend:
                taken.append(-1 - len(taken))
                return taken[-1]
            if not free and not cached:
                raise ValueError(f"num_blocks={self.num_blocks}: this write needs more blocks than the "
                                 f"{len(self._free) + len(self._cached)} free ({self.block_size} positions each); "
                                 "remove or trim sequences, or create the cache with more blocks")
            taken.append(free.pop() if free else cached.pop(0))  # a cached prefix block last, oldest first
            return taken[-1]

        for seq, start in zip(batch, starts):
            table, copies = list(self.tables.get(seq, [])), []
            for index in range(start // self.block_size, (start + count - 1) // self.block_size + 1):
                if index >= len(table):
                    table.append(take())
                    continue
                block = table[index]
                # Someone else holds it, or it is registered under its prefix's hash: write a copy.
                if self._refs[block] - sharers.get(block, 0) > 1 or block in self._hash_of:
                    sharers[block] = sharers.get(block, 0) + 1
                    table[index] = take()
                    copies.append((block, table[index]))
            plan[seq] = (table, copies)
        return plan, taken

    def _copy_blocks(self, plan: dict, pools) -> None:
        """The copy-on-write copies, into new blocks, in every written layer (all share block ids)."""
        copies = [pair for _, pairs in plan.values() for pair in pairs]
        if not copies:
            return
        layers = [p for p in self.pools if p is not None]
        if not any(p is pools for p in layers):
            layers.append(pools)
        for layer in layers:
            for old, new in copies:
                layer[0][new, ...] = layer[0][old, ...]
                layer[1][new, ...] = layer[1][old, ...]

    def _write(self, pools, table: list, k, v, start: int, end: int) -> None:
        size, position = self.block_size, start
        while position < end:
            block, offset = table[position // size], position % size
            stop = min(end, position - offset + size)
            pools[0][block, ..., offset:offset + stop - position, :] = k[..., position - start:stop - start, :]
            pools[1][block, ..., offset:offset + stop - position, :] = v[..., position - start:stop - start, :]
            position = stop

    def _allocate(self, spec: Spec):
        xp = spec.backend.xp
        spec.check_fits(self.num_blocks * self.block_size, f"num_blocks={self.num_blocks}, block_size={self.block_size}")
        shape_k = (self.num_blocks,) + spec.step_k[1:-2] + (self.block_size, spec.step_k[-1])
        shape_v = (self.num_blocks,) + spec.step_v[1:-2] + (self.block_size, spec.step_v[-1])
        return xp.zeros(shape_k, dtype=spec.dtype), xp.zeros(shape_v, dtype=spec.dtype), spec.with_batch(1)

    def _commit(self, layer_idx: int, pools, batch: list, plan: dict, taken: list, count: int) -> None:
        self.pools.extend([None] * (layer_idx + 1 - len(self.pools)))
        self.pools[layer_idx] = pools
        taken_set = set(taken)
        self._free = [block for block in self._free if block not in taken_set]
        for seq in batch:
            table, copies = plan[seq]
            if seq not in self.tables:
                self.tables[seq], self.lengths[seq] = [], []
                self._next = max(self._next, seq + 1)
            for old, _ in copies:
                self._refs[old] -= 1
            for block in table[len(self.tables[seq]):] + [new for _, new in copies]:
                self._refs[block] += 1
            self.tables[seq] = table
            lengths = self.lengths[seq]
            lengths.extend([0] * (layer_idx + 1 - len(lengths)))
            lengths[layer_idx] += count
        self.batch = list(batch)

    # -- batch operations, crop, trim, reset ------------------------------------
    def _prepare_select(self, indices, name: str = "indices") -> Callable[[], None]:
        rows = [int(r) for r in parse_batch_indices(indices, name, self.batch_size())]
        if not self.batch:
            return lambda: None

        def commit() -> None:
            chosen, seen = [], set()
            for row in rows:
                seq = self.batch[row]
                if seq in seen:  # a repeated row: a fork, sharing every block
                    twin = self._new_id()
                    self._share(twin, seq)
                    seq = twin
                seen.add(seq)
                chosen.append(seq)
            for seq in [s for s in self.batch if s not in seen]:
                self._forget(seq)
            self.batch = chosen

        return commit

    def _prepare_repeat(self, repeats: int) -> Callable[[], None]:
        repeats = check_int(repeats, "repeats", minimum=1)
        if not self.batch:
            return lambda: None
        return self._prepare_select(repeat_indices(repeats, len(self.batch)), f"repeats={repeats}")

    def _prepare_crop(self, max_length: int) -> Callable[[], None]:
        max_length = check_int(max_length, "max_length")
        if all(length <= max_length for seq in self.batch for length in self.lengths[seq]):
            return lambda: None
        raise ValueError(f"crop({max_length}) would renumber positions, which a paged cache's block tables do not "
                         "do; trim(n) drops the last n positions instead")

    def _prepare_trim(self, n: int) -> Callable[[], None]:
        n = check_int(n, "n")
        if not n:
            return lambda: None
        held = [length for seq in self.batch for length in self.lengths[seq]]
        if not held or n > min(held):
            raise ValueError(f"trim(n={n}): the batch's sequences hold {min(held) if held else 0} positions; "
                             "check can_trim(n) first")

        def commit() -> None:
            for seq in self.batch:
                self.lengths[seq] = [length - n for length in self.lengths[seq]]
                if seq in self._tokens:  # what follows is no longer the prompt's
                    del self._tokens[seq][max(self.lengths[seq]):]
                keep = -(-max(self.lengths[seq]) // self.block_size)
                self._release(self.tables[seq][keep:])
                del self.tables[seq][keep:]

        return commit

    def _trimmable(self, appended: int) -> int:
        return min((min(self.lengths[seq], default=0) for seq in self.batch), default=0) + appended

    def reset(self) -> None:
        """Forget every sequence; the pools stay allocated for the next ones.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=2)
        >>> _ = cache.update(lucid.randn(1, 1, 3, 4), lucid.randn(1, 1, 3, 4), 0)
        >>> cache.reset(); cache.blocks_used(), cache.get_seq_length(0), cache.nbytes() > 0
        (0, 0, True)
        """
        for seq in list(self.tables):
            self.remove_sequence(seq)

    def arguments(self) -> dict:
        """The constructor's arguments.

        Examples
        --------
        >>> import lucid.nn as nn
        >>> nn.PagedKVCache(64, block_size=8).arguments()
        {'num_blocks': 64, 'block_size': 8}
        """
        return {"num_blocks": self.num_blocks, "block_size": self.block_size}

    # -- files -----------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """``(settings, arrays)``: the arguments, the sequences' tables and lengths, the batch,
        and each written layer's pool.

        Examples
        --------
        >>> import lucid, lucid.nn as nn
        >>> cache = nn.PagedKVCache(4, block_size=2)
        >>> _ = cache.update(lucid.randn(1, 1, 3, 4), lucid.randn(1, 1, 3, 4), 0)
        >>> settings, arrays = cache.state()
        >>> settings["tables"], sorted(arrays)
        ({'0': [0, 1]}, ['layers.0.keys', 'layers.0.values'])
        """
        settings = {"class": type(self).__name__, "args": self.arguments(), "batch": self.batch,
                    "tables": {str(s): t for s, t in self.tables.items()},
                    "lengths": {str(s): n for s, n in self.lengths.items()}, "layers": len(self.pools)}
        arrays = {}
        for i, pool in enumerate(self.pools):
            if pool is not None:
                arrays[f"layers.{i}.keys"], arrays[f"layers.{i}.values"] = pool[0], pool[1]
        return settings, arrays

    @classmethod
    def _from_state(cls, settings: dict, arrays: dict) -> "PagedKVCache":
        cache = cls(**settings["args"])
        for i in range(settings["layers"]):
            if f"layers.{i}.keys" in arrays:
                keys, values = arrays[f"layers.{i}.keys"], arrays[f"layers.{i}.values"]
                check_saved(keys, values, cache.block_size, f"layer {i} of a paged cache")
                if keys.shape[0] != cache.num_blocks:
                    raise ValueError(f"layer {i}: the saved pool has {keys.shape[0]} blocks, not {cache.num_blocks}")
                cache.pools.append((keys, values, Spec.of(keys, values).with_batch(1)))
            else:
                cache.pools.append(None)
        for seq, table in settings["tables"].items():
            if any(type(b) is not int or not 0 <= b < cache.num_blocks for b in table):
                raise ValueError(f"sequence {seq} names blocks outside the pool: {table}")
            cache.tables[int(seq)], cache.lengths[int(seq)] = list(table), list(settings["lengths"][seq])
            for block in table:
                cache._refs[block] += 1
        cache._free = [b for b in range(cache.num_blocks - 1, -1, -1) if not cache._refs[b]]  # (no prefix registry)
        cache.batch = [int(s) for s in settings["batch"]]
        cache._next = max(cache.tables, default=-1) + 1
        return cache

    def __repr__(self) -> str:
        return (f"PagedKVCache(num_blocks={self.num_blocks}, block_size={self.block_size}, "
                f"sequences={len(self.tables)}, blocks_used={self.blocks_used()})")
