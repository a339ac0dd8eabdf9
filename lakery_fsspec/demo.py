"""``python -m lakery_fsspec.demo``: the README's main job (it lives in ``cli.demo``)."""

from lakery_fsspec.cli.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
