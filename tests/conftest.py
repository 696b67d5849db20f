"""Test setup: real data from ../shared/data, no network, and an isolated home for caches."""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any connection to a non-loopback address fails the test: proof that nothing reaches a hub or URL."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(self, address, *, _real=real_connect):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise NetworkBlocked(f"test tried to open a network connection to {address!r}")
        return _real(self, address)

    def guarded_ex(self, address):
        return guarded(self, address, _real=real_connect_ex)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host if not isinstance(host, bytes) else host.decode()):
            raise NetworkBlocked(f"test tried a network lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Caches (knowledge index, galleries) go to a temporary home, never the user's."""
    home = tmp_path_factory.getbasetemp() / "local-agent-home"
    monkeypatch.setenv("LOCAL_AGENT_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}: clone the repo with ../shared beside it")
    return SHARED_DATA


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).copy()


@pytest.fixture(scope="session")
def grid_image(shared_data) -> np.ndarray:
    return load_rgb(shared_data / "mvtec" / "grid" / "train" / "good" / "003.png")


@pytest.fixture(scope="session")
def transistor_image(shared_data) -> np.ndarray:
    return load_rgb(shared_data / "mvtec" / "transistor" / "train" / "good" / "003.png")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, shared_data) -> Path:
    """Six reverse-synthesis trajectories on grid (Dual generation), the training tests' SFT data."""
    from local_agent.profile import load_profile
    from local_agent.training.trajectories import build_trajectories

    out = tmp_path_factory.mktemp("sft") / "train.jsonl"
    build_trajectories(shared_data / "mvtec" / "grid", out, load_profile("default")["tools"], {2: 1.0}, seed=2,
                       limit=6)
    return out


def trajectory_texts(corpus: Path) -> list[str]:
    """Every message text of the corpus: what the tiny models' tokenizers are trained on."""
    import json

    return [m["content"] for line in corpus.read_text().splitlines() for m in json.loads(line)["messages"]]

