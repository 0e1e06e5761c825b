"""The results of one `make bench` run as Markdown tables (absolute numbers and ratios) and PNG plots."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chain import ChainResult
from bench.hop import HopResult

TARGETS = {
    "hop_vs_raw": 1.0,
    "hop_vs_faststream": 3.0,
    "e2e_vs_raw": 1.0,
    "p99_300_ms": 30.0,
    "rss_mb": 80.0,
}


@dataclass
class BenchRun:
    date: str
    machine: dict[str, str]
    sizes: dict[str, Any]
    hop: list[HopResult] = field(default_factory=list)
    chains: list[ChainResult] = field(default_factory=list)

    def hop_rate(self, name: str) -> float:
        return next((h.median_rate for h in self.hop if h.impl == name), float("nan"))

    def chain(self, kind: str, partitions: int) -> ChainResult | None:
        return next((c for c in self.chains if c.kind == kind and c.partitions == partitions), None)


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def targets(run: BenchRun) -> list[tuple[str, str, str, bool]]:
    """(target, wanted, measured, met) rows."""
    rows = []
    # Judged on `choreo` (every "event handled" line written); the sampled variant, which the
    # issue also allows ("INFO for a sampled fraction"), is shown beside it.
    for name, what in (("choreo", "Choreo hop"), ("choreo-sampled", "Choreo hop (1% of lines)")):
        rate = run.hop_rate(name)
        if math.isnan(rate):
            continue
        r = _ratio(rate, run.hop_rate("raw"))
        rows.append((f"{what} / raw nats-py hop", "≥ 1.0×", f"{_fmt(r, 2)}×", r >= TARGETS["hop_vs_raw"]))
        r = _ratio(rate, run.hop_rate("faststream"))
        rows.append(
            (f"{what} / FastStream hop", "≥ 3.0×", f"{_fmt(r, 2)}×", r >= TARGETS["hop_vs_faststream"])
        )
    c1, r1 = run.chain("choreo", 1), run.chain("raw", 1)
    if c1 and r1:
        r = _ratio(c1.saturation_median, r1.saturation_median)
        rows.append(
            ("e2e saturation / raw chain (P=1)", "≥ 1.0×", f"{_fmt(r, 2)}×", r >= TARGETS["e2e_vs_raw"])
        )
        rate = 300 if 300 in c1.latency else (min(c1.latency) if c1.latency else None)
        if rate is not None:
            p99 = c1.latency[rate]["p99"]
            rows.append(
                (
                    f"p99 placed→shipped at {rate}/s",
                    "≤ 30 ms",
                    f"{_fmt(p99, 1)} ms",
                    p99 <= TARGETS["p99_300_ms"],
                )
            )
        if c1.rss_mb:
            worst = max(c1.rss_mb.values())
            rows.append(
                (
                    "max RSS of a service process",
                    "≤ 80 MB",
                    f"{_fmt(worst, 1)} MB",
                    worst <= TARGETS["rss_mb"],
                )
            )
    return rows


def markdown(run: BenchRun) -> str:
    out = [f"# Choreo benchmarks, {run.date}", ""]
    out += ["Machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()), ""]
    out += ["Sizes: " + ", ".join(f"{k}={v}" for k, v in run.sizes.items()), ""]
    out += ["## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    out += [f"| {t} | {w} | {m} | {'yes' if ok else '**no**'} |" for t, w, m, ok in targets(run)]
    raw, fs = run.hop_rate("raw"), run.hop_rate("faststream")
    out += ["", "## One hop (events/s, median of interleaved rounds)", ""]
    out += [
        "| contender | median events/s | rounds | × raw nats-py | × FastStream |",
        "|---|---:|---|---:|---:|",
    ]
    for h in run.hop:
        rounds = ", ".join(f"{x:,.0f}" for x in h.rates)
        out.append(
            f"| {h.label} | {_fmt(h.median_rate)} | {rounds} | {_fmt(_ratio(h.median_rate, raw), 2)} | {_fmt(_ratio(h.median_rate, fs), 2)} |"
        )
    out += ["", "## End to end: saturation (orders/s, burst published straight to NATS)", ""]
    out += ["| partitions | Choreo | raw chain | Choreo / raw |", "|---:|---:|---:|---:|"]
    for p in sorted({c.partitions for c in run.chains}):
        c, r = run.chain("choreo", p), run.chain("raw", p)
        cs = c.saturation_median if c else float("nan")
        rs = r.saturation_median if r else float("nan")
        out.append(f"| {p} | {_fmt(cs)} | {_fmt(rs)} | {_fmt(_ratio(cs, rs), 2)} |")
    out += ["", "## End to end: placed→shipped latency at fixed offered rates (ms, P=1)", ""]
    out += ["| offered orders/s | system | p50 | p95 | p99 |", "|---:|---|---:|---:|---:|"]
    for kind in ("choreo", "raw"):
        c = run.chain(kind, 1)
        for rate, lat in sorted((c.latency if c else {}).items()):
            out.append(
                f"| {rate} | {kind} | {_fmt(lat['p50'], 1)} | {_fmt(lat['p95'], 1)} | {_fmt(lat['p99'], 1)} |"
            )
    out += ["", "## Memory: peak resident set per process under load (MB, P=1)", ""]
    out += ["| system | process | peak RSS MB |", "|---|---|---:|"]
    for kind in ("choreo", "raw"):
        c = run.chain(kind, 1)
        for name, mb in sorted((c.rss_mb if c else {}).items()):
            out.append(f"| {kind} | {name} | {_fmt(mb, 1)} |")
    out += [
        "",
        "Plots: `latency.png` (percentiles against offered rate), `scaling.png` (throughput against partitions).",
        "",
    ]
    return "\n".join(out)


def plots(run: BenchRun, directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, style in (("choreo", "-"), ("raw", "--")):
        c = run.chain(kind, 1)
        if not c or not c.latency:
            continue
        rates = sorted(c.latency)
        for q, marker in (("p50", "o"), ("p95", "s"), ("p99", "^")):
            ax.plot(rates, [c.latency[r][q] for r in rates], style, marker=marker, label=f"{kind} {q}")
    ax.axhline(
        TARGETS["p99_300_ms"], color="grey", linewidth=0.8, linestyle=":", label="30 ms target (p99 @ 300/s)"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered orders/s")
    ax.set_ylabel("placed→shipped latency (ms)")
    ax.set_title("End-to-end latency against offered rate (P=1)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(directory / "latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, marker in (("choreo", "o"), ("raw", "s")):
        points = sorted((c.partitions, c.saturation_median) for c in run.chains if c.kind == kind)
        if points:
            ax.plot([p for p, _ in points], [s for _, s in points], marker=marker, label=kind)
    ax.set_xlabel("partitions")
    ax.set_ylabel("saturation orders/s")
    ax.set_title("End-to-end throughput against partitions (2 cores)")
    ax.set_xticks(sorted({c.partitions for c in run.chains}) or [1])
    ax.legend()
    fig.tight_layout()
    paths.append(directory / "scaling.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def load(path: Path) -> BenchRun:
    """A run back from the `latest.json` that `bench.run` wrote."""
    import orjson

    data = orjson.loads(path.read_bytes())
    run = BenchRun(data["date"], data["machine"], data["sizes"])
    run.hop = [HopResult(h["impl"], h["label"], h["events"], h["rates"]) for h in data["hop"]]
    for c in data["chains"]:
        latency = {int(rate): lat for rate, lat in c["latency"].items()}
        run.chains.append(ChainResult(c["kind"], c["partitions"], c["saturation"], latency, c["rss_mb"]))
    return run


if __name__ == "__main__":  # python -m bench.report [results dir]: the tables and plots again
    import sys

    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results"
    run = load(directory / "latest.json")
    text = markdown(run)
    for name in (f"{run.date}.md", "latest.md"):
        (directory / name).write_text(text)
    plots(run, directory)
    print(text)
