"""The lakery-fsspec command line, run as users run it, against real backends.

Commands run in-process through ``main([...])`` (output read with capsys) and, where a
terminal, a pipe or a fresh interpreter matters, as ``python -m lakery_fsspec`` subprocesses.
Every failure cause of ``check`` is produced for real: a missing bucket, a wrong key and a
user without permissions on a moto server with authentication on, an endpoint with nothing
listening, a protocol nobody registered, a package that cannot be imported.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import on_a_terminal, payload
from servers import HOST, free_port

from lakery_fsspec import FsspecStorage
from lakery_fsspec._temp import temp_name
from lakery_fsspec.cli import URL_VARIABLE, main, parse_duration, parse_size

SMALL = ["--size", "256KiB"]  # check's stream: keep it light where the size does not matter


def options(backend: BackendInfo, flag: str = "-o", **override: Any) -> list[str]:
    """The backend's storage options as command-line flags; for a pointer's storage
    (``-s``), with the server's host too, which a pointer never names (SFTP)."""
    server = getattr(backend.server, "connect_options", {}) if flag == "-s" else {}
    merged = {**server, **backend.storage_options, **override}
    args: list[str] = []
    for key, value in merged.items():
        args += [flag, f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def root_of(url: str, backend: BackendInfo) -> str:
    # With the options: a webdav:// URL's path is relative to base_url when one is given.
    return FsspecStorage(url, storage_options=backend.storage_options).location.root


def leftovers(backend: BackendInfo, url: str) -> list[str]:
    """Every object under a root URL."""
    fs = backend.fs()
    root = root_of(url, backend)
    fs.invalidate_cache()
    return sorted(fs.find(root)) if fs.exists(root) else []


def run_cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lakery_fsspec", *args],
        capture_output=True,
        timeout=120,
        check=False,
        **kwargs,
    )


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "a.json": b'{"hello": "world"}',
        "b.bin": payload(3 * 2**20 + 17, seed=1),
        "empty.txt": b"",
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in made}


# --- check ------------------------------------------------------------------------------


def test_check_passes_and_leaves_nothing(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", root_url, *options(backend), *SMALL]) == 0
    out = capsys.readouterr().out
    for step in ("storage", "list", "write blob", "write stream", "read blob", "read stream"):
        assert f"  {step} " in out
    assert "FAILED" not in out
    assert out.count(" ok ") >= 8
    assert "sha256 matches" in out
    assert f"OK: {root_url} works" in out
    if backend.server is not None:
        assert "endpoint      ok" in out
        assert backend.endpoint in out
    assert leftovers(backend, root_url) == []


@pytest.mark.backends("s3", "local")
def test_check_streams_several_parts_by_default(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", root_url, *options(backend)]) == 0
    out = capsys.readouterr().out
    assert "12.0 MiB via a temp object and a move" in out
    assert "12.0 MiB in 2 chunk(s), sha256 matches" in out


def test_check_reports_stale_temp_objects(
    backend: BackendInfo,
    root_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lakery_fsspec.cli.doctor._STALE", 2.0)  # "a day", for this test
    old, upload = _temp_object(backend, root_url), _upload(backend, root_url)
    time.sleep(OLD)
    assert main(["check", root_url, *options(backend), *SMALL]) == 0
    out = capsys.readouterr().out
    if upload:
        listed = "1 temp object(s) and 1 unfinished upload(s) under .lakery-tmp/"
        assert f"{listed}; 2 older than a day" in out
    else:
        assert "1 temp object(s) under .lakery-tmp/; 1 older than a day" in out
    assert "lakery-fsspec gc" in out
    assert leftovers(backend, root_url) == [old]  # check never deletes what it did not write
    if upload:
        assert backend.open_uploads(root_of(root_url, backend)) == upload


def test_check_validates_the_template(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = "{tags[project]}/{content_hash}{extension}"
    assert main(["check", root_url, *options(backend), *SMALL, "--template", good]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["check", root_url, *options(backend), "--template", "{name}.bin"]) == 1
    captured = capsys.readouterr()
    assert "storage       FAILED" in captured.out
    assert "content_hash" in captured.err  # the message lists the allowed fields
    assert "Traceback" not in captured.err


def test_check_unknown_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "nosuchproto://bucket/lake"]) == 1
    err = capsys.readouterr().err
    assert "FAILED at step 'storage'" in err
    assert "Unknown fsspec protocol 'nosuchproto'" in err
    assert "Traceback" not in err


def test_check_missing_package_names_the_extra() -> None:
    # s3fs is installed here; hide it the way a machine without the extra would lack it.
    code = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from lakery_fsspec.cli import main\n"
        "sys.exit(main(['check', 's3://bucket/lake']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "needs a package that is not installed" in result.stderr
    assert "fix: Run: pip install 'lakery-fsspec[s3]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.backends("s3", "gcs", "azure")
def test_check_missing_bucket(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    url = f"{backend.schemes[0]}://{bucket}/lake"
    assert main(["check", url, *options(backend), *SMALL]) == 1
    err = capsys.readouterr().err
    kind = "container" if backend.name == "azure" else "bucket"
    assert f"The {kind} '{bucket}' does not exist at {backend.endpoint}" in err
    assert f"Create the {kind} first" in err
    assert "Traceback" not in err


@pytest.mark.backends("s3", "gcs", "azure")
def test_check_endpoint_with_nothing_listening_fails_fast(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://{HOST}:{free_port()}"
    if backend.name == "azure":
        connection = backend.storage_options["connection_string"].replace(backend.endpoint, dead)
        args = options(backend, connection_string=connection)
    else:
        args = options(backend, endpoint_url=dead)
    started = time.monotonic()
    assert main(["check", root_url, *args, *SMALL]) == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert "FAILED at step 'endpoint'" in err
    assert f"Cannot connect to {dead}" in err
    assert "connection refused (nothing is listening there)" in err


@pytest.mark.backends("s3")
def test_check_endpoint_that_never_answers_times_out(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind((HOST, 0))
        silent.listen(8)
        endpoint = f"http://{HOST}:{silent.getsockname()[1]}"
        started = time.monotonic()
        args = options(backend, endpoint_url=endpoint)
        assert main(["check", "s3://bucket/lake", *args, "--timeout", "2"]) == 1
        assert time.monotonic() - started < 6
    err = capsys.readouterr().err
    assert "FAILED at step 'list'" in err
    assert f"The storage at {endpoint} did not answer in time" in err
    assert "took longer than 2 s" in err


@pytest.mark.backends("local")
@pytest.mark.skipif(sys.platform != "linux", reason="/sys refuses writes even to root on Linux")
def test_check_local_permission_denied(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"/sys/lakery-{uuid.uuid4().hex[:8]}", *SMALL]) == 1
    err = capsys.readouterr().err
    assert "FAILED at step 'write blob'" in err
    assert "Permission denied to write /sys/lakery-" in err


def test_check_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "nosuchproto://bucket/lake", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_check_with_no_arguments_uses_a_local_lake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(URL_VARIABLE, raising=False)
    assert main(["check", *SMALL]) == 0
    assert "checking ./lake" in capsys.readouterr().out
    assert (tmp_path / "lake").is_dir()
    assert [path for path in (tmp_path / "lake").rglob("*") if path.is_file()] == []


# --- check on a moto server with authentication on -------------------------------------


@dataclass
class AuthS3:
    """A moto server that checks credentials and IAM policies, with one bucket."""

    endpoint: str
    bucket: str
    keys: dict[str, tuple[str, str]]  # user name -> (access key id, secret)

    def args(self, user: str = "admin", **override: str) -> list[str]:
        key, secret = self.keys[user]
        values = {"endpoint_url": self.endpoint, "key": key, "secret": secret, **override}
        return [arg for k, v in values.items() for arg in ("-o", f"{k}={v}")]


def _policy(*actions: str) -> str:
    statement = {"Effect": "Allow", "Action": list(actions), "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@pytest.fixture(scope="module")
def auth_s3() -> Iterator[AuthS3]:
    """moto in its own process: the first 3 requests are free, every later one is checked."""
    import boto3

    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the authenticating moto server did not start") from None
                time.sleep(0.1)

        def client(service: str, key: str = "x", secret: str = "x") -> Any:
            return boto3.client(
                service,
                endpoint_url=endpoint,
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                region_name="us-east-1",
            )

        iam = client("iam")  # the 3 unauthenticated requests make an admin
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=_policy("*"))
        admin = iam.create_access_key(UserName="admin")["AccessKey"]
        keys = {"admin": (admin["AccessKeyId"], admin["SecretAccessKey"])}
        iam = client("iam", *keys["admin"])
        policies = {
            "reader": _policy("s3:GetObject", "s3:ListBucket"),
            "nodelete": _policy("s3:GetObject", "s3:PutObject", "s3:ListBucket"),
        }
        for user, document in policies.items():
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=document)
            made = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (made["AccessKeyId"], made["SecretAccessKey"])
        client("s3", *keys["admin"]).create_bucket(Bucket="auth-bucket")
        yield AuthS3(endpoint, "auth-bucket", keys)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_auth_server_accepts_the_right_keys(
    backend: BackendInfo, auth_s3: AuthS3, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"s3://{auth_s3.bucket}/ok", *auth_s3.args(), *SMALL]) == 0
    assert "OK:" in capsys.readouterr().out


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_check_wrong_access_key(
    backend: BackendInfo, auth_s3: AuthS3, capsys: pytest.CaptureFixture[str]
) -> None:
    args = auth_s3.args(key="AKIAWRONGWRONGWRONG1")
    assert main(["check", f"s3://{auth_s3.bucket}/lake", *args, *SMALL]) == 1
    err = capsys.readouterr().err
    assert "FAILED at step 'list'" in err
    assert "The access key id is not known to the server" in err
    assert "InvalidAccessKeyId" in err
    assert "-o key=ACCESS_KEY -o secret=SECRET_KEY" in err


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_check_wrong_secret(
    backend: BackendInfo, auth_s3: AuthS3, capsys: pytest.CaptureFixture[str]
) -> None:
    args = auth_s3.args(secret="not-the-secret")
    assert main(["check", f"s3://{auth_s3.bucket}/lake", *args, *SMALL]) == 1
    err = capsys.readouterr().err
    assert "The secret key is wrong" in err
    assert "SignatureDoesNotMatch" in err


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_check_no_credentials_at_all(backend: BackendInfo, auth_s3: AuthS3) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    url = f"s3://{auth_s3.bucket}/lake"
    result = run_cli("check", url, "-o", f"endpoint_url={auth_s3.endpoint}", *SMALL, env=env)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert "No credentials were found for s3" in err
    assert "AWS_ACCESS_KEY_ID" in err
    assert "Traceback" not in err


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_check_permission_denied_on_write(
    backend: BackendInfo, auth_s3: AuthS3, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", f"s3://{auth_s3.bucket}/ro", *auth_s3.args("reader"), *SMALL]) == 1
    captured = capsys.readouterr()
    assert "list          ok" in captured.out
    assert "FAILED at step 'write blob'" in captured.err
    assert "Permission denied to write objects in s3://auth-bucket/ro (AccessDenied)" in (
        captured.err
    )
    assert "(s3:PutObject)" in captured.err


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_gc_without_permission_to_list_uploads_warns(
    backend: BackendInfo,
    auth_s3: AuthS3,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"s3://{auth_s3.bucket}/reader"
    assert main(["gc", url, "--dry-run", *auth_s3.args("reader")]) == 0
    assert "would delete 0 temp object(s)" in capsys.readouterr().err
    [warning] = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert "unfinished uploads are left alone" in warning.getMessage()
    assert "s3:ListBucketMultipartUploads" in warning.getMessage()


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_check_permission_denied_on_delete(
    backend: BackendInfo, auth_s3: AuthS3, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{auth_s3.bucket}/nodelete"
    assert main(["check", url, *auth_s3.args("nodelete"), *SMALL]) == 1
    captured = capsys.readouterr()
    assert "write blob    ok" in captured.out
    assert "FAILED at step 'write stream'" in captured.err  # the move deletes its temp object
    assert "Permission denied to delete objects" in captured.err
    assert "(s3:DeleteObject)" in captured.err
    assert "could not remove the probe objects" in captured.out


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_put_with_a_wrong_key_explains(
    backend: BackendInfo,
    auth_s3: AuthS3,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = auth_s3.args(key="AKIAWRONGWRONGWRONG1")
    assert main(["put", f"s3://{auth_s3.bucket}/lake", str(files["a.json"]), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The access key id is not known to the server")
    assert "Traceback" not in err


# --- put and get ------------------------------------------------------------------------


def test_put_then_get_round_trip(
    backend: BackendInfo,
    root_url: str,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = ["a.json", "b.bin", "empty.txt"]
    assert main(["put", root_url, *(str(files[n]) for n in names), *options(backend)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no progress bar when stderr is not a terminal
    lines = captured.out.splitlines()
    assert len(lines) == 3
    pointers = [json.loads(line) for line in lines]
    for name, pointer in zip(names, pointers, strict=True):
        data = files[name].read_bytes()
        assert pointer["protocol"] == backend.protocol
        assert pointer["root"] == root_of(root_url, backend)
        assert pointer["content_hash"] == hashlib.sha256(data).hexdigest()
        assert pointer["content_size"] == len(data)
    assert pointers[0]["path"].endswith(".json")
    assert not any(".lakery-tmp" in path for path in leftovers(backend, root_url))
    if backend.keeps_content_type:
        url = f"{backend.schemes[0]}://{pointers[0]['root']}/{pointers[0]['path']}"
        assert backend.metadata(url) == {
            "content_type": "application/json",
            "content_encoding": None,
        }

    for name, line in zip(names, lines, strict=True):
        out = tmp_path / f"got-{name}"
        assert main(["get", line, "-o", str(out), *options(backend, "-s")]) == 0
        assert out.read_bytes() == files[name].read_bytes()
    assert capsys.readouterr().err == ""


def test_get_to_stdout_from_a_pointer_on_stdin(
    backend: BackendInfo,
    root_url: str,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    assert main(["put", root_url, str(files["b.bin"]), *options(backend)]) == 0
    line = capsysbinary.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line)))
    assert main(["get", "-", *options(backend, "-s")]) == 0
    assert capsysbinary.readouterr().out == files["b.bin"].read_bytes()


def test_get_into_a_directory_uses_the_object_name(
    backend: BackendInfo, root_url: str, files: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    main(["put", root_url, str(files["a.json"]), *options(backend)])
    line = capsys.readouterr().out.strip()
    folder = tmp_path / "out"
    folder.mkdir()
    assert main(["get", line, "-o", str(folder), *options(backend, "-s")]) == 0
    [written] = folder.iterdir()
    assert written.name == Path(json.loads(line)["path"]).name
    assert written.read_bytes() == files["a.json"].read_bytes()


def test_get_of_a_changed_object_fails_and_writes_nothing(
    backend: BackendInfo, root_url: str, files: dict[str, Path], tmp_path: Path, capsys: Any
) -> None:
    main(["put", root_url, str(files["b.bin"]), *options(backend)])
    line = capsys.readouterr().out.strip()
    pointer = json.loads(line)
    data = bytearray(files["b.bin"].read_bytes())
    data[1000] ^= 0xFF
    backend.overwrite(f"{pointer['root']}/{pointer['path']}", bytes(data))
    out = tmp_path / "out.bin"
    assert main(["get", line, "-o", str(out), *options(backend, "-s")]) == 1
    assert "is corrupt" in capsys.readouterr().err
    assert list(tmp_path.glob("*out.bin*")) == []


def test_get_of_a_missing_object(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pointer = {
        "protocol": backend.protocol,
        "root": root_of(root_url, backend),
        "path": "no/such.bin",
    }
    assert main(["get", json.dumps(pointer), *options(backend, "-s")]) == 1
    err = capsys.readouterr().err
    assert "error: No object at" in err
    assert "Traceback" not in err


@pytest.mark.backends("s3")
def test_get_from_an_endpoint_with_nothing_listening(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No probe here: the error comes from botocore itself and is classified.
    dead = f"http://{HOST}:{free_port()}"
    pointer = {"protocol": "s3", "root": root_of(root_url, backend), "path": "ab/cd.bin"}
    args = options(backend, "-s", endpoint_url=dead)
    args += ["-s", 'config_kwargs={"retries": {"max_attempts": 1}}']
    assert main(["get", json.dumps(pointer), *args]) == 1
    err = capsys.readouterr().err
    assert f"error: Cannot connect to {dead}: connection refused" in err


def test_get_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "{not json"])
    assert exit_info.value.code == 2
    assert "Invalid FsspecStorage data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "missing-pointer.json"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'missing-pointer.json': no such file" in err
    assert "not JSON" not in err
    pointer = json.dumps({"protocol": "file", "root": "/tmp", "path": "x"})
    with pytest.raises(SystemExit) as exit_info:
        main(["get", pointer, "-o", "endpoint_url=http://127.0.0.1:5000"])
    assert exit_info.value.code == 2
    assert "did you mean -s endpoint_url=http://127.0.0.1:5000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["get", f"{pointer}\n{pointer}"])
    assert "expected one pointer, got 2 lines" in capsys.readouterr().err


def test_put_uses_the_default_url(
    backend: BackendInfo,
    root_url: str,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(URL_VARIABLE, root_url)
    assert main(["put", str(files["a.json"]), str(files["b.bin"]), *options(backend)]) == 0
    pointers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["root"] for p in pointers] == [root_of(root_url, backend)] * 2


def test_put_with_template_and_tags(
    backend: BackendInfo, root_url: str, files: dict[str, Path], capsys: Any
) -> None:
    args = ["--template", "{tags[team]}/{content_hash}{extension}", "-t", "team=ml"]
    assert main(["put", root_url, str(files["a.json"]), *args, *options(backend)]) == 0
    assert json.loads(capsys.readouterr().out)["path"].startswith("ml/")
    with pytest.raises(SystemExit) as exit_info:  # a command-line mistake: no -t team=…
        main(["put", root_url, str(files["a.json"]), *args[:2], *options(backend)])
    assert exit_info.value.code == 2
    assert "add -t team=VALUE" in capsys.readouterr().err


def test_put_refuses_what_is_not_a_file(tmp_path: Path, capsys: Any) -> None:
    lake = str(tmp_path / "lake")
    with pytest.raises(SystemExit) as exit_info:
        main(["put", lake, str(tmp_path / "nope.bin")])
    assert exit_info.value.code == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["put", lake, str(tmp_path)])
    assert "is a directory" in capsys.readouterr().err


def test_put_reads_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = payload(100_000, seed=5)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["put", str(tmp_path / "lake"), "-"]) == 0
    pointer = json.loads(capsys.readouterr().out)
    assert pointer["content_hash"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "lake" / pointer["path"]).read_bytes() == data


# --- gc ---------------------------------------------------------------------------------


def _temp_object(backend: BackendInfo, url: str) -> str:
    """A temp object as an interrupted stream leaves it."""
    path = f"{root_of(url, backend)}/.lakery-tmp/{temp_name()}"
    backend.fs().pipe_file(path, b"partial upload")
    return path


def _upload(backend: BackendInfo, url: str) -> list[str]:
    """An unfinished upload as a writer killed mid-stream leaves it, where one can be listed."""
    if not backend.lists_uploads:
        return []
    path = f"{root_of(url, backend)}/.lakery-tmp/{temp_name()}"
    backend.start_upload(path)
    return [path]


OLD = 3.1
"""Seconds to wait for temps to be over 2 s old by the server's clock (which counts whole
seconds): the temps' age is the server's, so tests wait instead of forging old names."""
GC_OLD = 6.1
"""The same for ``gc --older-than 5s``: temps made just before a dry run and a deletion
(each a new process's worth of client set-up) stay under 5 s old."""


def test_gc_dry_run_then_delete(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    old, old_upload = _temp_object(backend, root_url), _upload(backend, root_url)
    time.sleep(GC_OLD)
    fresh, fresh_upload = _temp_object(backend, root_url), _upload(backend, root_url)
    foreign = f"{root_of(root_url, backend)}/.lakery-tmp/not-a-temp-name"
    backend.fs().pipe_file(foreign, b"x")
    everything = sorted([old, fresh, foreign])
    uploads = len(old_upload)

    assert main(["gc", root_url, "--older-than", "5s", "--dry-run", *options(backend)]) == 0
    captured = capsys.readouterr()
    lines = sorted(captured.out.splitlines())
    assert [line.split("\t")[0] for line in lines] == sorted([old, *old_upload])
    assert all(
        re.fullmatch(r"\S+\t([5-9]|[1-5][0-9])s old(\tunfinished upload)?", line) for line in lines
    )
    assert sum(line.endswith("\tunfinished upload") for line in lines) == uploads
    expected = (
        f"would delete 1 temp object(s) and abort {uploads} unfinished upload(s) older than 5s"
    )
    assert expected in captured.err
    assert leftovers(backend, root_url) == everything
    if backend.lists_uploads:
        assert backend.open_uploads(root_of(root_url, backend)) == sorted(
            [*old_upload, *fresh_upload]
        )

    assert main(["gc", root_url, "--older-than", "5s", *options(backend)]) == 0
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == sorted(
        [old, *(f"{path}\tunfinished upload" for path in old_upload)]
    )
    expected = f"deleted 1 temp object(s) and aborted {uploads} unfinished upload(s) older than 5s"
    assert expected in captured.err
    assert leftovers(backend, root_url) == sorted([fresh, foreign])
    if backend.lists_uploads:
        assert backend.open_uploads(root_of(root_url, backend)) == fresh_upload

    assert main(["gc", root_url, "--older-than", "0", *options(backend)]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(
        [fresh, *(f"{path}\tunfinished upload" for path in fresh_upload)]
    )
    assert leftovers(backend, root_url) == [foreign]
    if backend.lists_uploads:
        assert backend.open_uploads(root_of(root_url, backend)) == []


def test_gc_on_a_fresh_storage_finds_nothing(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["gc", root_url, "--dry-run", *options(backend)]) == 0
    err = capsys.readouterr().err
    assert "would delete 0 temp object(s) and abort 0 unfinished upload(s) older than 1d" in err


@pytest.mark.backends("s3")
def test_gc_missing_bucket(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"s3://missing-{uuid.uuid4().hex[:12]}/lake"
    assert main(["gc", url, "--dry-run", *options(backend)]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43_200), ("7d", 604_800), ("1h30m", 5400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 2", "-5m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


def test_parse_size() -> None:
    assert parse_size("12MiB") == 12 * 2**20
    assert parse_size("512k") == 512 * 1024
    assert parse_size("1000") == 1000
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size("12 parsecs")


def test_storage_options_are_json_when_they_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}

    class Spy:
        def __init__(self, url: str, storage_options: dict[str, Any], **_: Any) -> None:
            seen.update(storage_options)
            raise ValueError("stop here")

    monkeypatch.setattr("lakery_fsspec.cli.commands.FsspecStorage", Spy)
    args = ["-o", "anon=true", "-o", "n=3", "-o", "url=http://x:1", "-o", 'c={"a": [1]}']
    main(["gc", str(tmp_path), *args, "-o", 's="007"'])
    assert seen == {"anon": True, "n": 3, "url": "http://x:1", "c": {"a": [1]}, "s": "007"}


# --- demo, help and the real process ----------------------------------------------------


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(tmp_path / "lake")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("ok")


_WITHOUT_EXTRAS = """
import importlib.abc, runpy, sys

EXTRAS = {"aiohttp", "s3fs", "aiobotocore", "botocore", "gcsfs", "adlfs", "azure",
          "paramiko", "sshfs", "asyncssh", "webdav4", "httpx", "obstore"}

class NoExtras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {name!r} (no extras installed)")
        return None

sys.meta_path.insert(0, NoExtras())
sys.argv = ["demo", sys.argv[1]]
runpy.run_module("lakery_fsspec.demo", run_name="__main__")
"""


def test_the_readme_demo_needs_no_extra(tmp_path: Path) -> None:
    # README: `pip install -e .` then `python -m lakery_fsspec.demo`, with no extras: no
    # cloud or server client may be imported on the way.
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, str(tmp_path / "lake")],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().rstrip().endswith("ok")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("check", "put", "get", "gc", "demo"):
        assert command in out


def test_python_m_put_piped_into_get(files: dict[str, Path], tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    put = run_cli("put", lake, str(files["b.bin"]))
    assert put.returncode == 0, put.stderr
    assert put.stderr == b""
    got = run_cli("get", input=put.stdout)
    assert got.returncode == 0, got.stderr
    assert got.stdout == files["b.bin"].read_bytes()
    assert got.stderr == b""


def test_get_into_a_closed_pipe_stops_quietly(files: dict[str, Path], tmp_path: Path) -> None:
    put = run_cli("put", str(tmp_path / "lake"), str(files["b.bin"]))
    pointer_file = tmp_path / "b.pointer"
    pointer_file.write_bytes(put.stdout)
    with subprocess.Popen(
        [sys.executable, "-m", "lakery_fsspec", "get", str(pointer_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # the reader is gone before the object comes (`| head -c 0`)
        assert process.wait(timeout=60) == 141
        assert process.stderr.read() == b""


def test_progress_bar_on_a_terminal(files: dict[str, Path], tmp_path: Path) -> None:
    command = [sys.executable, "-m", "lakery_fsspec", "put", str(tmp_path / "lake")]
    status, output, seen = on_a_terminal([*command, str(files["b.bin"])])
    assert status == 0
    assert json.loads(output)["content_size"] == files["b.bin"].stat().st_size
    terminal = seen.decode()
    assert "\r" in terminal
    assert "b.bin 100% [" in terminal
    assert "3.0 MiB/3.0 MiB" in terminal
