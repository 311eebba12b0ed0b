"""Engine benchmark: decisions per second and memory at 1.4 million tracked windows,
plus the timer wheel and the GUID list figures (issue 3's goals).

Run: ``.venv/bin/python bench/engine.py`` (add ``--skip-guids`` to leave out the
1.4 million-row spreadsheet, which takes a few minutes to generate the first time).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.core.engine import Engine, EngineConfig
from gateway.core.events import Activation
from gateway.wire import DccAlertEnvelope

MIN = 60_000
T0 = 1_800_000_000_000
SUPPLIER = bytes.fromhex("90B3D51F30010000")

GOALS = {
    "decision_us": 3.0,
    "bytes_per_window": 200.0,
    "guid_bytes_per_guid": 8.5,
    "guid_load_ms": 100.0,
    "guid_import_s": 10.0,
}


def _activations(n: int, rng: random.Random) -> list[Activation]:
    out = []
    for i in range(n):
        chf = (0x00DB_0000_0000_0000 | i).to_bytes(8, "big")
        esme = (0x00DB_1000_0000_0000 | i).to_bytes(8, "big")
        future = rng.random() < 0.13  # the DCC measured about 13 % future-dated
        start = T0 + (
            rng.randrange(1, 3 * 24 * 60) * MIN if future else -rng.randrange(0, 25) * MIN
        )
        out.append(
            Activation(
                esme=esme,
                chf=chf,
                originator=SUPPLIER,
                counter=1000 + i,
                start_ms=start,
                end_ms=start + 30 * MIN,
                future_dated=future,
                seen_at=T0 - 30 * MIN,
            )
        )
    return out


def bench_engine(n: int, alerts: int) -> dict[str, float]:
    """Decisions per second and bytes per window with ``n`` tracked windows."""
    rng = random.Random(7)
    acts = _activations(n, rng)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = Engine(EngineConfig(), T0)
    engine.restore(acts, T0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    bytes_per_window = (after - before) / n

    # Half the alerts fall on a CHF with a running window, half on CHFs with none.
    envs = []
    for k in range(alerts):
        if k % 2 == 0:
            chf = acts[rng.randrange(n)].chf
        else:
            chf = (0x00DC_0000_0000_0000 | k).to_bytes(8, "big")
        envs.append(
            DccAlertEnvelope(
                v=1,
                kind="dcc-alert",
                code="AD1",
                alert_id=f"bench-{k}",
                device_id=chf,
                raised_at=T0 + 3 * MIN,
                sent_at=T0 + 3 * MIN,
            )
        )
    now = T0 + 3 * MIN
    gc.disable()
    samples = []
    batch = 1000
    t_all = time.perf_counter_ns()
    for start in range(0, alerts, batch):
        t = time.perf_counter_ns()
        for env in envs[start : start + batch]:
            engine.on_dcc_alert(env, now)
        samples.append((time.perf_counter_ns() - t) / batch)
    total_ns = time.perf_counter_ns() - t_all
    gc.enable()
    suppressed = sum(1 for e in envs if (d := engine.decision_for(e.alert_id)) and d.suppressed)
    return {
        "windows": float(n),
        "active_windows": float(engine.active_windows),
        "pending_windows": float(engine.pending_windows),
        "bytes_per_window": bytes_per_window,
        "decision_us_median": statistics.median(samples) / 1000,
        "decisions_per_s": alerts / (total_ns / 1e9),
        "alerts": float(alerts),
        "suppressed": float(suppressed),
    }


def main() -> None:
    """Print the figures and how they compare with issue 3's goals."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=1_400_000)
    parser.add_argument("--alerts", type=int, default=200_000)
    parser.add_argument("--skip-guids", action="store_true")
    parser.add_argument("--skip-wheel", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    results["engine"] = e = bench_engine(args.windows, args.alerts)
    print(
        f"engine: {int(e['windows']):,} tracked windows ({int(e['active_windows']):,} active, "
        f"{int(e['pending_windows']):,} pending)\n"
        f"  AD1 decision: {e['decision_us_median']:.2f} us median per alert "
        f"({e['decisions_per_s']:,.0f}/s; {int(e['suppressed']):,} of {int(e['alerts']):,} "
        f"suppressed)  goal <= {GOALS['decision_us']} us\n"
        f"  memory: {e['bytes_per_window']:.0f} bytes per tracked window  "
        f"goal <= {GOALS['bytes_per_window']:.0f}"
    )
    if not args.skip_wheel:
        from wheel_bench import bench_wheel  # bench/ is sys.path[0] when run as a script

        results["wheel"] = w = bench_wheel(args.windows)
        print(
            f"timer wheel at {args.windows:,} entries: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in w.items())
        )
    if not args.skip_guids:
        from guids_bench import bench_guids

        results["guids"] = g = bench_guids(args.windows)
        print("GUID list: " + ", ".join(f"{k} {v:,.2f}" for k, v in g.items()))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
