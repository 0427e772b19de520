"""Shared pieces of the fuzz tests: the case budget, the tally and mutation strategies.

Budget: each target has a CI case count (``fuzz(n)``) under the hypothesis profile "ci":
derandomized and without an example database, so every CI run tries the same cases. With
``MERC_FUZZ_EXAMPLES=K`` (K > 1) the profile is "thorough": every count times K, fresh random
inputs each run; a failure prints the shrunk input and a blob to replay it (@reproduce_failure).
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SCALE = max(1, int(os.environ.get("MERC_FUZZ_EXAMPLES", "1") or "1"))
THOROUGH = SCALE > 1

# target -> outcome -> cases run ("ok", "rejected", ...): printed at the end of the session.
TALLY: dict[str, Counter] = {}


def count(target: str, outcome: str) -> None:
    TALLY.setdefault(target, Counter())[outcome] += 1


settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,  # model-backed cases vary with the machine's load; hangs are caught by pytest-timeout
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                           HealthCheck.filter_too_much],
)
settings.register_profile("thorough", settings.get_profile("ci"), derandomize=False)
settings.load_profile("thorough" if THOROUGH else "ci")


def fuzz(examples: int):
    """Settings of one fuzz target: its CI case count, times MERC_FUZZ_EXAMPLES."""
    return settings(max_examples=examples * SCALE)


def _apply(data: bytearray, op: tuple) -> bytearray:
    kind, pos, arg = op
    if not data:
        return bytearray(arg if isinstance(arg, bytes) else b"")
    pos %= len(data)
    if kind == "flip":
        data[pos] ^= 1 << (arg % 8)
    elif kind == "set":
        data[pos] = arg % 256
    elif kind == "overwrite":
        data[pos : pos + len(arg)] = arg
    elif kind == "insert":
        data[pos:pos] = arg
    elif kind == "delete":
        del data[pos : pos + arg]
    elif kind == "truncate":
        del data[pos:]
    elif kind == "duplicate":
        data[pos:pos] = data[pos : pos + arg]
    return data


# Positions lean on the first bytes: headers (RIFF/fmt, fLaC/STREAMINFO, PNG IHDR, JPEG SOF,
# MP4 ftyp/moov) are where a mutation changes what a decoder believes about the rest.
_POS = st.one_of(st.integers(0, 63), st.integers(0, 2**20))
_INTERESTING = st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff",
                                b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x01\x00\x00\x00", b"\x00\x00\x80\x7f"])
_OPS = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(0, 7)),
    st.tuples(st.just("set"), _POS, st.integers(0, 255)),
    st.tuples(st.just("overwrite"), _POS, st.one_of(_INTERESTING, st.binary(min_size=1, max_size=16))),
    st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), _POS, st.integers(1, 256)),
    st.tuples(st.just("truncate"), _POS, st.just(0)),
    st.tuples(st.just("duplicate"), _POS, st.integers(1, 256)),
)


def mutate(seed: bytes, *ops: tuple) -> bytes:
    """``seed`` with the given mutations applied: regression examples name their input this way."""
    data = bytearray(seed)
    for op in ops:
        data = _apply(data, op)
    return bytes(data)


def mutated(seed: bytes, max_ops: int = 6) -> st.SearchStrategy[bytes]:
    """A valid file with a few bit flips, overwrites, splices, deletions or a truncation."""

    def build(ops: list[tuple]) -> bytes:
        return mutate(seed, *ops)

    return st.lists(_OPS, min_size=1, max_size=max_ops).map(build)


def media_bytes(*seeds: bytes) -> st.SearchStrategy[bytes]:
    """Pure random bytes, a valid seed as it is, or a mutated seed (most of the cases)."""
    mutants = st.sampled_from(seeds).flatmap(mutated)
    return st.one_of(st.binary(max_size=2048), st.sampled_from(seeds), mutants, mutants)


def peak_traced_mb(call) -> tuple[object, float]:
    """``call()``'s result (or exception, returned) and the peak of Python and numpy allocations during it, in MB.

    What the decoders allocate from a header (arrays) is traced; what C libraries allocate for
    themselves is not (tests/memory_bounds.py measures whole processes for that).
    """
    import tracemalloc

    tracemalloc.start()
    try:
        out = call()
    except Exception as e:  # the caller decides which exceptions are acceptable
        out = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return out, peak / 2**20
