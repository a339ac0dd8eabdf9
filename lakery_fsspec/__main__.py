"""``python -m lakery_fsspec``: the ``lakery-fsspec`` command."""

from lakery_fsspec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
