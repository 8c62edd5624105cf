"""Draws bench/results.json (written by bench/main.ts) as a PNG: one panel per figure, a bar per
server at the median with a line from min to max.

    .venv-mitmproxy/bin/python bench/chart.py bench/results.json bench/results.png
"""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"wirescope": "#2a7ab0", "mitmproxy12": "#b5531a", "mitmproxy": "#d9822b",
          "wireguard-go": "#7a7a7a"}
LABELS = {"wireguard-go": "wireguard-go\n(ceiling)"}
ORDER = ["wirescope", "mitmproxy12", "mitmproxy", "wireguard-go"]


def label(data, s):
    """A server's bar label: the mitmproxy columns with their version."""
    if s in ("mitmproxy", "mitmproxy12"):
        return "mitmproxy\n" + (data.get("versions", {}).get(s, "?").split(" ")[0])
    return LABELS.get(s, s)


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    servers = sorted(data["servers"], key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    metrics = [m for m in data["metrics"]
               if any(data["results"].get(s, {}).get(m["id"]) for s in servers)]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        names, meds, lo, hi, colors = [], [], [], [], []
        for s in servers:
            xs = data["results"].get(s, {}).get(m["id"])
            if not xs:
                continue
            md = median(xs)
            names.append(label(data, s))
            meds.append(md)
            lo.append(md - min(xs))
            hi.append(max(xs) - md)
            colors.append(COLORS.get(s, "#555555"))
        ax.bar(names, meds, color=colors, yerr=[lo, hi], capsize=4)
        arrow = "↑" if m["better"] == "higher" else "↓"
        title = m["label"] if len(m["label"]) <= 44 else m["label"][:42] + "…"
        ax.set_title(f"{title}\n{m['unit']}, {arrow} better", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        ax.tick_params(axis="y", labelsize=8)
        for i, v in enumerate(meds):
            text = f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
            ax.annotate(text, (i, v), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 2), textcoords="offset points")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    mach = data["machine"]
    fig.suptitle(f"wirescope bench, {data['date']} — {mach['cpu']}, {mach['cores']} cores, "
                 f"Linux {mach['kernel']} (median, min–max)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
