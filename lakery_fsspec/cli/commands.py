"""The ``lakery-fsspec`` command (``python -m lakery_fsspec``): check, put, get, gc, verify,
copy, demo.

Every command that takes a storage URL defaults to ``$LAKERY_FSSPEC_URL``, else the local
directory ``./lake``. Errors are explained in plain words on stderr with a non-zero exit
status; ``--debug`` adds the traceback and the storage's debug log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from lakery_fsspec._errors import IntegrityError
from lakery_fsspec._location import redacted, spec_of
from lakery_fsspec._pointer import FsspecPointer, parse_pointer
from lakery_fsspec._relocation import Place, Relocations, rerooted
from lakery_fsspec._router import DEFAULT_TEMPLATE, PathTemplate
from lakery_fsspec._storage import FsspecStorage
from lakery_fsspec._temp import TempPath
from lakery_fsspec.cli.arguments import PUT_RULE, check_url, split_put_paths
from lakery_fsspec.cli.diagnose import Diagnosis, diagnose, endpoint_of, pointer_mixed_up
from lakery_fsspec.cli.doctor import Doctor
from lakery_fsspec.cli.errors import Failure, UsageError
from lakery_fsspec.cli.filestream import FileStream, guess_content_type
from lakery_fsspec.cli.flags import (
    KEY,
    URL_VARIABLE,
    add_relocated,
    add_storage_options,
    add_temp_prefix,
    add_timeout,
    add_url,
    command,
    key_value,
    parse_duration,
    parse_fraction,
    parse_size,
    positive_int,
)
from lakery_fsspec.cli.gc import add_gc_arguments, check_gc_arguments, run_sweep, run_trash
from lakery_fsspec.cli.logs import leftover_warnings, show_logs
from lakery_fsspec.cli.output import is_direct, resolve_output, write_output
from lakery_fsspec.cli.progress import Progress, human_size

if TYPE_CHECKING:
    from lakery_fsspec.cli.verify import PointerFile

__all__ = [
    "DEFAULT_URL",
    "URL_VARIABLE",
    "main",
    "parse_duration",
    "parse_fraction",
    "parse_size",
]

DEFAULT_URL = "./lake"
"""The storage used when no URL is given and ``$LAKERY_FSSPEC_URL`` is not set."""

_NOTHING_WRITTEN = frozenset(
    {"bad-credentials", "no-credentials", "permission-denied", "no-bucket", "read-only"}
)
"""Diagnoses of failures in which nothing reached the storage: a failed clean-up after
one is not worth a warning."""
_UPLOAD_NOTE = {"object": "", "upload": "\tunfinished upload"}
"""What ``gc`` prints after a temp's path, by its kind."""


@dataclass
class Context:
    """What a command is doing, so that a failure can be explained."""

    url: str = ""
    protocol: str = ""
    action: str = ""
    endpoint: str | None = None
    lives_on: bool = False
    """Whether the process lives on after the command (``main`` called from Python), so
    that a memory:// storage keeps what was put there."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Called with ``argv`` from Python, the caller's process outlives the command, so
    ``put`` may store into memory://; as the command itself (no ``argv``) it refuses to.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, Context], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        print("\nStart with: lakery-fsspec check", file=sys.stdout)
        return 0
    debug: bool = getattr(args, "debug", False) or args.debug_everywhere
    args.debug = debug
    show_logs(debug)
    leftover_warnings()  # none held from an earlier command in this process
    context = Context(lives_on=argv is not None)
    try:
        status = handler(args, context)
        _tell(leftover_warnings())
        return status
    except UsageError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    except Failure as failure:
        if debug:
            traceback.print_exc()
        _explain(Diagnosis("refused", failure.message, failure.fix))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as error:
        if debug:
            traceback.print_exc()
        found = diagnose(
            error,
            url=redacted(context.url),
            protocol=context.protocol,
            action=context.action,
            endpoint=context.endpoint,
        )
        _explain(found)
        held = leftover_warnings()
        _tell([] if found.kind in _NOTHING_WRITTEN else held)
        return 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lakery-fsspec`` command."""
    parser = argparse.ArgumentParser(
        prog="lakery-fsspec",
        description=(
            "Check, fill and read a lakery-fsspec storage: a local directory or any fsspec "
            f"URL (s3://, gs://, abfs://, memory://, …). URL defaults to ${URL_VARIABLE}, "
            f"else {DEFAULT_URL}."
        ),
        epilog="Run `lakery-fsspec COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        dest="debug_everywhere",  # a sub-command's own --debug default would override it
        help="show tracebacks and debug logs (also accepted after the command)",
    )
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    check = command(commands, "check", "probe a storage step by step and explain any failure")
    add_url(check)
    add_storage_options(check, "-o", "-s")
    check.add_argument("--template", help="also validate this path template")
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="check's own limit: the time allowed to first reach the storage (default 10; "
        "the data steps get 12x); other commands' --timeout bounds each call instead",
    )
    check.add_argument(
        "--size",
        type=parse_size,
        default=12 * 2**20,
        metavar="SIZE",
        help="size of the object streamed through temp and move (default 12MiB)",
    )
    add_temp_prefix(check)
    check.set_defaults(handler=_check)

    put = command(
        commands,
        "put",
        "stream files into the storage; print one pointer per line",
        epilog=PUT_RULE + " A lone argument that is none of these is refused: to store "
        "standard input into a new lake folder, write `put ./lake -`. Of several "
        "arguments, a first that is neither a file nor '-' is the URL (a new folder if "
        "nothing is there).",
    )
    put.add_argument(
        "paths",
        nargs="*",
        metavar="[URL] FILE",
        help="the storage URL (left out: $LAKERY_FSSPEC_URL or ./lake), then the files to "
        "store; '-' reads standard input",
    )
    add_storage_options(put, "-o", "-s")
    put.add_argument("--template", help="path template for the stored objects")
    put.add_argument(
        "-t",
        "--tag",
        action="append",
        default=[],
        type=key_value,
        metavar="NAME=VALUE",
        help="a tag for the template's {tags[NAME]} (repeatable)",
    )
    put.add_argument("--content-type", help="content type to record (default: from the name)")
    add_timeout(put)
    put.set_defaults(handler=_put)

    get = command(commands, "get", "stream an object out to a file or standard output")
    get.add_argument(
        "pointer",
        nargs="?",
        default="-",
        metavar="POINTER",
        help="the pointer JSON printed by put, a file holding it, or '-' (default) to read it "
        "from standard input",
    )
    get.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="file (or directory) to write; '-' for standard output (the default when piped)",
    )
    add_storage_options(get, "-s", note="; -o is the output file here")
    get.add_argument(
        "--url",
        help="read from this storage URL instead of the pointer's own root, same relative "
        "path (a lake that was moved or copied there)",
    )
    add_relocated(get)
    add_timeout(get)
    get.set_defaults(handler=_get)

    gc = command(
        commands,
        "gc",
        "delete temp objects and abort unfinished uploads left behind by interrupted streams; "
        "with --db, also sweep the objects no labox record references (into a trash first)",
    )
    add_url(gc)
    add_storage_options(gc, "-o", "-s")
    gc.add_argument(
        "--older-than",
        type=parse_duration,
        default=86_400.0,
        metavar="DURATION",
        help="age (by the server's clock) of the temps to delete, "
        "e.g. 90s, 30m, 12h, 7d, 1h30m (default 1d)",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    add_gc_arguments(gc)
    add_timeout(gc)
    add_temp_prefix(gc)
    gc.set_defaults(handler=_gc)

    verify = command(
        commands,
        "verify",
        "re-hash stored objects; report corrupt, truncated, missing ones",
        epilog="Exit status: 0 no problem found, 1 problems found (or a failure), 2 a "
        "command-line mistake, 3 no stored object found under the root (nothing matched "
        "the template; see --allow-empty).",
    )
    add_url(verify)
    add_storage_options(verify, "-o", "-s")
    verify.add_argument(
        "--template",
        help="the path template the objects were written with, from which each path's hash "
        "is read (default: lakery-fsspec's default template)",
    )
    verify.add_argument(
        "--pointers",
        metavar="FILE",
        help="check the objects these pointers name (one JSON a line, as put prints them; "
        "'-' for standard input) against the hash and size they record, instead of walking "
        "the storage; this also finds missing objects. Given a URL, each object is read "
        "from there, same relative path, instead of its pointer's own root; URL defaults "
        "to the first pointer's",
    )
    verify.add_argument(
        "--sample",
        type=parse_fraction,
        metavar="FRACTION",
        help="check only a random fraction of the objects, e.g. 0.01 (the same --seed "
        "picks the same objects)",
    )
    verify.add_argument("--seed", default="0", help="chooses the --sample (default 0)")
    verify.add_argument(
        "--resume",
        metavar="FILE",
        help="journal of the run: each checked object is recorded there, and the same "
        "command with the same FILE goes on where an interrupted run stopped",
    )
    verify.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="objects read at once (default 8)",
    )
    verify.add_argument(
        "--repair-from",
        metavar="URL",
        help="replace each corrupt, truncated or missing object with the one at the same "
        "relative path under URL (a copy of the lake), once that one hashes right",
    )
    verify.add_argument(
        "--repair-option",
        dest="repair_option",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="an fsspec storage option of --repair-from's URL (repeatable)",
    )
    add_relocated(verify)
    add_timeout(verify)
    verify.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when no stored object is found (an empty lake is expected); "
        "otherwise that exits 3",
    )
    add_temp_prefix(verify)
    verify.set_defaults(handler=_verify)

    copy = command(
        commands,
        "copy",
        "copy a lake to another storage, same relative paths, create-only, checked by hash",
        epilog="Exit status: 0 every object is at the destination, 1 some were not copied "
        "(corrupt, truncated, missing or unreadable at the source, or failed to write; each "
        "is printed on stdout) or a failure, 2 a command-line mistake, 3 no object to copy "
        "was found (see --allow-empty).",
    )
    copy.add_argument("src", metavar="SRC", help="the storage URL to copy from")
    copy.add_argument("dst", metavar="DST", help="the storage URL to copy to")
    add_storage_options(copy, "-o", "-s", note="; SRC's own (DST's: --dst-option)")
    copy.add_argument(
        "--dst-option",
        dest="dst_option",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="an fsspec storage option of DST (credentials, endpoint), as -o is SRC's (repeatable)",
    )
    copy.add_argument(
        "--template",
        help="the path template SRC's objects were written with, from which each path's "
        "hash is read (default: lakery-fsspec's default template)",
    )
    copy.add_argument(
        "--pointers",
        metavar="FILE",
        help="copy only the objects these pointers name (one JSON a line, as put prints "
        "them; '-' for standard input), checked against the hash and size they record, "
        "instead of every object under SRC",
    )
    copy.add_argument(
        "--db",
        metavar="DATABASE_URL",
        help="labox's database (an async SQLAlchemy URL, e.g. sqlite+aiosqlite:///labox.db): "
        "copy only the objects its records point at under SRC, so garbage stays behind",
    )
    copy.add_argument(
        "--rewrite",
        action="store_true",
        help="with --db: once the copy is done, point each record whose object is verified "
        "at DST (copied, or already there and re-hashed) at DST, in batches of one "
        "transaction each",
    )
    copy.add_argument(
        "--resume",
        metavar="FILE",
        help="journal of the run: each object handled is recorded there, and the same "
        "command with the same FILE goes on where an interrupted run stopped",
    )
    copy.add_argument(
        "--verify",
        action="store_true",
        help="re-hash objects already at DST (of the right size) and replace damaged ones",
    )
    copy.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="objects copied at once (default 8)",
    )
    copy.add_argument(
        "--link",
        action="store_true",
        help="on one local filesystem, hard-link instead of copying (the two lakes then "
        "share the bytes: a linked copy is no backup)",
    )
    copy.add_argument(
        "--stream",
        action="store_true",
        help="stream every object through this machine, even where SRC and DST are one "
        "service that could copy server-side (S3 copies, reflinks)",
    )
    copy.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when SRC holds no object to copy; otherwise that exits 3",
    )
    add_timeout(copy)
    add_temp_prefix(copy)
    copy.set_defaults(handler=_copy)

    demo = command(commands, "demo", "save and load data through labox (lakery_fsspec.demo)")
    add_url(demo)
    add_timeout(demo)
    demo.set_defaults(handler=_demo)
    return parser


# --- commands ---------------------------------------------------------------------------


def _check(args: argparse.Namespace, context: Context) -> int:
    url = _url(args)
    options = _options(args)
    _prepare_environment(url, options)
    doctor = Doctor(
        url,
        options,
        template=args.template,
        temp_prefix=args.temp_prefix,
        timeout=args.timeout,
        stream_size=args.size,
        echo=lambda line: print(line, flush=True),
    )
    if doctor.run():
        return 0
    if args.debug and doctor.error is not None:
        traceback.print_exception(doctor.error)
    assert doctor.diagnosis is not None
    print(f"FAILED at step {doctor.failed_step!r}", file=sys.stderr)
    _explain(doctor.diagnosis)
    return 1


def _put(args: argparse.Namespace, context: Context) -> int:
    url, files = split_put_paths(args.paths, _url(args))
    if "-" in files and sys.stdin.isatty():
        msg = "no FILE given: name the files to store, or pipe data in (`... | lakery-fsspec put`)"
        raise UsageError(msg)
    if _scheme(url) and spec_of(_scheme(url)).backend.process_local and not context.lives_on:
        msg = (
            f"{url} is kept in this process's memory, which is gone when the command "
            "exits: nothing put there could be read again."
        )
        fix = "Store into a local folder or an object store instead (a memory:// storage "
        fix += "is for the Python API, within one process)."
        raise Failure(msg, fix)
    options = _options(args)
    _prepare_environment(url, options)
    kwargs: dict[str, Any] = {"storage_options": options, "timeout": args.timeout}
    if args.template is not None:
        kwargs["router"] = args.template
    context.url, context.action = url, "write"
    storage = FsspecStorage(url, **kwargs)
    context.protocol = storage.location.protocol
    context.endpoint = endpoint_of(context.protocol, options)
    tags = dict(args.tag)
    if isinstance(storage.router, PathTemplate) and (
        missing := sorted(storage.router.tag_names - tags.keys())
    ):
        given = " ".join(f"-t {name}=VALUE" for name in missing)
        msg = f"the template {storage.router.template!r} needs the tag(s) {missing}: add {given}"
        raise UsageError(msg)

    for name in files:
        pointer = _put_one(storage, name, tags, args.content_type)
        print(storage.serialize_config(pointer), flush=True)
    return 0


def _put_one(
    storage: FsspecStorage, name: str, tags: dict[str, str], content_type: str | None
) -> FsspecPointer:
    """Stream one file (or stdin) into the storage with a progress bar on a terminal."""
    content_type = content_type or guess_content_type(name)
    if name == "-":
        return asyncio.run(
            _put_stream(storage, sys.stdin.buffer, "stdin", None, tags, content_type)
        )
    with open(name, "rb") as source:
        total = os.fstat(source.fileno()).st_size
        label = Path(name).name
        return asyncio.run(_put_stream(storage, source, label, total, tags, content_type))


async def _put_stream(
    storage: FsspecStorage,
    source: BinaryIO,
    label: str,
    total: int | None,
    tags: dict[str, str],
    content_type: str,
) -> FsspecPointer:
    with Progress(label, total, waiting_on=_named(storage)) as bar:
        stream = FileStream(
            source,
            content_type=content_type,
            on_chunk=bar.update,
            on_end=lambda: bar.note("moving into place…"),
        )
        return await storage.write_data_stream(stream, stream.get_digest, tags)


def _get(args: argparse.Namespace, context: Context) -> int:
    output: str | None = args.output
    key, is_option, _ = (output or "").partition("=")
    if is_option and KEY.fullmatch(key) and not Path(output or "").exists():
        msg = (
            f"-o names the output file in `get`; give storage options with -s "
            f"(did you mean -s {output}?). For a file with '=' in its name, write ./{output}"
        )
        raise UsageError(msg)
    pointer = _read_pointer(args.pointer)
    if output in (None, "-") and sys.stdout.isatty():
        msg = "refusing to write an object to the terminal: use -o FILE or redirect (> FILE)"
        raise UsageError(msg)
    options = _options(args)
    relocations = _relocations(args)
    url = check_url(args.url) if args.url else str(relocations.place_of(pointer)[0])
    _prepare_environment(url, options)
    context.url, context.action = url, "read"
    storage = FsspecStorage(
        url,
        storage_options=options,
        router=None,
        verify_reads=True,
        timeout=args.timeout,
        **_relocated(args, relocations),
    )
    if args.url:
        pointer = rerooted(pointer, Place(storage.location.protocol, storage.location.root))
    context.protocol = storage.location.protocol
    context.endpoint = endpoint_of(context.protocol, options)
    total = pointer.get("content_size")
    label = Path(pointer["path"]).name

    async def copy(sink: BinaryIO) -> None:
        with Progress(label, total, waiting_on=_named(storage)) as bar:
            async for chunk in storage.read_data_stream(pointer):
                sink.write(chunk)
                bar.update(len(chunk))

    if output in (None, "-"):
        asyncio.run(copy(sys.stdout.buffer))
        sys.stdout.buffer.flush()
        return 0
    target = resolve_output(output, Path(pointer["path"]).name)
    direct = is_direct(target)
    try:
        write_output(target, lambda sink: asyncio.run(copy(sink)))
    except IntegrityError as error:
        if mixed_up := pointer_mixed_up(pointer):
            raise Failure(f"{error} {mixed_up}", "Use the pointer that put printed.") from error
        if not direct:
            raise  # nothing was written
        msg = (
            f"{error} The bytes already written to {target} are not the object's: it is "
            "a device, FIFO or socket, written through as the object streamed in."
        )
        raise Failure(msg, "Run `lakery-fsspec verify` on the storage.") from error
    if sys.stderr.isatty() and not direct:
        print(f"wrote {target} ({human_size(target.stat().st_size)})", file=sys.stderr)
    return 0


def _gc(args: argparse.Namespace, context: Context) -> int:
    url = _url(args)
    options = _options(args)
    _prepare_environment(url, options)
    context.url, context.action = url, "list"
    storage = FsspecStorage(
        url, storage_options=options, temp_prefix=args.temp_prefix, timeout=args.timeout
    )
    context.protocol = storage.location.protocol
    context.endpoint = endpoint_of(context.protocol, options)
    check_gc_arguments(args)
    if args.runs or args.restore is not None:
        return run_trash(args, storage, _named(storage))
    _gc_temps(args, context, storage)
    if args.db:
        context.action = "delete"
        return run_sweep(args, storage, _named(storage))
    return 0


def _gc_temps(args: argparse.Namespace, context: Context, storage: FsspecStorage) -> None:
    older_than: float = args.older_than
    age = _age(older_than)
    if args.dry_run:
        with Progress("gc", waiting_on=_named(storage)):
            found = asyncio.run(storage.list_temp(older_than))
        for path, seconds in found:
            print(f"{path}\t{_age(seconds)} old{_UPLOAD_NOTE[path.kind]}")
        what = _temps([path for path, _ in found], "would delete", "abort")
        print(f"{what} older than {age}", file=sys.stderr)
        return
    context.action = "delete"
    try:
        with Progress("gc", waiting_on=_named(storage)):
            removed = asyncio.run(storage.cleanup_temp(older_than))
    except FileNotFoundError:
        context.action = "list"  # deletions ignore what is gone: the listing found nothing
        raise
    for path in removed:
        print(f"{path}{_UPLOAD_NOTE[path.kind]}")
    print(f"{_temps(removed, 'deleted', 'aborted')} older than {age}", file=sys.stderr)


def _temps(paths: Sequence[TempPath], delete: str, abort: str) -> str:
    """``"deleted 2 temp object(s) and aborted 1 unfinished upload(s)"``."""
    uploads = sum(path.kind == "upload" for path in paths)
    objects = len(paths) - uploads
    return f"{delete} {objects} temp object(s) and {abort} {uploads} unfinished upload(s)"


@contextlib.contextmanager
def _pointer_file(args: argparse.Namespace) -> Generator[PointerFile | None]:
    """``--pointers``' file, if given, closed afterwards; a file that is not one, or a
    ``--resume`` journal of another run, is a command-line mistake."""
    from lakery_fsspec.cli.journal import JournalError
    from lakery_fsspec.cli.verify import PointerFile

    pointers = None
    if args.pointers is not None:
        if args.pointers == "-" and sys.stdin.isatty():
            raise UsageError("--pointers -: pipe the pointers in, or name a file")
        try:
            pointers = PointerFile(args.pointers)
        except ValueError as error:
            raise UsageError(str(error)) from None
    try:
        yield pointers
    except JournalError as error:
        raise UsageError(str(error)) from None
    finally:
        if pointers is not None:
            pointers.close()


def _verify(args: argparse.Namespace, context: Context) -> int:
    from lakery_fsspec.cli.verify import VerifyRun

    with _pointer_file(args) as pointers:
        if pointers is None and args.relocated:
            raise UsageError("--relocated moves where pointers are read: give --pointers")
        relocations = _relocations(args)
        url = check_url(args.url) if args.url else None
        if url is None and pointers is not None and pointers.first is not None:
            url = str(relocations.place_of(pointers.first)[0])
        rerooting = pointers is not None and bool(args.url)
        url = url or _url(args)
        options = _options(args)
        _prepare_environment(url, options)
        kwargs: dict[str, Any] = {
            "storage_options": options,
            "temp_prefix": args.temp_prefix,
            "timeout": args.timeout,
            **_relocated(args, relocations),
        }
        if args.template is not None:
            kwargs["router"] = args.template
        context.url, context.action = url, "read"
        storage = FsspecStorage(url, **kwargs)
        context.protocol = storage.location.protocol
        context.endpoint = endpoint_of(context.protocol, options)
        run = VerifyRun(
            storage,
            pointers,
            sample=args.sample,
            seed=args.seed,
            resume=args.resume,
            concurrency=args.concurrency,
            allow_empty=args.allow_empty,
            reroot=rerooting,
            repair_from=_repair_source(args),
        )
        return run.run()


def _copy(args: argparse.Namespace, context: Context) -> int:
    from lakery_fsspec.cli.copy import CopyRun

    with _pointer_file(args) as pointers:
        if args.rewrite and args.db is None:
            raise UsageError("--rewrite rewrites labox's records: give --db DATABASE_URL")
        if args.db is not None and pointers is not None:
            raise UsageError("--pointers and --db both choose the objects: give one")
        src, dst = check_url(args.src), check_url(args.dst)
        options, dst_options = _options(args), dict(args.dst_option)
        _prepare_environment(src, options)
        _prepare_environment(dst, dst_options)
        common: dict[str, Any] = {"temp_prefix": args.temp_prefix, "timeout": args.timeout}
        context.url, context.action = src, "read"
        source = FsspecStorage(
            src, storage_options=options, router=args.template or DEFAULT_TEMPLATE, **common
        )
        context.protocol = source.location.protocol
        context.endpoint = endpoint_of(context.protocol, options)
        destination = FsspecStorage(dst, storage_options=dst_options, **common)
        run = CopyRun(
            source,
            destination,
            pointers,
            resume=args.resume,
            concurrency=args.concurrency,
            verify_present=args.verify,
            database=args.db,
            rewrite=args.rewrite,
            server_side=not args.stream,
            link=args.link,
            allow_empty=args.allow_empty,
        )
        return run.run()


def _repair_source(args: argparse.Namespace) -> FsspecStorage | None:
    """``verify --repair-from URL``'s storage, with its own options."""
    if args.repair_from is None:
        return None
    url, options = check_url(args.repair_from), dict(args.repair_option)
    _prepare_environment(url, options)
    return FsspecStorage(url, storage_options=options, router=None, timeout=args.timeout)


def _demo(args: argparse.Namespace, context: Context) -> int:
    from lakery_fsspec.cli.demo import main as demo_main

    context.url, context.action = _url(args), "write"
    return demo_main([context.url], timeout=args.timeout)


# --- argument helpers -------------------------------------------------------------------


def _named(storage: FsspecStorage) -> str:
    """The storage's root as a URL, for "waiting for …"."""
    return f"{storage.location.protocol}://{storage.location.root}"


def _version() -> str:
    try:
        return metadata.version("lakery-fsspec")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _url(args: argparse.Namespace) -> str:
    """The URL given, else $LAKERY_FSSPEC_URL, else ./lake; a mistyped scheme is refused."""
    return check_url(getattr(args, "url", None) or os.environ.get(URL_VARIABLE) or DEFAULT_URL)


def _scheme(url: str) -> str:
    """The innermost protocol a URL names (``""`` for a local path)."""
    inner = url.split("::")[-1]
    return inner.split("://", 1)[0] if "://" in inner else ""


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(args.storage_option)


def _relocations(args: argparse.Namespace) -> Relocations:
    """The ``--relocated`` entries, checked."""
    try:
        return Relocations(dict(args.relocated))
    except ValueError as error:
        raise UsageError(f"--relocated: {error}") from None


def _relocated(args: argparse.Namespace, relocations: Relocations) -> dict[str, Any]:
    """The storage's ``relocated``, and ``read_options`` that let it read where they point
    (with the environment's credentials; ``-s`` options are the storage URL's)."""
    if not relocations:
        return {}
    others = {place.protocol: {} for place in relocations.new_places()}
    return {"relocated": dict(args.relocated), "read_options": others}


def _read_pointer(text: str) -> FsspecPointer:
    if not text.lstrip().startswith("{") and text != "-":
        if not Path(text).is_file():
            why = "is a directory" if Path(text).is_dir() else "no such file"
            msg = (
                f"{text!r}: {why}. POINTER is the JSON that put printed, a file holding it, "
                "or '-' for standard input"
            )
            raise UsageError(msg)
        text = Path(text).read_text()
    elif text == "-":
        if sys.stdin.isatty():
            msg = "no POINTER given: pass the JSON printed by put, or pipe it in"
            raise UsageError(msg)
        text = sys.stdin.read()
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        msg = f"expected one pointer, got {len(lines)} lines (get one object at a time)"
        raise UsageError(msg)
    try:
        return parse_pointer(lines[0])
    except ValueError as error:
        raise UsageError(str(error)) from None


def _prepare_environment(url: str, options: dict[str, Any]) -> None:
    """Set what the URL's client reads from the environment when it is imported."""
    spec_of(_scheme(url) or "file").prepare_environment(options)


def _age(seconds: float) -> str:
    """``90.0`` -> ``"90s"``, ``86400.0`` -> ``"1d"``, ``5400.0`` -> ``"1.5h"``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds:.0f}s"


def _tell(lines: Sequence[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _explain(found: Diagnosis) -> None:
    print(f"error: {found.message}", file=sys.stderr)
    if found.fix:
        print(f"fix: {found.fix}", file=sys.stderr)
