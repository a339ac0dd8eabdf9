import time

import pytest


def test_roundtrip(backend, root_url):
    fs = backend.fs()
    t = time.monotonic()
    path = root_url + "/a/b.json"
    fs.pipe_file(path, b"{}")
    assert fs.cat_file(path) == b"{}"
    assert len(fs.ls(root_url + "/a")) == 1
    fs.rm(path)
    assert not fs.exists(path)
    if backend.server:
        print(backend.name, "startup", backend.server.startup_seconds, "ops", time.monotonic() - t)


@pytest.mark.backends("s3")
def test_only_s3(backend):
    assert backend.name == "s3"
