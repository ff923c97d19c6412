"""The picture of a decision: a sweep's front with the presets, the raced shortlist and the
accepted policy marked, beside each raced candidate's paired difference from dense with its
one-sided lower bound against the margin.

    .venv/bin/python benchmarks/decision_plot.py runs/default-s12 --out benchmarks/results/decide_default.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from searchvlm.objectives.pareto import front
from searchvlm.schema.results import DECISION_FILE, TRIALS_FILE, read_trials


def draw(run: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_trials(run / TRIALS_FILE) if r.get("status") == "ok"]
    decision = json.loads((run / DECISION_FILE).read_text())
    race, order = decision["race"], {o["trial_id"]: o for o in decision["order"]}
    accepted = (decision.get("accepted") or {}).get("trial_id")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    x = np.array([r["flops_ratio"] for r in rows])
    y = np.array([r["synergy_gain"] for r in rows])
    a.scatter(x, y, c="0.6", s=22, label="trials (sweep seed)")
    fr = front(rows)
    a.plot([r["flops_ratio"] for r in fr], [r["synergy_gain"] for r in fr], "k-", lw=0.8, label="front")
    for r in rows:
        if r.get("preset"):
            a.annotate(r["preset"], (r["flops_ratio"], r["synergy_gain"]), fontsize=7, xytext=(3, 3),
                       textcoords="offset points")  # fmt: skip
    for tid, o in order.items():
        star = tid == accepted
        a.scatter([o["flops_ratio"]], [o["search_synergy_gain"]], s=160 if star else 70, marker="*" if star else "o",
                  facecolors="gold" if star else "none", edgecolors="C3", zorder=3,
                  label="accepted" if star else None)  # fmt: skip
    a.scatter([], [], facecolors="none", edgecolors="C3", label="raced (shortlist)")
    a.set(xlabel="training FLOPs ratio (exact)", ylabel="synergy gain (one seed)", title=f"sweep {run.name}")
    a.legend(fontsize=8)
    tested = race["tested"]
    delta = race["delta"]
    for i, t in enumerate(tested):
        d = np.asarray(t["diffs"])
        b.scatter(np.full(len(d), i) + np.linspace(-0.12, 0.12, len(d)), d, s=14, c="0.5")
        b.errorbar([i], [t["mean"]], yerr=[[t["mean"] - t["lower"]], [0]], fmt="o", color="C0", capsize=6)
        b.annotate(f"{t['state'].replace('_', '-')}\nLB {t['lower']:+.3f}", (i, t["lower"]), fontsize=8,
                   xytext=(8, -18), textcoords="offset points")  # fmt: skip
    b.axhline(-delta, color="C3", ls="--", lw=1, label=f"-δ = {-delta:g}")
    b.axhline(0, color="k", lw=0.6)
    labels = [f"{order[t['name']].get('preset') or 'trial ' + t['name']}\nFLOPs {t['flops_ratio']:.3f}" for t in tested]
    b.set_xticks(range(len(tested)), labels, fontsize=8)
    b.set(ylabel="synergy − dense synergy (paired per seed)", xlim=(-0.6, len(tested) - 0.4),
          title=f"race on seeds {decision['seeds'][0]}-{decision['seeds'][-1]}: {decision['verdict']} "
          f"(one-sided, α per look {race['level_per_look']:g})")  # fmt: skip
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a sweep folder with decision.json")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    draw(args.run, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
