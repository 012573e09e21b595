#!/usr/bin/env python3
"""Turns one bench/run results directory into tables, CSVs and a chart.

    python3 bench/report.py bench/results/TIMESTAMP [--check] [--no-chart]

Reads RESULTS/cells/*/cell.json (one per round, scenario and system, written by
bench/run) and writes into RESULTS:

- raw.csv      one row per cell, every figure derived from it;
- summary.csv  one row per scenario and system: median, min and max over the
               rounds, overheads over direct, ratios to nginx and to
               hyper-floor (the bare proxy on the router's stack);
- table.md     the markdown tables of docs/benchmarks.md;
- chart.svg    the chart (needs matplotlib; bench/run installs it in a venv).

--check (bench/run --smoke) asserts that every scenario produced numbers and that
no cell saw an error or a wrong event count; it says nothing about timings.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

SCENARIOS = {
    "c1": "c=1, upstream 0 ms",
    "c64": "c=64, upstream 0 ms",
    "c512": "c=512, upstream 50 ms",
    "s1": "streams c=1 (20 chunks / 10 ms)",
    "s64": "streams c=64 (20 chunks / 10 ms)",
    "s5000": "open streams (slow upstream)",
    "soak": "soak",
}
SYSTEMS = ["direct", "nginx", "hyper-floor", "router", "router-auth", "router-limit",
           "router-redis", "router-redis-unlimited"]
# Opt-in systems measured on these scenarios only (a limited service on memory and on
# Redis; an unlimited service with REDIS_URL set).
LIMITED = ("router-limit", "router-redis", "router-redis-unlimited")
LIMITED_SCENARIOS = ("c1", "c64")
WRK = ("c1", "c64", "c512")
STREAMS = ("s1", "s64")


# --------------------------------------------------------------------- cells


def load_cells(results: Path) -> list[dict]:
    cells = []
    for path in sorted(results.glob("cells/*/cell.json")):
        if ".noisy" in path.parent.name:  # measured again by bench/run
            continue
        try:
            cell = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            cell = {"_broken": f"{path}: {e}"}
        cell["_dir"] = path.parent.name
        cells.append(cell)
    return cells


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def derive(cell: dict) -> dict:
    """The flat figures of one cell (None where they do not apply)."""
    load = cell.get("load") or {}
    stream = cell.get("stream_load") or {}
    kind = cell.get("kind")
    row = {
        "round": cell.get("round"),
        "scenario": cell.get("scenario"),
        "system": cell.get("system"),
        "kind": kind,
        "concurrency": cell.get("concurrency"),
        "wall_s": num(cell.get("wall_s")),
    }
    tck = cell.get("clk_tck") or 100
    ticks = num(cell.get("sut_cpu_ticks"))
    ns = num(cell.get("sut_cpu_ns"))
    # utime + stime from /proc/PID/stat (10 ms ticks). On loopback this includes the
    # softirq work of delivering the SUT's packets, which runs in its context.
    # schedstat (ns, live threads) leaves that out: kept as cpu_task_us_per_req.
    # With REDIS_URL, the redis-server shares the router's CPU and its time is
    # charged to the system under test: router + Redis.
    state_ticks = num(cell.get("state_cpu_ticks"))
    state_ns = num(cell.get("state_cpu_ns"))
    if ticks is not None and state_ticks is not None:
        ticks += state_ticks
    if ns is not None and state_ns is not None:
        ns += state_ns
    cpu_s = ticks / tck if ticks is not None else None
    task_s = ns / 1e9 if ns is not None else None
    state_s = state_ticks / tck if state_ticks is not None else None
    if kind in ("wrk", "soak"):
        units = num(load.get("requests"))
        dur = num(load.get("duration_s"))
        row.update(
            requests=units,
            rps=num(load.get("rps")),
            p50_ms=num(load.get("lat_p50_ms")),
            p99_ms=num(load.get("lat_p99_ms")),
            max_ms=num(load.get("lat_max_ms")),
            errors=num(load.get("errors")),
            non_2xx=num(load.get("err_status")),
        )
    else:
        units = num(load.get("streams"))
        dur = num(load.get("elapsed_s"))
        fe = load.get("first_event_ms") or {}
        gap = load.get("gap_ms") or {}
        row.update(
            requests=units,
            rps=num(load.get("streams_per_s")),
            errors=num(load.get("errors")),
            mismatches=num(load.get("event_count_mismatches")),
            first_p50_ms=num(fe.get("p50")),
            first_p99_ms=num(fe.get("p99")),
            first_max_ms=num(fe.get("max")),
            gap_p50_ms=num(gap.get("p50")),
            gap_p99_ms=num(gap.get("p99")),
            gap_max_ms=num(gap.get("max")),
            gaps=num(load.get("gaps")),
            gaps_ge_35ms=num(load.get("gaps_ge_35ms")),
            stalls=num(load.get("stalls")),
        )
    if kind == "soak" and stream:
        fe = stream.get("first_event_ms") or {}
        gap = stream.get("gap_ms") or {}
        row.update(
            soak_streams=num(stream.get("streams")),
            soak_stream_errors=num(stream.get("errors")),
            mismatches=num(stream.get("event_count_mismatches")),
            first_p99_ms=num(fe.get("p99")),
            gap_p99_ms=num(gap.get("p99")),
            gap_max_ms=num(gap.get("max")),
            gaps_ge_35ms=num(stream.get("gaps_ge_35ms")),
        )
        control = cell.get("control_stream_load") or {}
        row.update(
            control_gaps=num(control.get("gaps")),
            control_gaps_ge_35ms=num(control.get("gaps_ge_35ms")),
            control_gap_max_ms=num((control.get("gap_ms") or {}).get("max")),
        )
    row["sut_cpu_s"] = cpu_s
    row["cpu_us_per_req"] = (
        cpu_s * 1e6 / units if cpu_s is not None and units else None
    )
    row["cpu_task_us_per_req"] = (
        task_s * 1e6 / units if task_s is not None and units else None
    )
    row["sut_cpu_pct"] = 100 * cpu_s / dur if cpu_s is not None and dur else None
    row["state_cpu_us_per_req"] = (
        state_s * 1e6 / units if state_s is not None and units else None
    )
    kib = 1 / 1024
    for key, src in (
        ("rss_idle_mib", "rss_idle_kb"),
        ("rss_peak_mib", "rss_hwm_kb"),
        ("rss_end_mib", "rss_end_kb"),
        ("rss_max_sampled_mib", "rss_max_sampled_kb"),
    ):
        v = num(cell.get(src))
        row[key] = v * kib if v is not None else None
    busy, irq, total = (num(cell.get(k)) for k in ("cpu1_proc_ticks", "cpu1_irq_ticks", "cpu1_total_ticks"))
    if busy is not None and total:
        # Time on CPU 1 (processes and interrupts) that was not the system under test's.
        row["foreign_cpu1_pct"] = max(0.0, 100 * (busy + (irq or 0) - (ticks or 0)) / total)
        row["irq_cpu1_pct"] = 100 * (irq or 0) / total
    row["loadavg1"] = num(cell.get("loadavg1"))
    return row


# ------------------------------------------------------------------ summary


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def spread(vals):
    vals = [v for v in vals if v is not None]
    return (min(vals), max(vals)) if vals else (None, None)


METRICS = [
    "rps",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "errors",
    "mismatches",
    "first_p50_ms",
    "first_p99_ms",
    "gap_p50_ms",
    "gap_p99_ms",
    "gap_max_ms",
    "gaps_ge_35ms",
    "stalls",
    "cpu_us_per_req",
    "cpu_task_us_per_req",
    "state_cpu_us_per_req",
    "sut_cpu_pct",
    "rss_idle_mib",
    "rss_peak_mib",
    "rss_end_mib",
    "rss_max_sampled_mib",
    "requests",
    "foreign_cpu1_pct",
    "irq_cpu1_pct",
    "control_gaps_ge_35ms",
    "control_gap_max_ms",
]
SUMMED = {"errors", "mismatches", "gaps_ge_35ms", "stalls", "control_gaps_ge_35ms"}


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["system"]), []).append(r)
    out = []
    for (scenario, system), rs in groups.items():
        s = {"scenario": scenario, "system": system, "rounds": len(rs)}
        for m in METRICS:
            vals = [r.get(m) for r in rs]
            if m in SUMMED:
                present = [v for v in vals if v is not None]
                s[m] = sum(present) if present else None
                continue
            s[m] = med(vals)
            s[m + "_min"], s[m + "_max"] = spread(vals)
        # Overhead over direct, paired by round (same round, same machine state).
        direct = {r["round"]: r for r in rows if r["scenario"] == scenario and r["system"] == "direct"}
        for m in ("p50_ms", "p99_ms", "first_p50_ms", "first_p99_ms"):
            diffs = [
                (r[m] - direct[r["round"]][m]) * 1000
                for r in rs
                if r.get(m) is not None and r["round"] in direct and direct[r["round"]].get(m) is not None
            ]
            s[m.replace("_ms", "_overhead_us")] = med(diffs)
            lo, hi = spread(diffs)
            s[m.replace("_ms", "_overhead_us") + "_min"] = lo
            s[m.replace("_ms", "_overhead_us") + "_max"] = hi
        out.append(s)
    by = {(s["scenario"], s["system"]): s for s in out}
    ratios = (
        ("_x_nginx", "nginx", ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "rss_idle_mib",
                               "rss_peak_mib", "first_p99_ms", "gap_max_ms", "p50_overhead_us")),
        ("_x_floor", "hyper-floor", ("rps", "p99_ms", "cpu_us_per_req")),
    )
    for s in out:
        for suffix, reference, metrics in ratios:
            ref = by.get((s["scenario"], reference)) or {}
            for m in metrics:
                a, b = s.get(m), ref.get(m)
                s[m + suffix] = a / b if a is not None and b not in (None, 0) else None
    order = {k: i for i, k in enumerate(SCENARIOS)}
    sys_order = {k: i for i, k in enumerate(SYSTEMS)}
    out.sort(key=lambda s: (order.get(s["scenario"], 99), sys_order.get(s["system"], 99)))
    return out


# -------------------------------------------------------------------- tables


def f(v, digits=2, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if abs(v) >= 1000 and digits <= 2:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}f}{unit}"


def fr(s, m, digits=2):
    """median [min–max]"""
    v, lo, hi = s.get(m), s.get(m + "_min"), s.get(m + "_max")
    if v is None:
        return "–"
    if lo is None or hi is None or s.get("rounds", 1) < 2:
        return f(v, digits)
    return f"{f(v, digits)} [{f(lo, digits)}–{f(hi, digits)}]"


def x(v):
    return "–" if v is None else f"{v:.2f}×"


def redis_rtt_us(results_dir: Path | None):
    """p50 of one Redis round trip from CPU 1 (redis-benchmark -c 1 PING), in µs."""
    if results_dir is None or not (results_dir / "redis-rtt.csv").exists():
        return None
    with open(results_dir / "redis-rtt.csv", newline="") as fh:
        for rec in csv.DictReader(fh):
            try:
                return float(rec["p50_latency_ms"]) * 1000
            except (KeyError, ValueError):
                return None
    return None


def shared_state_lines(by: dict, results_dir: Path | None) -> list[str]:
    """Issue 8's figures: a limited service on Redis against the memory backend, and an
    unlimited service with REDIS_URL set against the plain router, same run."""
    def med(sc, sy, key):
        return (by.get((sc, sy)) or {}).get(key)

    out = []
    rtt = redis_rtt_us(results_dir)
    pairs = [
        ("c64", "router-redis", "router-limit", "req/s, limited service: Redis ÷ memory", "rps"),
        ("c1", "router-redis", "router-limit", "req/s, limited service: Redis ÷ memory", "rps"),
        ("c64", "router-redis-unlimited", "router", "req/s, unlimited service: REDIS_URL set ÷ unset", "rps"),
        ("c1", "router-redis-unlimited", "router", "req/s, unlimited service: REDIS_URL set ÷ unset", "rps"),
    ]
    rows = []
    for sc, a, b, what, key in pairs:
        va, vb = med(sc, a, key), med(sc, b, key)
        if va is not None and vb:
            rows.append(f"| {SCENARIOS[sc]} | {what} | {f(va, 0)} ÷ {f(vb, 0)} | {va / vb:.2f}× |")
    for sc in ("c64", "c1"):
        ca, cb = med(sc, "router-redis", "cpu_us_per_req"), med(sc, "router-limit", "cpu_us_per_req")
        cr = med(sc, "router-redis", "state_cpu_us_per_req")
        if ca is not None and cb and cr is not None:
            rows.append(f"| {SCENARIOS[sc]} | CPU per request, limited service: router + Redis ÷ memory "
                        f"| {f(ca, 1)} (Redis {f(cr, 1)}) ÷ {f(cb, 1)} µs | {ca / cb:.2f}× |")
    for a, b, what in [("router-redis", "router-limit", "p50 added by Redis, limited service"),
                       ("router-redis-unlimited", "router", "p50 added by REDIS_URL, unlimited service")]:
        pa, pb = med("c1", a, "p50_ms"), med("c1", b, "p50_ms")
        if pa is not None and pb is not None:
            added = (pa - pb) * 1000
            rtts = f"{added / rtt:.1f} round trips" if rtt else "–"
            rows.append(f"| {SCENARIOS['c1']} | {what} | {f(pa * 1000, 0)} − {f(pb * 1000, 0)} µs | {added:+.0f} µs ({rtts}) |")
    if not rows:
        return []
    out.append("### Shared state (Redis on loopback, on CPU 1 with the router; its CPU time counts as the system under test's)")
    out.append("")
    if rtt:
        out.append(
            f"One Redis round trip from CPU 1 (redis-benchmark, one connection, PING back to back): "
            f"p50 {rtt:.0f} µs. Every admission of a limited service waits for one such round trip "
            "(an EVALSHA of the window script, one per batch of admissions made together)."
        )
        out.append("")
    out.append("| scenario | figure | medians | ratio / difference |")
    out.append("|---|---|---|---|")
    out.extend(rows)
    out.append("")
    return out


def markdown(summary: list[dict], rows: list[dict], env: str, results_dir: Path | None = None) -> str:
    by = {(s["scenario"], s["system"]): s for s in summary}
    lines = []
    def rounds_of(scenarios):
        return max((s["rounds"] for s in summary if s["scenario"] in scenarios), default=0)

    wrk_rounds, stream_rounds = rounds_of(WRK), rounds_of(STREAMS + ("s5000",))
    rounds = str(wrk_rounds or stream_rounds)
    if wrk_rounds and stream_rounds and wrk_rounds != stream_rounds:
        rounds += f" (streams: {stream_rounds})"
    lines.append(
        f"Medians over {rounds} interleaved round(s), [min–max] across rounds. "
        "Overheads are paired by round against the direct connection; "
        "ratios (×nginx, ×floor) divide by nginx's or hyper-floor's median in the same run. "
        "CPU is the system under test's utime+stime over the measured run "
        "(nginx: its one worker), RSS its VmRSS (idle, before load) and VmHWM (peak)."
    )
    lines.append("")
    if any(s["scenario"] in WRK for s in summary):
        lines.append("### Request / response (wrk, ~1.1 KB chat request, ~600 B answer)")
        lines.append("")
        lines.append(
            "| scenario | system | req/s | p50 ms | p99 ms | p50 overhead µs | CPU µs/req | SUT CPU % "
            "| errors | idle / peak RSS MiB | req/s ×nginx | p99 ×nginx | CPU/req ×nginx "
            "| req/s ×floor | CPU/req ×floor |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sc in WRK:
            for sy in SYSTEMS:
                s = by.get((sc, sy))
                if not s:
                    continue
                ov = "0 (floor)" if sy == "direct" else fr(s, "p50_overhead_us", 0)
                rss = "–" if s.get("rss_idle_mib") is None else f"{f(s['rss_idle_mib'], 1)} / {f(s['rss_peak_mib'], 1)}"
                lines.append(
                    f"| {SCENARIOS[sc]} | {sy} | {fr(s, 'rps', 0)} | {fr(s, 'p50_ms', 3)} | {fr(s, 'p99_ms', 3)} "
                    f"| {ov} | {fr(s, 'cpu_us_per_req', 1)} | {f(s.get('sut_cpu_pct'), 0)} | {f(s.get('errors'), 0)} "
                    f"| {rss} | {x(s.get('rps_x_nginx'))} | {x(s.get('p99_ms_x_nginx'))} "
                    f"| {x(s.get('cpu_us_per_req_x_nginx'))} | {x(s.get('rps_x_floor'))} "
                    f"| {x(s.get('cpu_us_per_req_x_floor'))} |"
                )
        lines.append("")
    if any(s["scenario"] in STREAMS for s in summary):
        lines.append("### Streaming (bench_stream_client, 20 chunks 10 ms apart, then [DONE])")
        lines.append("")
        lines.append(
            "| scenario | system | streams/s | first event p50 ms | first event p99 ms | gap p50 ms | gap p99 ms "
            "| max gap ms | gaps ≥ 35 ms | count mismatches | errors | CPU µs/stream | idle / peak RSS MiB "
            "| first p99 ×nginx | CPU/stream ×nginx |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for sc in STREAMS:
            for sy in SYSTEMS:
                s = by.get((sc, sy))
                if not s:
                    continue
                rss = "–" if s.get("rss_idle_mib") is None else f"{f(s['rss_idle_mib'], 1)} / {f(s['rss_peak_mib'], 1)}"
                lines.append(
                    f"| {SCENARIOS[sc]} | {sy} | {fr(s, 'rps', 1)} | {fr(s, 'first_p50_ms', 2)} | {fr(s, 'first_p99_ms', 2)} "
                    f"| {fr(s, 'gap_p50_ms', 2)} | {fr(s, 'gap_p99_ms', 2)} | {fr(s, 'gap_max_ms', 1)} "
                    f"| {f(s.get('gaps_ge_35ms'), 0)} | {f(s.get('mismatches'), 0)} | {f(s.get('errors'), 0)} "
                    f"| {fr(s, 'cpu_us_per_req', 0)} | {rss} "
                    f"| {x(s.get('first_p99_ms_x_nginx'))} | {x(s.get('cpu_us_per_req_x_nginx'))} |"
                )
        lines.append("")
    s5 = [s for s in summary if s["scenario"] == "s5000"]
    if s5:
        conc = next((r["concurrency"] for r in rows if r["scenario"] == "s5000"), "?")
        chunks = next((r for r in rows if r["scenario"] == "s5000"), {})
        lines.append(f"### {conc} concurrent open streams (slow upstream: one chunk a second)")
        lines.append("")
        lines.append(
            "| system | idle RSS MiB | peak RSS MiB (VmHWM) | RSS after close MiB | KiB per open stream "
            "| first event p99 ms | max gap ms | count mismatches | errors | CPU ms total | peak RSS ×nginx "
            "| KiB/stream ×nginx |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        per_stream = {}
        for s in s5:
            if s.get("rss_peak_mib") is not None and s.get("rss_idle_mib") is not None and isinstance(conc, int):
                per_stream[s["system"]] = (s["rss_peak_mib"] - s["rss_idle_mib"]) * 1024 / conc
        for sy in SYSTEMS:
            s = by.get(("s5000", sy))
            if not s:
                continue
            ps = per_stream.get(sy)
            ng = per_stream.get("nginx")
            cpu_ms = None
            if s.get("cpu_us_per_req") is not None and s.get("requests"):
                cpu_ms = s["cpu_us_per_req"] * s["requests"] / 1000
            lines.append(
                f"| {sy} | {fr(s, 'rss_idle_mib', 1)} | {fr(s, 'rss_peak_mib', 1)} | {fr(s, 'rss_end_mib', 1)} | {f(ps, 1)} "
                f"| {fr(s, 'first_p99_ms', 1)} | {fr(s, 'gap_max_ms', 0)} | {f(s.get('mismatches'), 0)} "
                f"| {f(s.get('errors'), 0)} | {f(cpu_ms, 0)} | {x(s.get('rss_peak_mib_x_nginx'))} "
                f"| {x(ps / ng if ps is not None and ng else None)} |"
            )
        lines.append("")
    soak = [r for r in rows if r["scenario"] == "soak"]
    if soak:
        r = soak[0]
        lines.append("### Soak (router only: wrk c=64 and 32 streams at once, upstream 0 ms)")
        lines.append("")
        lines.append(
            "| length s | requests | req/s | p99 ms | errors | streams | stream errors | count mismatches "
            "| gaps ≥ 35 ms (largest ms) | control, straight to the mock: gaps ≥ 35 ms (largest ms) "
            "| CPU µs/req | RSS start / end / max MiB |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        start = soak_rss_start(r)
        lines.append(
            f"| {f(r.get('wall_s'), 0)} | {f(r.get('requests'), 0)} | {f(r.get('rps'), 0)} | {f(r.get('p99_ms'), 2)} "
            f"| {f(r.get('errors'), 0)} | {f(r.get('soak_streams'), 0)} | {f(r.get('soak_stream_errors'), 0)} "
            f"| {f(r.get('mismatches'), 0)} | {f(r.get('gaps_ge_35ms'), 0)} ({f(r.get('gap_max_ms'), 1)}) "
            f"| {f(r.get('control_gaps_ge_35ms'), 0)} ({f(r.get('control_gap_max_ms'), 1)}) "
            f"| {f(r.get('cpu_us_per_req'), 1)} "
            f"| {f(start, 1)} / {f(r.get('rss_end_mib'), 1)} / {f(r.get('rss_max_sampled_mib'), 1)} |"
        )
        lines.append("")
        lines.append(
            "CPU µs/req in the soak divides the router's CPU by the wrk requests only; "
            "the streams' work is in it too. The control streams run at the same time "
            "from the same core, straight to the mock: a gap they see too is the machine's."
        )
        lines.append("")
    lines.extend(shared_state_lines(by, results_dir))
    noisy = [r for r in rows if (r.get("foreign_cpu1_pct") or 0) > 10]
    fc = [r.get("foreign_cpu1_pct") for r in rows if r.get("foreign_cpu1_pct") is not None]
    lines.append("### Machine noise")
    lines.append("")
    lines.append(
        f"Time on CPU 1 not used by the system under test (other processes and their interrupts; "
        f"bench/run measures a cell again when it exceeds --max-noise): median "
        f"{f(med(fc), 1)} %, max {f(max(fc) if fc else None, 1)} % of a cell's wall time; "
        f"{len(noisy)} of {len(rows)} cells above 10 %"
        + (": " + ", ".join(f"r{r['round']} {r['scenario']} {r['system']}" for r in noisy[:12]) if noisy else "")
        + "."
    )
    remeasured = sorted(p.name for p in (results_dir / "cells").glob("*.noisy-*")) if results_dir else []
    if remeasured:
        lines.append(
            f"{len(remeasured)} cell(s) were measured again because other work took CPU 1 during them: "
            + ", ".join(n.split(".noisy")[0] for n in remeasured)
            + "."
        )
        lines.append("")
    return "\n".join(lines)


def soak_rss_start(row: dict):
    """RSS after the soak's first 10 % (the warmed-up footprint), from rss.csv."""
    return row.get("_soak_rss_start")


def read_rss_series(results: Path, cell_dir: str):
    p = results / "cells" / cell_dir / "rss.csv"
    pts = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                t, kb = line.split(",")
                pts.append((float(t), int(kb) / 1024))
            except ValueError:
                continue
    return pts


# --------------------------------------------------------------------- chart

COLORS = {"direct": "#9e9e9e", "nginx": "#2e7d32", "hyper-floor": "#795548", "router": "#1565c0",
          "router-auth": "#6a1b9a",
          "router-limit": "#ef6c00", "router-redis": "#c62828", "router-redis-unlimited": "#00838f"}


def chart(summary: list[dict], rows: list[dict], series: dict, path: Path) -> None:
    """Eight panels; `series` maps a label to [(seconds, MiB)] for the RSS panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: a smaller, diffable SVG
    plt.rcParams["svg.hashsalt"] = "llm-router-bench"  # stable ids across renders

    by = {(s["scenario"], s["system"]): s for s in summary}
    fig, axes = plt.subplots(2, 4, figsize=(21, 9.5))
    fig.suptitle(
        "llm-router vs nginx, a bare hyper proxy and a direct connection, same mock upstream and load "
        "(bars: medians; whiskers: min–max over rounds)",
        fontsize=13,
    )

    def bars(ax, scenarios, metric, title, ylabel, systems=SYSTEMS, log=False, labels=True):
        present = [
            sy for sy in systems
            if any((sc, sy) in by and by[(sc, sy)].get(metric) is not None for sc in scenarios)
        ]
        width = 0.8 / max(1, len(present))
        for i, sy in enumerate(present):
            xs, ys, lo, hi = [], [], [], []
            for j, sc in enumerate(scenarios):
                s = by.get((sc, sy))
                if not s or s.get(metric) is None:
                    continue
                v = s[metric]
                vmin = s.get(metric + "_min")
                vmax = s.get(metric + "_max")
                xs.append(j + (i - (len(present) - 1) / 2) * width)
                ys.append(v)
                lo.append(v - vmin if vmin is not None else 0)
                hi.append(vmax - v if vmax is not None else 0)
            cont = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=sy, color=COLORS.get(sy))
            if labels:
                ax.bar_label(cont, fmt=lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}", fontsize=6, padding=1)
        ax.set_xticks(range(len(scenarios)))
        ax.set_xticklabels([SCENARIOS[sc].replace(", ", "\n").replace(" (", "\n(") for sc in scenarios], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)

    bars(axes[0][0], WRK, "rps", "Throughput", "requests/s", log=True)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    bars(axes[0][1], WRK, "p99_ms", "p99 latency", "ms", log=True)
    bars(axes[0][2], WRK, "cpu_us_per_req", "CPU time of the system under test per request", "µs / request",
         systems=["nginx", "hyper-floor", "router", "router-auth"])
    bars(axes[0][3], ("c1", "c64"), "p50_overhead_us", "p50 latency added over the direct connection",
         "µs", systems=["nginx", "hyper-floor", "router", "router-auth"])
    bars(axes[1][0], STREAMS, "first_p99_ms", "Streaming: time to first event, p99", "ms",
         systems=["direct", "nginx", "router"])
    bars(axes[1][1], STREAMS, "gap_max_ms", "Streaming: largest gap between chunks", "ms (chunks sent every 10 ms)",
         systems=["direct", "nginx", "router"])

    def lines(ax, keys, title):
        plotted = False
        for key in keys:
            pts = series.get(key)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key,
                    color=COLORS.get(key.split(" ")[0]), linewidth=1.2)
            plotted = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("VmRSS MiB")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=8)

    conc = next((r["concurrency"] for r in rows if r["scenario"] == "s5000"), "")
    lines(axes[1][2], [k for k in series if k.endswith("open streams")],
          f"RSS while {conc} streams open (ramp, hold, close)")
    lines(axes[1][3], [k for k in series if k.endswith("soak")], "RSS during the soak")
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)


# --------------------------------------------------------------------- check


def check(cells: list[dict], rows: list[dict], env: str) -> list[str]:
    problems = []
    for c in cells:
        if "_broken" in c:
            problems.append(c["_broken"])
    wanted, systems = [], []
    for line in env.splitlines():
        if line.startswith("scenarios:") and not wanted:
            wanted = [s.strip() for s in line.split(":", 1)[1].split(",") if s.strip()]
        if line.startswith("systems:") and not systems:
            systems = [s.strip() for s in line.split(":", 1)[1].split(",") if s.strip()]
    seen = {(r["scenario"], r["system"]) for r in rows}
    for sc in wanted:
        # The same rules as bench/run: streams without router-auth, the soak on the router only.
        for sy in systems:
            if sc in ("s1", "s64", "s5000") and sy == "router-auth":
                continue
            if sc == "soak" and sy != "router":
                continue
            if sy in LIMITED and sc not in LIMITED_SCENARIOS:
                continue
            if sy == "hyper-floor" and sc not in WRK:
                continue
            if (sc, sy) not in seen:
                problems.append(f"scenario {sc} on {sy}: no measurement")
    for r in rows:
        name = f"r{r['round']} {r['scenario']} {r['system']}"
        if not r.get("requests"):
            problems.append(f"{name}: no requests / streams completed")
        if r.get("rps") is None:
            problems.append(f"{name}: no throughput figure")
        if r["kind"] in ("wrk", "soak") and (r.get("p50_ms") is None or r.get("p99_ms") is None):
            problems.append(f"{name}: no latency figures")
        if r["kind"] == "stream" and (r.get("first_p50_ms") is None or r.get("gap_max_ms") is None):
            problems.append(f"{name}: no first-event or gap figures")
        if r["kind"] == "soak" and not r.get("soak_streams"):
            problems.append(f"{name}: the soak's streams produced nothing")
        if r["kind"] == "soak" and not r.get("control_gaps"):
            problems.append(f"{name}: the soak's control streams produced nothing")
        for m in ("errors", "mismatches", "soak_stream_errors"):
            if r.get(m):
                problems.append(f"{name}: {m} = {r[m]}")
        if r["kind"] in ("wrk", "soak") and r.get("errors") is None:
            problems.append(f"{name}: no error count")
        if r["system"] != "direct":
            for m in ("sut_cpu_s", "rss_idle_mib", "rss_peak_mib"):
                if r.get(m) is None:
                    problems.append(f"{name}: no {m}")
    return problems


# ---------------------------------------------------------------------- main


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if not k.startswith("_") and k not in keys:
                keys.append(k)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else (round(r[k], 4) if isinstance(r[k], float) else r[k])) for k in keys})


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(args[0])
    env = (results / "env.txt").read_text() if (results / "env.txt").exists() else ""
    cells = load_cells(results)
    good = [c for c in cells if "_broken" not in c]
    rows = [derive(c) for c in good]
    for c, r in zip(good, rows):
        r["_dir"] = c["_dir"]
    series = {}
    for r in rows:
        if r["scenario"] == "soak":
            pts = read_rss_series(results, r["_dir"])
            if pts:
                cut = pts[-1][0] * 0.1
                r["_soak_rss_start"] = next((mib for t, mib in pts if t >= cut), pts[0][1])
                series["router soak"] = pts
        if r["scenario"] == "s5000" and r["round"] == 1 and r["system"] != "direct":
            series[f"{r['system']} open streams"] = read_rss_series(results, r["_dir"])
    summary = summarise(rows)
    write_csv(results / "raw.csv", rows)
    write_csv(results / "summary.csv", summary)
    md = markdown(summary, rows, env, results)
    (results / "table.md").write_text(md)
    print(md)
    if "--no-chart" not in argv:
        try:
            chart(summary, rows, series, results / "chart.svg")
            print(f"chart: {results / 'chart.svg'}", file=sys.stderr)
        except ImportError as e:
            print(f"report.py: no chart ({e}); install bench/requirements.txt", file=sys.stderr)
    if "--check" in argv:
        problems = check(cells, rows, env)
        if problems:
            print("SMOKE CHECK FAILED:", file=sys.stderr)
            for p in problems:
                print(f"  - {p}", file=sys.stderr)
            return 1
        print(f"smoke check passed: {len(rows)} cells, every scenario produced numbers, no errors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
