#!/usr/bin/env python3
"""Render the load harness's results.json as one PNG (needs matplotlib).

Usage: plot.py RESULTS_JSON OUT_PNG

Left: queries per server CPU-second per case (median of the reps; the whisker
spans the reps' min..max). Right: the overload test, answered q/s against
offered q/s for each server (hits solid, NXDOMAIN dashed); the grey diagonal is
"everything answered".
"""
import json, statistics, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["ref", "cellns", "knot", "nsd", "hickory", "extra"]
COLORS = {"ref": "#888888", "cellns": "#d62728", "knot": "#1f77b4", "nsd": "#2ca02c",
          "hickory": "#9467bd", "extra": "#8c564b"}
CASES = ["hit", "nxdomain", "refused"]


def main():
    res = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    labels = res.get("labels", {})
    p = res["params"]
    runs = res["runs"]
    servers = [s for s in ORDER if any(k.startswith(s + "/") for k in runs)]
    over = res.get("overload") or {}
    fig, axes = plt.subplots(1, 2 if over else 1, figsize=(13 if over else 7, 4.8))
    ax = axes[0] if over else axes

    width = 0.8 / max(1, len(servers))
    for i, s in enumerate(servers):
        xs, ys, lo, hi = [], [], [], []
        for j, case in enumerate(CASES):
            rr = runs.get(f"{s}/{case}")
            if not rr:
                continue
            v = [r["q_per_cpus"] / 1000 for r in rr]
            m = statistics.median(v)
            xs.append(j + (i - (len(servers) - 1) / 2) * width)
            ys.append(m)
            lo.append(m - min(v))
            hi.append(max(v) - m)
        ax.bar(xs, ys, width * 0.95, yerr=[lo, hi], capsize=3, label=labels.get(s, s),
               color=COLORS.get(s))
        for x, y in zip(xs, ys):
            ax.text(x, y + 2, f"{y:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(CASES)))
    ax.set_xticklabels(CASES)
    ax.set_ylabel("thousand queries per server CPU-second")
    ax.set_title(f"UDP, 1 server core, N={p['N']:,} names, "
                 f"{p['REPS']}×{p['DURATION']} s (median, min–max)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)

    if over:
        ax = axes[1]
        top = 0
        for key, o in sorted(over.items(), key=lambda kv: ORDER.index(kv[0].split("/")[0])):
            s, case = key.split("/")
            pts = sorted(o["points"], key=lambda x: x["send_qps"])
            xs = [x["send_qps"] / 1000 for x in pts]
            ys = [x["ans_qps"] / 1000 for x in pts]
            top = max(top, max(xs))
            ax.plot(xs, ys, "-" if case == "hit" else "--", marker="o" if case == "hit" else "x",
                    ms=4, color=COLORS.get(s), label=f"{labels.get(s, s)} {case}")
        ax.plot([0, top], [0, top], color="#cccccc", lw=1, zorder=0)
        ax.set_xlabel("offered thousand q/s (open loop, flood.c)")
        ax.set_ylabel("answered thousand q/s")
        ax.set_title(f"Overload: {p['OVERLOAD_DURATION']:g} s per point, up to 2× each "
                     "server's peak", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
