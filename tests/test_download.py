"""Finding and downloading dataset files, against a real HTTP server on 127.0.0.1.

The registry's hashes are swapped for those of small fake files, so the real code
path (pooch download, hash check, cache) runs end to end without the internet.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fastmnist.data import (
    DATASETS,
    FILES,
    fetch_dataset,
    find_dataset_dir,
    load_dataset,
    write_idx,
)
from fastmnist.errors import DataError, DataNotFoundError

from .conftest import closed_port_url, make_fake_dataset

ARCHIVES = [f"{stem}.gz" for stem in FILES]


class Server:
    """A static file server on 127.0.0.1 that records the paths requested."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        log = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server dispatches to
                log.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A clean environment: cache in tmp_path, no FASTMNIST_DATA, no mirror override."""
    monkeypatch.setenv("FASTMNIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTMNIST_DATA", raising=False)
    monkeypatch.delenv("FASTMNIST_MIRROR", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path


@pytest.fixture
def served(env, monkeypatch):
    """Fake MNIST .gz files on a local server, registered as "mnist" with their hashes."""
    root = env / "www"
    arrays = make_fake_dataset(root, n_train=50, n_test=10, seed=3)
    server = Server(root)
    info = dataclasses.replace(
        DATASETS["mnist"],
        mirrors=(server.url,),
        hashes={a: f"sha256:{sha256(root / a)}" for a in ARCHIVES},
    )
    monkeypatch.setitem(DATASETS, "mnist", info)
    server.arrays = arrays
    yield server
    server.close()


def cache(env: Path) -> Path:
    return env / "cache" / "mnist"


def assert_is_fake(data, server):
    assert data.name == "mnist"
    np.testing.assert_array_equal(
        data.train.images_2d, server.arrays["train-images-idx3-ubyte.gz"]
    )
    np.testing.assert_array_equal(data.test.labels, server.arrays["t10k-labels-idx1-ubyte.gz"])
    assert data.train.images.shape == (50, 784) and len(data.test) == 10


def test_download_into_cache_then_reuse_without_requests(served, env):
    data = load_dataset("mnist")
    assert_is_fake(data, served)
    assert sorted(served.requests) == sorted(f"/{a}" for a in ARCHIVES)
    assert sorted(p.name for p in cache(env).iterdir()) == sorted(ARCHIVES)
    assert find_dataset_dir("mnist") == cache(env)

    assert_is_fake(load_dataset("mnist"), served)
    assert fetch_dataset("mnist") == cache(env)
    assert len(served.requests) == 4  # nothing downloaded the second time


def test_only_missing_files_are_downloaded(served, env):
    cache(env).mkdir(parents=True)
    for a in ARCHIVES[:3]:
        (cache(env) / a).write_bytes((served.root / a).read_bytes())
    assert fetch_dataset("mnist") == cache(env)
    assert served.requests == [f"/{ARCHIVES[3]}"]


def test_hash_mismatch_is_refused_and_not_kept(served, env):
    bad = served.root / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, np.zeros(10, np.uint8))  # valid IDX, wrong content
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz failed its checksum" in msg
    kept = sorted(p.name for p in cache(env).iterdir())
    assert kept == sorted(ARCHIVES[:3])  # the three good ones stay; no temp files left


def test_first_mirror_dead_second_works(served, monkeypatch):
    dead = closed_port_url()
    info = dataclasses.replace(DATASETS["mnist"], mirrors=(dead, served.url))
    monkeypatch.setitem(DATASETS, "mnist", info)
    assert_is_fake(load_dataset("mnist"), served)


def test_first_mirror_bad_hash_or_404_second_works(served, env, monkeypatch):
    other = env / "other"
    make_fake_dataset(other, seed=99)  # same names, different bytes
    (other / ARCHIVES[0]).unlink()  # and one of them missing: HTTP 404
    bad = Server(other)
    try:
        info = dataclasses.replace(DATASETS["mnist"], mirrors=(bad.url, served.url))
        monkeypatch.setitem(DATASETS, "mnist", info)
        assert_is_fake(load_dataset("mnist"), served)
        assert len(bad.requests) == 4 and len(served.requests) == 4
    finally:
        bad.close()


def test_all_mirrors_dead_is_one_clear_error(served, monkeypatch):
    dead = [closed_port_url(), closed_port_url()]
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=dead))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist")
    msg = str(info.value)
    for name in ARCHIVES:
        assert name in msg
    for way in ("--data", "data_dir=", "FASTMNIST_DATA", "fastmnist download", *dead):
        assert way in msg
    assert "cannot connect" in msg
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 1200
    assert served.requests == []


def test_mirror_serving_404_is_summarised(served, env, monkeypatch):
    empty = env / "empty"
    empty.mkdir()
    server = Server(empty)
    try:
        with pytest.raises(DataNotFoundError, match="HTTP 404"):
            fetch_dataset("mnist", mirrors=[server.url])
    finally:
        server.close()


def test_mirror_overrides_replace_the_registry(served, monkeypatch):
    dead = closed_port_url()
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(DATASETS["mnist"], mirrors=(dead,)))
    monkeypatch.setenv("FASTMNIST_MIRROR", served.url.rstrip("/"))  # the slash is optional
    assert_is_fake(load_dataset("mnist"), served)


def test_mirrors_argument_beats_environment(served, env, monkeypatch):
    monkeypatch.setenv("FASTMNIST_MIRROR", closed_port_url())
    target = env / "explicit"
    assert fetch_dataset("mnist", target, mirrors=[served.url]) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(ARCHIVES)


def test_download_into_explicit_dir_then_load_from_it(served, env):
    target = env / "mine" / "data"
    assert fetch_dataset("mnist", data_dir=target) == target
    assert not cache(env).exists()
    assert_is_fake(load_dataset("mnist", data_dir=target), served)


def test_load_from_explicit_dir_never_downloads(served, env):
    missing = env / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", data_dir=missing)
    assert str(missing) in str(info.value) and "fastmnist download" in str(info.value)
    assert served.requests == [] and not missing.exists()


def test_explicit_dir_that_is_a_file(served, env):
    path = env / "file"
    path.write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        fetch_dataset("mnist", data_dir=path)


def test_fastmnist_data_beats_cache_and_accepts_decompressed_files(served, env, monkeypatch):
    load_dataset("mnist")  # fills the cache with the served files
    local = env / "local"
    arrays = make_fake_dataset(local, n_train=7, n_test=3, seed=5, gz=False)
    monkeypatch.setenv("FASTMNIST_DATA", str(local))
    data = load_dataset("mnist")
    assert len(data.train) == 7
    np.testing.assert_array_equal(data.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert len(served.requests) == 4


def test_flat_fastmnist_data_is_not_taken_for_another_dataset(served, env, monkeypatch):
    flat = env / "flat"
    make_fake_dataset(flat)
    monkeypatch.setenv("FASTMNIST_DATA", str(flat))
    monkeypatch.setenv("FASTMNIST_MIRROR", closed_port_url())
    assert find_dataset_dir("mnist") == flat
    assert find_dataset_dir("fashion-mnist") is None
    with pytest.raises(DataNotFoundError, match="Fashion-MNIST"):
        load_dataset("fashion-mnist")
    make_fake_dataset(flat / "fashion-mnist", n_train=9, n_test=4)
    data = load_dataset("fashion_mnist")
    assert data.name == "fashion-mnist" and len(data.train) == 9
    assert data.classes[0] == "T-shirt/top"
