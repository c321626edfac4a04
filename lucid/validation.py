"""Checks of the small arguments every public call takes, shared by the caches, the prefix store
and its tiers: wrong type is a ``TypeError``, wrong value a ``ValueError``, and both name the
argument, what was expected and what arrived."""
from __future__ import annotations

import operator
import pathlib
import stat


def check_int(value, name: str, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]``.

    Python ints and NumPy integer scalars pass; bools, floats and anything else are a
    ``TypeError``; an int out of range is a ``ValueError``.

    Examples
    --------
    >>> from lucid.validation import check_int
    >>> check_int(3, "repeats", minimum=1)
    3
    """
    if type(value) is not int:
        if isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got the bool {value!r}")
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return value


def check_regular_file(path, what: str = "file") -> pathlib.Path:
    """``path`` as a ``Path`` when it names a regular file; else a ``ValueError`` that says what
    is there. A FIFO or a device (``/dev/zero``) is refused before anything reads from it.

    Examples
    --------
    >>> from lucid.validation import check_regular_file
    >>> try:
    ...     check_regular_file("/dev/zero", "a saved cache")
    ... except ValueError as error:
    ...     print(error)
    /dev/zero is not a regular file (a device, FIFO or socket), so it cannot be a saved cache
    """
    path = pathlib.Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: no file there (expected {what})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{path} is a directory, not {what}")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{path} is not a regular file (a device, FIFO or socket), so it cannot be {what}")
    return path
