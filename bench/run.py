"""`make bench`: every benchmark in one run, results to bench/results/<date>.md and latest.md.

Sizes come from the environment (defaults in brackets): BENCH_HOP_EVENTS [20000],
BENCH_HOP_ROUNDS [5], BENCH_BURST [4000], BENCH_BURSTS [3], BENCH_RATES [100,300,1000],
BENCH_RATE_SECONDS [8], BENCH_PARTITIONS [1,2,4], BENCH_SCALE_BURST [3000],
CHOREO_LOG_SAMPLE for the e2e services [1.0: every "event handled" line at INFO].
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.chain import run_chain
from bench.hop import run_hop
from bench.report import BenchRun, markdown, plots, targets

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {
        "cpus (nproc)": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
    }


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def sizes_from_env() -> dict[str, Any]:
    return {
        "hop_events": int(os.environ.get("BENCH_HOP_EVENTS", "20000")),
        "hop_rounds": int(os.environ.get("BENCH_HOP_ROUNDS", "5")),
        "burst": int(os.environ.get("BENCH_BURST", "4000")),
        "bursts": int(os.environ.get("BENCH_BURSTS", "3")),
        "rates": _ints("BENCH_RATES", "100,300,1000"),
        "rate_seconds": float(os.environ.get("BENCH_RATE_SECONDS", "8")),
        "partitions": _ints("BENCH_PARTITIONS", "1,2,4"),
        "scale_burst": int(os.environ.get("BENCH_SCALE_BURST", "3000")),
        "log_sample": os.environ.get("CHOREO_LOG_SAMPLE", "1.0"),
    }


async def run_all(sizes: dict[str, Any], *, say: Any = print, timeout: float = 600.0) -> BenchRun:
    run = BenchRun(datetime.now(UTC).strftime("%Y-%m-%d"), machine(), sizes)
    say(f"one hop: {sizes['hop_events']} events, {sizes['hop_rounds']} interleaved rounds")
    run.hop = await run_hop(events=sizes["hop_events"], rounds=sizes["hop_rounds"], timeout=timeout, say=say)
    env = {"CHOREO_LOG_SAMPLE": str(sizes["log_sample"])}
    for partitions in sizes["partitions"]:
        full = partitions == sizes["partitions"][0]
        for kind in ("choreo", "raw"):  # interleaved: each system right after the other
            with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-p{partitions}-") as tmp:
                result = await run_chain(
                    kind, partitions, Path(tmp), env=env,
                    burst=sizes["burst"] if full else sizes["scale_burst"],
                    bursts=sizes["bursts"] if full else max(1, sizes["bursts"] - 1),
                    rates=sizes["rates"] if full else [], rate_seconds=sizes["rate_seconds"],
                    timeout=timeout, say=say,
                )  # fmt: skip
            run.chains.append(result)
    return run


def write(run: BenchRun, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(run)
    written = [directory / f"{run.date}.md", directory / "latest.md"]
    for path in written:
        path.write_text(text)
    data = {"date": run.date, "machine": run.machine, "sizes": run.sizes,
            "hop": [asdict(h) for h in run.hop], "chains": [asdict(c) for c in run.chains]}  # fmt: skip
    (directory / "latest.json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    written.append(directory / "latest.json")
    written += plots(run, directory)
    return written


def main() -> int:
    sizes = sizes_from_env()
    run = asyncio.run(run_all(sizes))
    for path in write(run, RESULTS):
        print(f"wrote {path}")
    print()
    for target, wanted, measured, ok in targets(run):
        print(f"{'MET   ' if ok else 'MISSED'} {target}: {measured} (wanted {wanted})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
