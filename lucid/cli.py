"""Argument types and error reporting shared by lucid's command-line entry points."""
from __future__ import annotations

import argparse
import math
import os
import sys

import lucid


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1.

    Examples
    --------
    >>> from lucid.cli import positive_int
    >>> positive_int("3")
    3
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def int_between(low: int, high: int):
    """An argparse type: an int in ``[low, high]``.

    Examples
    --------
    >>> from lucid.cli import int_between
    >>> int_between(256, 65536)("1024")
    1024
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {value}")
        return value

    return parse


def tolerance(text: str) -> float:
    """An argparse type: a finite float >= 0.

    Examples
    --------
    >>> from lucid.cli import tolerance
    >>> tolerance("1e-4")
    0.0001
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def prefix_tier(text: str) -> str:
    """An argparse type: ``--prefix-store``'s word, checked before any work: ``memory``, a Redis
    URL the client can parse (and the client installed), or a directory path (with a ``/``)
    that exists or can be made, and can be written. A word that is none of these, such as
    ``mem`` or ``redis:/host:6379``, is refused rather than taken for a new directory.

    Examples
    --------
    >>> from lucid.cli import prefix_tier
    >>> prefix_tier("memory")
    'memory'
    """
    from .nn.tiers import DiskTier, tier_from_spec

    is_url = "://" in text or text.lower().startswith(("redis", "rediss", "unix"))
    if text != "memory" and not is_url and "/" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'memory', a redis:// URL or a directory path "
                                         f"(write ./{text} for a directory of that name)")
    if is_url and not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(f"{text!r} looks like a Redis URL but is not one; write redis://HOST:PORT")
    try:
        tier = tier_from_spec(text)
    except (ImportError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if isinstance(tier, DiskTier) and not os.access(tier.directory, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the directory {text!r} cannot be written")
    return text


def activate_backend(name: str | None):
    """Activate ``name`` (or what ``LUCID_BACKEND`` says) and return it; on failure (also a bad
    ``LUCID_NUM_THREADS``) print the reason, without a traceback, and exit with status 2.

    Examples
    --------
    >>> from lucid.cli import activate_backend
    >>> activate_backend("numpy").name
    'numpy'
    """
    try:
        backend = lucid.set_backend(name) if name else lucid.get_backend()
        backend.threads()  # reads LUCID_NUM_THREADS: a bad value is said now, not after minutes of work
    except ValueError as error:  # BackendError included
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return backend
