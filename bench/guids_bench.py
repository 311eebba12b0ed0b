"""GUID list benchmark: import a 1.4 million-row .xlsx, compiled size, load and lookup time.

Run: ``.venv/bin/python bench/guids_bench.py [ROWS]``. The first run writes the sheet with
openpyxl (write-only mode, about two minutes) and keeps it in bench/out/ (gitignored) for
the next runs.

Targets: import (read + parse + sort + write) <= 10 s, <= 8.5 bytes per GUID, load (open
+ first lookup) <= 100 ms. Import time is given as wall time and as this process's CPU
time: on a shared machine the wall time includes waiting for the CPU, the CPU time does
not. Load time is measured in a fresh interpreter, once after asking the kernel to drop
the compiled file from the page cache (posix_fadvise DONTNEED: "cold") and once with it
cached ("warm").
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from openpyxl import Workbook
from python_calamine import CalamineWorkbook

from gateway.guids import GuidList
from gateway.guids_import import import_guid_list

OUT = Path(__file__).resolve().parent / "out"
ROWS = 1_400_000
_SEED = 20250611

_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from gateway.guids import GuidList
t1 = time.perf_counter()
guids = GuidList.open(sys.argv[1])
found = int(sys.argv[2]) in guids
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "found": found}))
"""


def make_big_xlsx(path: Path, n: int = ROWS) -> Path:
    """Write an ``n``-row GUID sheet (MPxN | GUID | Model) to ``path`` with openpyxl.

    The GUIDs are distinct, random (fixed seed) and in random order, in the canonical
    notation 00-DB-xx-xx-xx-xx-xx-xx. openpyxl's write-only mode stores text as inline
    strings (Excel itself would use a shared-string table).
    """
    rng = random.Random(_SEED)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("GUIDs")
    sheet.append(["MPxN", "GUID", "Model"])
    models = ("E470", "E570", "E360")
    base = 0x00DB_0000_0000_0000
    for i, low in enumerate(rng.sample(range(1 << 40), n)):
        guid = (base | low).to_bytes(8, "big").hex("-").upper()
        sheet.append([1_900_000_000_000 + i, guid, models[i % 3]])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    workbook.save(partial)
    partial.replace(path)  # an interrupted build is never mistaken for a cached sheet
    return path


def big_xlsx(n: int = ROWS) -> Path:
    """The cached ``n``-row sheet under bench/out/, written on first use."""
    path = OUT / f"guids-{n}.xlsx"
    if not path.exists():
        print(f"writing {path} ({n:,} rows; once) ...", file=sys.stderr, flush=True)
        make_big_xlsx(path, n)
    return path


def _drop_from_page_cache(path: Path) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def _child_load(path: Path, probe: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(probe)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def bench_guids(n: int = ROWS) -> dict[str, float]:
    """Import the ``n``-row sheet and time loading and lookups; return the figures."""
    source = big_xlsx(n)
    output = OUT / f"guid-list-{n}.bin"
    figures: dict[str, float] = {"rows": float(n), "source_mb": source.stat().st_size / 1e6}
    with zipfile.ZipFile(source) as archive:
        xml = sum(i.file_size for i in archive.infolist() if i.filename.startswith("xl/work"))
    figures["sheet_xml_mb"] = xml / 1e6

    # calamine alone: parse the sheet and walk its rows (the floor under the import).
    wall, cpu = time.perf_counter(), time.process_time()
    with CalamineWorkbook.from_path(str(source)) as workbook:
        sheet = workbook.get_sheet_by_index(0)
        parsed = time.perf_counter()
        for _ in sheet.iter_rows():
            pass
    figures["calamine_parse_s"] = parsed - wall
    figures["calamine_parse_and_rows_s"] = time.perf_counter() - wall
    figures["calamine_cpu_s"] = time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    report = import_guid_list(source, output, imported_at_ms=0)
    figures["import_s"] = time.perf_counter() - wall
    figures["import_cpu_s"] = time.process_time() - cpu
    figures["guids"] = float(report.unique_count)
    figures["bytes_per_guid"] = output.stat().st_size / report.unique_count

    with GuidList.open(output) as guids:
        probes = [guids[i] for i in range(0, len(guids), max(1, len(guids) // 100_000))]
        misses = [p ^ 1 for p in probes]
        start = time.perf_counter()
        hits = sum(p in guids for p in probes)
        hits += sum(p in guids for p in misses)
        figures["lookup_us"] = (time.perf_counter() - start) / (2 * len(probes)) * 1e6
        assert hits >= len(probes)
        probe = guids[len(guids) // 2]

    loads = []
    for _ in range(5):
        start = time.perf_counter()
        with GuidList.open(output) as guids:
            assert probe in guids
        loads.append((time.perf_counter() - start) * 1e3)
    figures["load_in_process_ms"] = statistics.median(loads)

    if _drop_from_page_cache(output):
        cold = _child_load(output, probe)
        figures["load_cold_ms"] = cold["load_ms"]
        figures["child_module_import_ms"] = cold["import_ms"]
    warm = _child_load(output, probe)
    figures["load_warm_ms"] = warm["load_ms"]
    figures["load_avg_1min"] = os.getloadavg()[0]
    figures["cpus"] = float(os.cpu_count() or 0)
    return figures


def main() -> int:
    """Run :func:`bench_guids` (rows from argv[1], default 1.4 million) and print it."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS
    figures = bench_guids(n)
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:,.3f}")
    print(
        f"targets: import_s <= 10 ({figures['import_s']:.1f}, "
        f"CPU {figures['import_cpu_s']:.1f}), bytes_per_guid <= 8.5 "
        f"({figures['bytes_per_guid']:.5f}), load <= 100 ms "
        f"(cold {figures.get('load_cold_ms', float('nan')):.2f}, "
        f"warm {figures['load_warm_ms']:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
