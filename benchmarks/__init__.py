"""Side-by-side benchmarks of FsspecStorage against raw fsspec, labox and obstore.

Run ``python -m benchmarks`` (or ``nox -s bench``); ``--quick`` for a short smoke run. See
``benchmarks/RESULTS.md`` for the latest full run and what its numbers mean.
"""
