import time, os

def test_sleep(backend):
    backend.fs().ls(backend.new_url().rsplit("/", 1)[0]) if backend.server else None
    if os.environ.get("SLEEPY"):
        time.sleep(60)
    if os.environ.get("BOOM"):
        raise RuntimeError("boom")
