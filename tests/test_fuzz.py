"""A short run of the fuzz campaign of ``bench/fuzz.py``: the same core, untimed.

The benchmark runs a million inputs and reports their times; this runs a few thousand
on every test run, so that a decoder raising anything but its own error fails CI with
the input's hex. Timings are never asserted here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import fuzz_support
from .conftest import vectors_root

INPUTS = 30_000


@pytest.fixture(scope="module")
def harness() -> Iterator[fuzz_support.Harness]:
    built = fuzz_support.Harness(vectors_root())
    yield built
    built.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_inputs_raise_only_the_decoders_own_errors(
    harness: fuzz_support.Harness, seed: int
) -> None:
    tally = fuzz_support.run(harness, random.Random(f"test:{seed}"), INPUTS // 2)
    assert tally.untyped == 0, "\n".join(
        f"{f.kind} {f.strategy}: {f.error}\n  {f.data.hex().upper()}" for f in tally.findings
    )
    assert sum(tally.outcomes.values()) == INPUTS // 2


def test_the_campaign_reaches_every_strategy_and_every_refusal_it_is_meant_to(
    harness: fuzz_support.Harness,
) -> None:
    # A harness whose mutations all failed at the first byte would find nothing and
    # still pass the test above.
    tally = fuzz_support.run(harness, random.Random("test:reach"), INPUTS // 2)
    reached = {label.split("/", 1)[1] for label in tally.strategies}
    every = {name for strategies in harness.strategies.values() for name in strategies}
    assert reached == every
    for label in (
        "ok",
        "ok+ok",  # a gbcs envelope whose frame decoded and verified
        "gbcs:bad-payload",  # an INTEGER beyond its field
        "gbcs:truncated",
        "wire:tag-refused",
        "wire:too-large",
        "wire:bad-cbor",
        "wire:duplicate-key",
        "wire:too-deep",
    ):
        assert tally.outcomes[label] > 0, (label, tally.outcomes)


def test_the_harness_refuses_to_run_without_vectors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fuzz_support.Harness(tmp_path)
