"""``lakery-fsspec verify``: problems printed one a line on stdout, a summary on stderr,
exit 1 if any problem and 0 otherwise; --pointers, --sample, --resume, the progress bar."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import on_a_terminal, payload

from lakery_fsspec.cli import main

SIZED = "{tags[team]}/{content_hash:.2}/{content_hash}-{content_size}{extension}"


def options(backend: BackendInfo, **override: Any) -> list[str]:
    """The backend's storage options as command-line flags, with a server's host (SFTP),
    which pointers never name (`verify --pointers` has no URL)."""
    server = getattr(backend.server, "connect_options", {})
    args: list[str] = []
    for key, value in {**server, **backend.storage_options, **override}.items():
        args += ["-o", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


def put(
    backend: BackendInfo,
    url: str,
    tmp_path: Path,
    count: int,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> list[dict[str, Any]]:
    """Store ``count`` files with ``lakery-fsspec put``; their pointers."""
    names = []
    for index in range(count):
        name = tmp_path / f"file{index}.{'json' if index % 2 else 'bin'}"
        name.write_bytes(payload(20_000 + 999 * index, seed=index))
        names.append(str(name))
    assert main(["put", url, *names, *extra, *options(backend)]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def where(pointer: dict[str, Any]) -> str:
    return f"{pointer['root']}/{pointer['path']}"


def url_of(pointer: dict[str, Any]) -> str:
    return f"{pointer['protocol']}://{where(pointer)}"


def flip(backend: BackendInfo, pointer: dict[str, Any]) -> None:
    data = bytearray(backend.fs().cat_file(where(pointer)))
    data[100] ^= 0xFF
    backend.fs().pipe_file(where(pointer), bytes(data))


def reported(out: str) -> list[tuple[str, str]]:
    """``(kind, url)`` of each problem line."""
    lines = out.splitlines()
    pairs = []
    for line in lines:
        kind, _, rest = line.partition(": ")
        pairs.append((kind, rest.split(": ", 1)[0]))
    return pairs


def test_verify_reports_each_problem_and_exits_1(
    backend: BackendInfo, root_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sized = ["--template", SIZED]
    pointers = put(backend, root_url, tmp_path, 5, capsys, *sized, "-t", "team=ml/runs")
    assert all(p["path"].startswith("ml/runs/") for p in pointers)
    assert main(["verify", root_url, *sized, *options(backend)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "checked 5 object(s)" in captured.err
    assert "0 corrupt, 0 truncated, 0 missing, 0 unreadable" in captured.err
    assert captured.err.rstrip().endswith("OK: no problems")

    flip(backend, pointers[0])
    fs = backend.fs()
    fs.pipe_file(where(pointers[1]), fs.cat_file(where(pointers[1]))[:5000])
    fs.rm_file(where(pointers[2]))

    assert main(["verify", root_url, *sized, *options(backend)]) == 1
    captured = capsys.readouterr()
    assert sorted(reported(captured.out)) == [
        ("corrupt", url_of(pointers[0])),
        ("truncated", url_of(pointers[1])),
    ]
    assert "checked 4 object(s)" in captured.err
    assert "1 corrupt, 1 truncated, 0 missing, 0 unreadable" in captured.err
    assert "FAILED: 2 problem(s)" in captured.err
    assert "Traceback" not in captured.err

    # The pointers put printed also find the deleted object; no URL needed.
    listed = tmp_path / "pointers.jsonl"
    listed.write_text("".join(json.dumps(p) + "\n\n" for p in pointers))
    assert main(["verify", "--pointers", str(listed), *options(backend)]) == 1
    captured = capsys.readouterr()
    assert sorted(reported(captured.out)) == [
        ("corrupt", url_of(pointers[0])),
        ("missing", url_of(pointers[2])),
        ("truncated", url_of(pointers[1])),
    ]
    assert "checked 5 object(s)" in captured.err

    # The default template cannot read these paths: they are left alone, and said so;
    # nothing was checked, which is not OK (exit 3).
    assert main(["verify", root_url, *options(backend)]) == 3
    err = capsys.readouterr().err
    assert "left alone: 4 object(s) at paths the template cannot make" in err
    assert "EMPTY: no stored object under" in err


def test_verify_sample_and_resume(
    backend: BackendInfo,
    root_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pointers = put(backend, root_url, tmp_path, 8, capsys)
    flip(backend, pointers[1])
    flip(backend, pointers[6])
    damaged = sorted(("corrupt", url_of(pointers[i])) for i in (1, 6))
    args = [root_url, *options(backend)]

    runs = []
    for _ in range(2):
        status = main(["verify", *args, "--sample", "50%", "--seed", "7"])
        runs.append((status, capsys.readouterr()))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1].out == runs[1][1].out  # the same objects, so the same problems
    assert runs[0][1].err.splitlines()[:2] == runs[1][1].err.splitlines()[:2]
    assert "left out of the sample: " in runs[0][1].err
    assert set(reported(runs[0][1].out)) <= set(damaged)

    journal = tmp_path / "verify.journal"
    assert main(["verify", *args, "--resume", str(journal)]) == 1
    assert sorted(reported(capsys.readouterr().out)) == damaged
    lines = journal.read_text().splitlines()
    assert len(lines) == 9  # a header and the 8 objects
    # As if the run had been killed after three objects, in the middle of a line.
    journal.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])
    assert main(["verify", *args, "--resume", str(journal), "--concurrency", "2"]) == 1
    captured = capsys.readouterr()
    assert sorted(reported(captured.out)) == damaged  # found before or now: each once
    assert "checked 8 object(s)" in captured.err
    assert f"3 of them in earlier runs (journal {journal}); 5 in this one" in captured.err
    recorded = [json.loads(line) for line in journal.read_text().splitlines()[1:] if "{" in line]
    urls = [line["url"] for line in recorded if "url" in line]
    assert sorted(urls) == sorted(url_of(p) for p in pointers)  # each object once

    # Finished: resuming checks nothing more, and still reports what was found.
    assert main(["verify", *args, "--resume", str(journal)]) == 1
    captured = capsys.readouterr()
    assert sorted(reported(captured.out)) == damaged
    assert "8 of them in earlier runs" in captured.err
    assert "; 0 in this one" in captured.err

    # The journal of another run is refused.
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", *args, "--resume", str(journal), "--sample", "0.5"])
    assert exit_info.value.code == 2
    assert "is not the journal of this run" in capsys.readouterr().err

    # Pointers piped in, resumed too.
    piped = "".join(json.dumps(p) + "\n" for p in pointers).encode()
    pointer_journal = tmp_path / "pointers.journal"
    for _ in range(2):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(piped)))
        status = main(["verify", "--pointers", "-", "--resume", str(pointer_journal), *args[1:]])
        assert status == 1
        assert sorted(reported(capsys.readouterr().out)) == damaged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "2"], "not a fraction: '2'"),
        (["--sample", "0"], "not a fraction"),
        (["--concurrency", "0"], "not a positive whole number"),
        (["--pointers", "no-such-file.jsonl"], "cannot read the pointers file"),
    ],
)
def test_verify_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path / "lake"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_verify_a_bad_pointers_line_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"protocol": "file", "root": str(tmp_path), "path": "ab/cd"}
    listed = tmp_path / "pointers.jsonl"
    listed.write_text(json.dumps(good) + "\n" + '{"protocol": "file"}\n')
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--pointers", str(listed)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{listed} line 2: Invalid FsspecStorage data" in err
    assert "'root' is missing" in err


@pytest.mark.backends("s3")
def test_verify_an_unreachable_storage_is_explained(
    backend: BackendInfo, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from servers import HOST, free_port

    dead = f"http://{HOST}:{free_port()}"
    args = options(backend, endpoint_url=dead, config_kwargs={"retries": {"max_attempts": 1}})
    assert main(["verify", root_url, *args]) == 1
    err = capsys.readouterr().err
    assert f"error: Cannot connect to {dead}" in err
    assert "Traceback" not in err


def test_verify_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    files = []
    for index in range(3):
        files.append(tmp_path / f"f{index}.bin")
        files[-1].write_bytes(payload(300_000, seed=index))
    command = [sys.executable, "-m", "lakery_fsspec"]
    stored = subprocess.run(
        [*command, "put", str(lake), *map(str, files)], capture_output=True, timeout=60, check=True
    )
    pointer = json.loads(stored.stdout.splitlines()[0])
    target = lake / pointer["path"]
    target.write_bytes(target.read_bytes()[:-1] + b"!")

    status, output, seen = on_a_terminal([*command, "verify", str(lake)])
    assert status == 1
    [line] = output.decode().splitlines()
    assert line.startswith(f"corrupt: file://{target}: the sha256 of its 300000 bytes is ")
    terminal = seen.decode()
    assert "\r" in terminal
    assert "verify 878.9 KiB" in terminal  # 3 x 300,000 bytes hashed
    assert "objects, " in terminal  # how many so far, while it runs
    assert "FAILED: 1 problem(s)" in terminal


def test_verify_journal_cut_short_in_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = tmp_path / "lake"
    data = b"some bytes"
    digest = hashlib.sha256(data).hexdigest()
    (lake / digest[:2]).mkdir(parents=True)
    (lake / digest[:2] / f"{digest}.bin").write_bytes(data)
    journal = tmp_path / "j"
    journal.write_text('{"journal": "lakery-fsspec ver')  # the crash came that early
    assert main(["verify", str(lake), "--resume", str(journal)]) == 0
    assert "checked 1 object(s)" in capsys.readouterr().err
    lines = journal.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["url"] == f"file://{lake}/{digest[:2]}/{digest}.bin"
    journal.write_text("not a journal\n")
    with pytest.raises(SystemExit):
        main(["verify", str(lake), "--resume", str(journal)])
    assert "line 1 is not a verify journal line" in capsys.readouterr().err
    assert journal.read_text() == "not a journal\n"  # left as it was
