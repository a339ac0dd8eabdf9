"""The command line never loses data, never hangs, never says OK about nothing (issue 20).

Every command here runs as a user runs it: ``python -m lakery_fsspec`` in a subprocess,
on a pipe or on a pseudo-terminal, against local files (or an endpoint that never
answers), each under a deadline.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import on_a_terminal, payload
from servers import HOST

DATA = payload(3 * 2**20 + 5, seed=20)


def lakery(
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    **kw: object,
) -> subprocess.CompletedProcess[bytes]:
    """``python -m lakery_fsspec ARGS``, as a user runs it on a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "lakery_fsspec", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        **kw,  # pyright: ignore[reportArgumentType]
    )


@pytest.fixture
def stored(tmp_path: Path) -> tuple[str, Path]:
    """A pointer (JSON) to DATA stored in ``tmp_path/lake``, and the lake's folder."""
    source = tmp_path / "data.bin"
    source.write_bytes(DATA)
    lake = tmp_path / "lake"
    done = lakery("put", str(lake), str(source))
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().strip(), lake


# --- 1. get -o PATH ---------------------------------------------------------------------


def test_get_over_a_symlink_writes_its_target(stored: tuple[str, Path], tmp_path: Path) -> None:
    pointer, _ = stored
    target = tmp_path / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    done = lakery("get", pointer, "-o", str(link))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert target.read_bytes() == DATA


def test_get_gives_files_the_mode_of_cp(stored: tuple[str, Path], tmp_path: Path) -> None:
    pointer, _ = stored
    new = tmp_path / "new.bin"
    done = lakery("get", pointer, "-o", str(new), preexec_fn=lambda: os.umask(0o027))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0666 under the umask
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"old")
    existing.chmod(0o604)
    done = lakery("get", pointer, "-o", str(existing))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(existing.stat().st_mode) == 0o604
    assert existing.read_bytes() == DATA


@pytest.fixture
def dev_null() -> Iterator[Path]:
    """/dev/null, made a device again if a test replaced it (as root, the old ``get`` did:
    every other process on the machine would then write into one shared file)."""
    yield Path("/dev/null")
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.geteuid() == 0:
        os.unlink("/dev/null")
        os.mknod("/dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)


def test_get_to_dev_null_keeps_it_a_device(stored: tuple[str, Path], dev_null: Path) -> None:
    pointer, _ = stored
    done = lakery("get", pointer, "-o", str(dev_null))
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(dev_null.stat().st_mode)


def _drain(path: Path, into: list[bytes]) -> threading.Thread:
    """Read everything from a FIFO in a thread."""

    def read_fifo() -> None:
        with open(path, "rb") as fifo:
            into.append(fifo.read())

    thread = threading.Thread(target=read_fifo, daemon=True)
    thread.start()
    return thread


def test_get_into_a_fifo_streams_through_it(stored: tuple[str, Path], tmp_path: Path) -> None:
    pointer, _ = stored
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = _drain(fifo, received)
    done = lakery("get", pointer, "-o", str(fifo))
    reader.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received == [DATA]


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A Unix socket that receives one connection's bytes; its path and what came."""
    path = tmp_path / "socket"
    received: list[bytes] = []
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(1)
        listener.settimeout(30)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection, connection.makefile("rb") as incoming:
                received.append(incoming.read())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        yield path, received
        thread.join(timeout=30)


def test_get_into_a_socket_streams_through_it(
    stored: tuple[str, Path], unix_listener: tuple[Path, list[bytes]]
) -> None:
    pointer, _ = stored
    path, received = unix_listener
    done = lakery("get", pointer, "-o", str(path))
    assert done.returncode == 0, done.stderr
    time.sleep(0.1)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert received == [DATA]


def test_get_of_a_damaged_object_into_a_fifo_says_so(
    stored: tuple[str, Path], tmp_path: Path
) -> None:
    pointer, lake = stored
    stored_file = lake / json.loads(pointer)["path"]
    damaged = bytearray(DATA)
    damaged[-1] ^= 0xFF
    stored_file.chmod(0o644)
    stored_file.write_bytes(bytes(damaged))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = _drain(fifo, received)
    done = lakery("get", pointer, "-o", str(fifo))
    reader.join(timeout=30)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "is corrupt" in err
    assert f"already written to {fifo} are not the object's" in err
    assert "Traceback" not in err


def test_get_into_a_folder_it_cannot_write_says_write(
    stored: tuple[str, Path], tmp_path: Path
) -> None:
    pointer, _ = stored
    done = lakery("get", pointer, "-o", "/proc/lakery-fsspec-test.bin")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "Cannot write the output file /proc/lakery-fsspec-test.bin" in err
    assert "to read" not in err


# --- 2. put's arguments -------------------------------------------------------------------


def test_put_of_a_mistyped_file_stores_nothing(tmp_path: Path) -> None:
    done = lakery("put", "missing.txt", cwd=tmp_path)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "no such file: 'missing.txt'" in err
    assert "write `put ./missing.txt -`" in err
    assert done.stdout == b""
    assert list(tmp_path.iterdir()) == []


def test_put_into_a_new_folder_from_stdin_when_asked(tmp_path: Path) -> None:
    done = lakery("put", "./new-lake", "-", stdin=b"hello", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["content_size"] == 5
    assert (tmp_path / "new-lake").is_dir()


def test_put_with_no_argument_reads_a_pipe_into_the_default_lake(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LAKERY_FSSPEC_URL"}
    done = lakery("put", stdin=b"piped", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["root"] == str(tmp_path / "lake")


def test_put_into_an_existing_folder_reads_stdin(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    done = lakery("put", "lake", stdin=b"piped", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["root"] == str(tmp_path / "lake")


@pytest.mark.parametrize(
    ("typo", "fix"), [("s3:/bucket/lake", "s3://bucket/lake"), ("memory:lake", "memory://lake")]
)
def test_a_url_with_too_few_slashes_is_refused(tmp_path: Path, typo: str, fix: str) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"a")
    for args in (["put", typo], ["put", typo, str(source)], ["verify", typo], ["gc", typo]):
        done = lakery(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert f"did you mean {fix}?" in done.stderr.decode()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt"]


def test_put_help_states_the_rule() -> None:
    done = lakery("put", "--help")
    text = " ".join(done.stdout.decode().split())
    assert "an existing file is a FILE" in text
    assert "write `put ./lake -`" in text


def test_put_into_memory_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"a")
    done = lakery("put", "memory://lake", str(source))
    assert done.returncode == 1
    assert "gone when the command exits" in done.stderr.decode()
    assert done.stdout == b""


# --- 3. verify never says OK about nothing ------------------------------------------------


class NotFoundEverywhere(http.server.BaseHTTPRequestHandler):
    """An HTTP server that answers 404, with no body, to every request."""

    def _not_found(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _not_found

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_found_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer((HOST, 0), NotFoundEverywhere)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


S3_KEYS = ["-o", "key=test", "-o", "secret=test"]


def test_verify_of_a_root_that_does_not_exist_exits_3(tmp_path: Path) -> None:
    done = lakery("verify", str(tmp_path / "no-such-lake"))
    assert done.returncode == 3, done.stderr
    err = done.stderr.decode()
    assert "OK" not in err
    assert "EMPTY: nothing is stored under" in err
    assert "--allow-empty" in err
    allowed = lakery("verify", str(tmp_path / "no-such-lake"), "--allow-empty")
    assert allowed.returncode == 0, allowed.stderr


def test_verify_with_a_template_that_matches_nothing_exits_3(stored: tuple[str, Path]) -> None:
    _, lake = stored
    done = lakery("verify", str(lake), "--template", "{tags[team]}/{content_hash}")
    assert done.returncode == 3, done.stderr
    err = done.stderr.decode()
    assert "left alone: 1 object(s)" in err
    assert "no stored object under" in err
    assert "matches the template" in err
    assert "OK" not in err


def test_verify_of_a_sample_that_left_everything_out_is_not_empty(
    stored: tuple[str, Path],
) -> None:
    _, lake = stored
    for seed in range(50):  # a seed whose 1% sample leaves the one object out
        done = lakery("verify", str(lake), "--sample", "0.01", "--seed", str(seed))
        if b"left out of the sample: 1" in done.stderr:
            assert done.returncode == 0, done.stderr
            assert b"OK: no problems" in done.stderr
            return
    pytest.fail("no seed left the object out")


def test_verify_against_an_endpoint_answering_404_is_not_ok(not_found_endpoint: str) -> None:
    done = lakery(
        "verify", "s3://bucket/lake", "-o", f"endpoint_url={not_found_endpoint}", *S3_KEYS
    )
    assert done.returncode in (1, 3), done.stderr
    err = done.stderr.decode()
    assert "OK" not in err
    assert "Traceback" not in err


def test_gc_against_an_endpoint_answering_404_names_the_listing(not_found_endpoint: str) -> None:
    endpoint = ["-o", f"endpoint_url={not_found_endpoint}", *S3_KEYS]
    for dry_run in ([], ["--dry-run"]):
        done = lakery("gc", "s3://bucket/lake", *endpoint, *dry_run)
        assert done.returncode == 1, done.stderr
        err = done.stderr.decode()
        assert "answered 'Not Found' to a listing" in err
        assert "Traceback" not in err


# --- 4. nothing hangs silently ------------------------------------------------------------


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An endpoint that accepts TCP connections (the backlog) and never answers."""
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(64)
        yield f"http://{HOST}:{silent.getsockname()[1]}"


@pytest.mark.parametrize("command", ["put", "get", "verify", "gc"])
def test_every_command_gives_up_on_a_silent_endpoint(
    command: str, silent_endpoint: str, tmp_path: Path
) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * (9 * 2**20))  # more than a chunk: a stream through a temp
    pointer = json.dumps({"protocol": "s3", "root": "bucket/lake", "path": "ab/ab.bin"})
    flag = "-s" if command == "get" else "-o"
    storage = [flag, f"endpoint_url={silent_endpoint}", flag, "key=k", flag, "secret=s"]
    args = {
        "put": ["s3://bucket/lake", str(source)],
        "get": [pointer, "-o", str(tmp_path / "out.bin")],
        "verify": ["s3://bucket/lake"],
        "gc": ["s3://bucket/lake"],
    }[command]
    started = time.monotonic()
    done = lakery(command, *args, *storage, "--timeout", "2", timeout=40)
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    err = done.stderr.decode()
    assert f"The storage at {silent_endpoint} did not answer in time" in err, err
    assert "2 s" in err
    assert "Traceback" not in err
    assert took < 20, f"{command} took {took:.0f} s"
    if command == "put":  # its clean-up failed too: said once, naming the command to run
        assert err.count("warning: could not make sure that nothing is left at s3://") == 1
        assert "`lakery-fsspec gc` removes whatever is there" in err
        assert "cleanup_temp" not in err


def test_timeout_is_documented_and_checked() -> None:
    for command in ("put", "get", "verify", "gc", "demo"):
        assert "--timeout SECONDS" in lakery(command, "--help").stdout.decode()
    assert "first reach the storage" in " ".join(lakery("check", "--help").stdout.decode().split())
    done = lakery("gc", "--timeout", "soon")
    assert done.returncode == 2
    assert "not a number of seconds: 'soon'" in done.stderr.decode()


def test_a_wait_on_a_terminal_says_what_it_waits_for(silent_endpoint: str, tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 1000)
    storage = ["-o", f"endpoint_url={silent_endpoint}", "-o", "key=k", "-o", "secret=s"]
    command = [sys.executable, "-m", "lakery_fsspec", "put", "s3://bucket/lake", str(source)]
    status, _, seen = on_a_terminal([*command, *storage, "--timeout", "4"], timeout=40)
    assert status == 1
    terminal = seen.decode()
    assert "waiting for s3://bucket/lake" in terminal
    assert "did not answer in time" in terminal


# --- 5. a truncated object heals on the next write ----------------------------------------


@pytest.mark.parametrize("size", [5, len(DATA)], ids=["blob-sized", "streamed"])
def test_re_putting_heals_a_truncated_object(tmp_path: Path, size: int) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(DATA[:size])
    lake = tmp_path / "lake"
    first = lakery("put", str(lake), str(source))
    assert first.returncode == 0, first.stderr
    stored_file = lake / json.loads(first.stdout)["path"]
    stored_file.chmod(0o644)
    stored_file.write_bytes(DATA[: size // 2])
    assert lakery("verify", str(lake)).returncode == 1
    again = lakery("put", str(lake), str(source))
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert stored_file.read_bytes() == DATA[:size]
    healed = lakery("verify", str(lake))
    assert healed.returncode == 0, healed.stderr


# --- 6. smaller things --------------------------------------------------------------------


def test_python_m_demo_parses_its_arguments(tmp_path: Path) -> None:
    done = lakery_module("lakery_fsspec.demo", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--timeout SECONDS" in done.stdout.decode()
    assert list(tmp_path.iterdir()) == []
    failed = lakery_module("lakery_fsspec.demo", "/proc/no-lake-here", cwd=tmp_path)
    assert failed.returncode == 1
    err = failed.stderr.decode()
    assert err.startswith("error: ")
    assert "Traceback" not in err


def lakery_module(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_version_and_debug_before_the_command(tmp_path: Path) -> None:
    done = lakery("--version")
    assert done.returncode == 0
    assert done.stdout.decode().startswith("lakery-fsspec ")
    pointer = json.dumps({"protocol": "file", "root": str(tmp_path), "path": "no/such"})
    debugged = lakery("--debug", "get", pointer, "-o", str(tmp_path / "out"))
    assert debugged.returncode == 1
    assert "Traceback" in debugged.stderr.decode()


def test_a_pointer_edited_to_another_object_says_so(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    pointers = []
    for name, data in (("a.txt", b"aaa"), ("b.txt", b"bbbb")):
        (tmp_path / name).write_bytes(data)
        pointers.append(json.loads(lakery("put", str(lake), str(tmp_path / name)).stdout))
    edited = {**pointers[0], "path": pointers[1]["path"]}
    done = lakery("get", json.dumps(edited), "-o", str(tmp_path / "out.txt"))
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "The pointer itself is wrong" in err
    assert "changed or damaged" not in err
    assert not (tmp_path / "out.txt").exists()


def test_a_missing_tag_says_how_to_pass_it(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    done = lakery(
        "put",
        str(tmp_path / "lake"),
        str(tmp_path / "a.txt"),
        "--template",
        "{tags[team]}/{content_hash}",
    )
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "add -t team=VALUE" in err
    assert "when saving" not in err
