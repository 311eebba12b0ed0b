"""Shared fixtures: where the RTDS vectors and the public test certificates live."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.e2e_support import Broker
from tests.pg_support import Cluster, find_pg_bin

# Tests never assert timings: hypothesis's per-example deadline would make results
# depend on how loaded the machine is (CI shares 2 cores with brokers and daemons).
settings.register_profile("poa", deadline=None)
settings.load_profile("poa")

ROOT = Path(__file__).resolve().parent.parent


def vectors_root() -> Path:
    """../shared/vectors beside the checkout, or $GBCS_VECTORS."""
    override = os.environ.get("GBCS_VECTORS")
    return Path(override) if override else ROOT.parent / "shared" / "vectors"


def vector_files() -> list[Path]:
    """Every RTDS frame file, sorted (an empty list if the folder is missing)."""
    return sorted(vectors_root().glob("rtds-*/*/*.HEX"))


def read_vector(path: Path) -> bytes:
    """The frame bytes of one .HEX file."""
    return bytes.fromhex(path.read_text().strip())


def vector_by_name(name: str) -> bytes:
    """The frame bytes of the vector file called ``name`` (file name only)."""
    matches = [p for p in vector_files() if p.name == name]
    if len(matches) != 1:
        raise LookupError(f"vector {name}: {len(matches)} matches under {vectors_root()}")
    return read_vector(matches[0])


@pytest.fixture(scope="session")
def keystore_dir() -> Path:
    """The folder of public test certificates that sign the RTDS frames."""
    path = vectors_root() / "keystore"
    if not path.is_dir():
        pytest.fail(f"no keystore at {path}: set GBCS_VECTORS to ../shared/vectors")
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A missing vectors folder must fail loudly, never make the vector tests vanish.
    if not vector_files():
        raise pytest.UsageError(
            f"no GBCS vectors under {vectors_root()}: put ../shared beside the checkout "
            "or set GBCS_VECTORS"
        )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, for the end-to-end tests."""
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the session (tests/pg_support.py)."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (./dev test installs Debian's postgresql)")
    cluster = Cluster(bin_dir)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> str:
    """The DSN of an empty database of its own for one test."""
    return pg_cluster.new_database()
