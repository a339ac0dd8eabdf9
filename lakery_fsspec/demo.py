"""``python -m lakery_fsspec.demo``: the README's main job, ``lakery-fsspec demo`` (its
options, help and plain-words errors; the demo itself is ``cli.demo``)."""

import sys

from lakery_fsspec.cli.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
