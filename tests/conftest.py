"""Shared fixtures: the array namespaces each test runs on."""
import pytest

import backends
import lucid

from .redis_server import redis_server  # noqa: F401 - a fixture for the tests that need Redis


_PROBLEM = backends.gpu_problem()
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
    return backends.get_backend().xp
