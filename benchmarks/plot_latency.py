#!/usr/bin/env python3
"""Plots the latency samples of benchmark suite 4 (no drag on responses) as SVGs.

    benchmarks/plot_latency.py DIR [-o latency.svg] [--rate-output rate_latency.svg]
                               [--summary summary.txt] [--json no_drag.json]

DIR holds the CSVs that `no_drag --crosstown_latency_csv=DIR` writes, columns
`repetition,latency_us`, one line per request; every repetition is pooled. Two load modes,
one SVG each:
  no_drag_<variant>.csv       closed loop (saturating): latency from the request's actual
                              send -> -o (default DIR/no_drag_latency.svg)
  no_drag_rate_<variant>.csv  open loop at a fixed arrival rate: latency from the request's
                              scheduled send time -> --rate-output (default: the -o name with
                              no_drag_latency replaced by no_drag_rate_latency, or _rate added)
A mode with no CSVs is skipped.

The plot is a percentile plot: x = latency (log scale), y = the fraction of requests at or
below it, on a "nines" scale (0 %, 50 %, 90 %, 99 %, 99.9 %, ... equally spaced towards the
top) so the tail, where the p99 target lives, is not squashed into the last pixel. A dashed
vertical line marks 1.10 x the p99 of 4b, the target for 4a.

--summary writes the figures as text, per mode: percentiles of the pooled samples per variant
and the ratios to 4b; with --json (the `--benchmark_out` file of the same run), also the
requests/s and the per-repetition p50/p99 medians that the benchmark's own summary uses.

Python 3 standard library only.
"""

import argparse
import csv
import glob
import json
import math
import os
import statistics
import sys
from xml.sax.saxutils import escape

VARIANTS = {
    # key: (legend label, colour)
    "a_defer": ("4a  defers 100 tasks (crosstown, after the response)", "#1f77b4"),
    "a_defer_nice19": ("4a  the same, pool workers at nice 19", "#17becf"),
    "b_no_work": ("4b  no deferred work", "#2ca02c"),
    "c_post_before": ("4c  posts 100 tasks to a pool before the response", "#ff7f0e"),
    "d_inline": ("4d  runs 100 tasks inline before the response", "#d62728"),
}
EXTRA_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
TARGET = 1.10
RATE_PREFIX = "rate_"  # no_drag_rate_<variant>.csv: read as key "rate_<variant>"
# mode: (benchmark family in the JSON, heading, latency origin)
MODES = {
    "closed": ("no_drag", "closed loop (back to back, saturating)",
               "request written → last byte of the response read"),
    "rate": ("no_drag_rate", "open loop at a fixed arrival rate",
             "request's scheduled send time → last byte of the response read"),
}


def read_samples(directory):
    series = {}
    for path in sorted(glob.glob(os.path.join(directory, "no_drag_*.csv"))):
        key = os.path.basename(path)[len("no_drag_"):-len(".csv")]
        values = []
        repetitions = set()
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                values.append(float(row["latency_us"]))
                repetitions.add(row.get("repetition", "0"))
        if values:
            values.sort()
            series[key] = {"samples": values, "repetitions": len(repetitions)}
    return series


def percentile(sorted_values, q):
    """Nearest rank, rounded: the same rule as the benchmark's counters."""
    i = int(q * (len(sorted_values) - 1) + 0.5)
    return sorted_values[min(i, len(sorted_values) - 1)]


def read_json(path):
    """Median per run name of each counter: the `median` aggregate if present, else the median
    of the repetitions."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    medians, runs = {}, {}
    for b in data.get("benchmarks", []):
        name = b.get("run_name", b.get("name", ""))
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                medians[name] = b
        else:
            runs.setdefault(name, []).append(b)
    out = {}
    for name in set(medians) | set(runs):
        if name in medians:
            out[name] = medians[name]
        else:
            keys = {k for r in runs[name] for k, v in r.items() if isinstance(v, (int, float))}
            out[name] = {k: statistics.median(r[k] for r in runs[name] if k in r) for k in keys}
    return data.get("context", {}), out


def label_of(key):
    return VARIANTS.get(key, (key, None))[0]


def colour_of(key, index):
    colour = VARIANTS.get(key, (None, None))[1]
    return colour or EXTRA_COLOURS[index % len(EXTRA_COLOURS)]


def fmt_us(us):
    if us >= 1000:
        return f"{us / 1000:.3g} ms"
    return f"{us:.3g} µs"


def nines(p):
    """y coordinate of a percentile p in [0, 1): log10(1 / (1 - p))."""
    return -math.log10(1.0 - p)


def plot(series, out_path, title, subtitle):
    width = 960
    left, right, top = 90, 40, 70
    plot_h = 390
    bottom_of_plot = top + plot_h
    height = bottom_of_plot + 70 + 22 * len(series) + 40
    plot_w = width - left - right

    lo = min(s["samples"][0] for s in series.values())
    hi = max(s["samples"][-1] for s in series.values())
    x_lo = 10 ** math.floor(math.log10(max(lo, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(hi, x_lo * 10)))
    max_n = max(len(s["samples"]) for s in series.values())
    y_hi = max(2.0, min(5.0, math.ceil(math.log10(2 * max_n) * 2) / 2))

    def px(us):
        us = min(max(us, x_lo), x_hi)
        return left + plot_w * (math.log10(us) - math.log10(x_lo)) / (
            math.log10(x_hi) - math.log10(x_lo))

    def py(y):
        return bottom_of_plot - plot_h * min(max(y, 0.0), y_hi) / y_hi

    e = []
    e.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" '
             f'font-size="12">')
    e.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>')
    e.append(f'<text x="{width / 2}" y="26" text-anchor="middle" font-size="16" '
             f'font-weight="bold">{escape(title)}</text>')
    e.append(f'<text x="{width / 2}" y="46" text-anchor="middle" fill="#444">'
             f'{escape("Beast demo server, 8 keep-alive connections; latency per request: " + subtitle)}'
             f'</text>')

    # Grid: decades and their 2..9 multiples on x; percentiles on y.
    e.append('<g stroke="#e4e4e4" stroke-width="1">')
    decade = x_lo
    while decade < x_hi * 1.0001:
        for m in range(2, 10):
            v = decade * m
            if v < x_hi:
                e.append(f'<line x1="{px(v):.1f}" y1="{top}" x2="{px(v):.1f}" y2="{bottom_of_plot}"/>')
        decade *= 10
    e.append('</g>')
    e.append('<g stroke="#bdbdbd" stroke-width="1">')
    decade = x_lo
    x_ticks = []
    while decade < x_hi * 1.0001:
        e.append(f'<line x1="{px(decade):.1f}" y1="{top}" x2="{px(decade):.1f}" y2="{bottom_of_plot}"/>')
        x_ticks.append(decade)
        decade *= 10
    y_ticks = [(0.0, "0 %"), (nines(0.5), "50 %"), (1.0, "90 %"), (2.0, "99 %"),
               (3.0, "99.9 %"), (4.0, "99.99 %"), (5.0, "99.999 %")]
    y_ticks = [(y, t) for y, t in y_ticks if y <= y_hi + 1e-9]
    for y, _ in y_ticks:
        e.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}"/>')
    e.append('</g>')
    e.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
             f'stroke="#333" stroke-width="1"/>')

    e.append('<g fill="#222">')
    for v in x_ticks:
        e.append(f'<text x="{px(v):.1f}" y="{bottom_of_plot + 18}" text-anchor="middle">'
                 f'{escape(fmt_us(v))}</text>')
    for y, t in y_ticks:
        e.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{escape(t)}</text>')
    e.append('</g>')
    e.append(f'<text x="{left + plot_w / 2}" y="{bottom_of_plot + 40}" text-anchor="middle">'
             f'latency (log scale)</text>')
    e.append(f'<text transform="translate(22 {top + plot_h / 2}) rotate(-90)" '
             f'text-anchor="middle">requests at or below (percentile, nines scale)</text>')

    # The target line: 1.10 x the p99 of 4b (its label is drawn after the curves, over them).
    labels = []
    if "b_no_work" in series:
        target_us = TARGET * percentile(series["b_no_work"]["samples"], 0.99)
        if x_lo <= target_us <= x_hi:
            x = px(target_us)
            e.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom_of_plot}" '
                     f'stroke="#2ca02c" stroke-width="1.2" stroke-dasharray="6 4"/>')
            label = f"target for 4a p99: 1.10 × 4b p99 = {fmt_us(target_us)}"
            # On a white box, drawn after the curves, so it stays readable over them.
            width_px = 6.7 * len(label)
            x_text = x - 4 - width_px if x + 4 + width_px > left + plot_w else x + 4
            labels.append(f'<rect x="{x_text - 2:.1f}" y="{top + 3}" width="{width_px + 4:.1f}" '
                          f'height="15" fill="white" fill-opacity="0.85"/>')
            labels.append(f'<text x="{x_text:.1f}" y="{top + 14}" fill="#2ca02c">'
                          f'{escape(label)}</text>')

    # The curves, sampled at evenly spaced heights (the SVG stays small whatever n is).
    steps = 800
    for index, (key, s) in enumerate(series.items()):
        values = s["samples"]
        n = len(values)
        y_last = nines(1 - 0.5 / n)
        points = []
        for k in range(steps + 1):
            y = min(y_hi, y_last) * k / steps
            p = 1 - 10 ** (-y)
            i = min(n - 1, max(0, int(round(p * n - 0.5))))
            points.append((px(values[i]), py(y)))
        if y_last <= y_hi:
            points.append((px(values[-1]), py(y_last)))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        colour = colour_of(key, index)
        e.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                 f'stroke-linejoin="round" points="{path}"/>')
        for q in (0.5, 0.99):
            e.append(f'<circle cx="{px(percentile(values, q)):.1f}" cy="{py(nines(q)):.1f}" '
                     f'r="3.5" fill="{colour}" stroke="white" stroke-width="1"/>')

    e.extend(labels)

    # Legend, under the plot.
    y = bottom_of_plot + 70
    e.append(f'<text x="{left}" y="{y}" font-weight="bold">variant</text>')
    columns = [("n", 530), ("p50", 620), ("p99", 710), ("max", 800)]
    for name, x in columns:
        e.append(f'<text x="{x + 60}" y="{y}" text-anchor="end" font-weight="bold">{name}</text>')
    for index, (key, s) in enumerate(series.items()):
        y += 22
        values = s["samples"]
        colour = colour_of(key, index)
        e.append(f'<line x1="{left}" y1="{y - 4}" x2="{left + 28}" y2="{y - 4}" '
                 f'stroke="{colour}" stroke-width="3"/>')
        e.append(f'<text x="{left + 36}" y="{y}">{escape(label_of(key))}</text>')
        cells = [f"{len(values)}", fmt_us(percentile(values, 0.5)),
                 fmt_us(percentile(values, 0.99)), fmt_us(values[-1])]
        for (_, x), cell in zip(columns, cells):
            e.append(f'<text x="{x + 60}" y="{y}" text-anchor="end">{escape(cell)}</text>')
    y += 24
    e.append(f'<text x="{left}" y="{y}" fill="#555" font-size="11">'
             f'{escape("dots: p50 and p99 of each variant; every repetition pooled")}</text>')
    e.append('</svg>')

    with open(out_path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        f.write("\n".join(e))
        f.write("\n")


def mode_text(series, bench, mode, rate):
    family, heading, origin = MODES[mode]
    origin = origin.replace("→", "->")
    lines = [f"-- {heading}"
             + (f", {rate:.0f} requests/s offered" if rate else "") + " --",
             f"(client-side, {origin}; every repetition pooled)", ""]
    lines.append(f"{'variant':<16}{'samples':>9}{'reps':>6}{'p50 us':>10}{'p90 us':>10}"
                 f"{'p99 us':>10}{'p99.9 us':>10}{'max us':>10}{'mean us':>10}")
    for key, s in series.items():
        v = s["samples"]
        lines.append(f"{key:<16}{len(v):>9}{s['repetitions']:>6}"
                     f"{percentile(v, 0.5):>10.1f}{percentile(v, 0.9):>10.1f}"
                     f"{percentile(v, 0.99):>10.1f}{percentile(v, 0.999):>10.1f}"
                     f"{v[-1]:>10.1f}{statistics.fmean(v):>10.1f}")
    if "b_no_work" in series:
        b = series["b_no_work"]["samples"]
        lines += ["", "ratios to 4b (pooled samples):"]
        for key, s in series.items():
            if key == "b_no_work":
                continue
            v = s["samples"]
            p99 = percentile(v, 0.99) / percentile(b, 0.99)
            p50 = percentile(v, 0.5) / percentile(b, 0.5)
            verdict = ""
            if key in ("a_defer", "a_defer_nice19"):
                verdict = f"   target <= {TARGET:.2f}: {'met' if p99 <= TARGET else 'MISSED'}"
            lines.append(f"  {key:<16} p99 {p99:6.2f}x   p50 {p50:6.2f}x{verdict}")
    if bench:
        lag = mode == "rate"
        lines += ["", "from the benchmark's JSON (median over repetitions; p50/p99 per repetition):",
                  f"{'variant':<16}{'req/s':>10}{'resp/s':>10}{'p50 us':>10}{'p99 us':>10}"
                  f"{'io cpu us/req':>15}{'task us':>9}" + (f"{'send lag p99 us':>17}" if lag else "")]
        found = {}
        for key in series:
            run = bench.get(f"{family}/{key}/real_time")
            if run is None:
                continue
            found[key] = run
            lines.append(f"{key:<16}{run.get('req_per_s', 0):>10.0f}{run.get('resp_per_s', 0):>10.0f}"
                         f"{run.get('p50_us', 0):>10.1f}{run.get('p99_us', 0):>10.1f}"
                         f"{run.get('io_cpu_us', 0):>15.1f}{run.get('task_us', 0):>9.2f}"
                         + (f"{run.get('send_lag_p99_us', 0):>17.1f}" if lag else ""))
        if "b_no_work" in found:
            b = found["b_no_work"]
            lines += ["", "ratios to 4b (medians):"]
            for key, run in found.items():
                if key == "b_no_work":
                    continue
                p99 = run["p99_us"] / b["p99_us"]
                p50 = run["p50_us"] / b["p50_us"]
                rps = run["req_per_s"] / b["req_per_s"]
                verdict = ""
                if key in ("a_defer", "a_defer_nice19"):
                    verdict = f"   target <= {TARGET:.2f}: {'met' if p99 <= TARGET else 'MISSED'}"
                lines.append(f"  {key:<16} p99 {p99:6.2f}x   p50 {p50:6.2f}x   "
                             f"req/s {rps:5.2f}x{verdict}")
    return lines


def summary_text(modes, directory, context, bench):
    lines = [f"Suite 4 - no drag on responses: latency samples from {directory}"]
    if context:
        load = context.get("load_avg") or []
        lines.append(f"run: {context.get('date', '?')}, {context.get('num_cpus', '?')} cpus at "
                     f"{context.get('mhz_per_cpu', '?')} MHz, load average at start "
                     f"{' '.join(f'{x:.2f}' for x in load) or '?'}, "
                     f"libbenchmark {context.get('library_build_type', '?')} build")
    for mode, (series, rate) in modes.items():
        lines += [""] + mode_text(series, bench, mode, rate)
    return "\n".join(lines) + "\n"


def offered_rate(bench):
    """The fixed rate of the no_drag_rate runs (their offered_per_s counter), or None."""
    for name, run in (bench or {}).items():
        if name.startswith(MODES["rate"][0] + "/") and run.get("offered_per_s"):
            return run["offered_per_s"]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="directory of no_drag_[rate_]<variant>.csv files")
    parser.add_argument("-o", "--output", default=None,
                        help="closed-loop SVG to write (default: DIR/no_drag_latency.svg)")
    parser.add_argument("--rate-output", default=None,
                        help="fixed-rate SVG to write (default: derived from -o)")
    parser.add_argument("--summary", help="also write the figures as text to this file")
    parser.add_argument("--json", help="the --benchmark_out JSON of the same run (req/s)")
    parser.add_argument("--title", default="Suite 4 - no drag on responses")
    args = parser.parse_args()

    samples = read_samples(args.directory)
    if not samples:
        sys.exit(f"plot_latency.py: no no_drag_*.csv with samples in {args.directory}")
    context, bench = read_json(args.json) if args.json else ({}, None)
    rate = offered_rate(bench)

    out = args.output or os.path.join(args.directory, "no_drag_latency.svg")
    rate_out = args.rate_output
    if rate_out is None:
        head, name = os.path.split(out)
        if "no_drag_latency" in name:
            rate_out = os.path.join(head, name.replace("no_drag_latency", "no_drag_rate_latency"))
        else:
            root, ext = os.path.splitext(out)
            rate_out = root + "_rate" + (ext or ".svg")

    modes = {}
    for mode, path in (("closed", out), ("rate", rate_out)):
        if mode == "rate":
            series = {k[len(RATE_PREFIX):]: v for k, v in samples.items()
                      if k.startswith(RATE_PREFIX)}
        else:
            series = {k: v for k, v in samples.items() if not k.startswith(RATE_PREFIX)}
        if not series:
            continue
        order = list(VARIANTS) + sorted(k for k in series if k not in VARIANTS)
        series = {k: series[k] for k in order if k in series}
        _, heading, origin = MODES[mode]
        title = f"{args.title}: {heading}"
        if mode == "rate" and rate:
            title += f", {rate:.0f} req/s"
        plot(series, path, title, origin)
        print(f"wrote {path}")
        modes[mode] = (series, rate if mode == "rate" else None)

    text = summary_text(modes, args.directory, context, bench)
    if args.summary:
        with open(args.summary, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.summary}")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
