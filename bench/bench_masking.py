"""Unmasking throughput for a 1 MiB payload: the C speed-up against pure Python.

Run with ``python bench/bench_masking.py``. Prints the best of several timed
rounds in GB/s (10**9 bytes per second) for each available implementation.
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable

from wsserver.sansio.masking import HAS_SPEEDUPS, apply_mask, apply_mask_python

PAYLOAD_BYTES = 1024 * 1024
ROUNDS = 7
MIN_ROUND_SECONDS = 0.2


def gigabytes_per_second(function: Callable[[bytes, bytes], bytes]) -> float:
    """Time ``function`` on a random payload; return the best round's rate."""
    data = os.urandom(PAYLOAD_BYTES)
    mask = os.urandom(4)
    timer = timeit.Timer(lambda: function(data, mask))
    calls, _ = timer.autorange()
    while timer.timeit(calls) < MIN_ROUND_SECONDS:
        calls *= 2
    best_seconds = min(timer.repeat(repeat=ROUNDS, number=calls)) / calls
    return PAYLOAD_BYTES / best_seconds / 1e9


def main() -> None:
    print(f"unmasking {PAYLOAD_BYTES} bytes, best of {ROUNDS} rounds")
    if HAS_SPEEDUPS:
        print(f"  C speed-up   {gigabytes_per_second(apply_mask):7.2f} GB/s")
    else:
        print("  C speed-up   not built")
    print(f"  pure Python  {gigabytes_per_second(apply_mask_python):7.2f} GB/s")


if __name__ == "__main__":
    main()
