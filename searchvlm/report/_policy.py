"""The policy figure and the `show` command: `PolicyInfo` (one policy's keep ratio per layer
and task, modes, selectors, sharing) drawn as a PNG heatmap; `policy_picture` draws a policy
file beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchvlm.report._canvas import new_axes, save
from searchvlm.schema.errors import COMMAND_LINE, ConfigError

__all__ = ["PolicyInfo", "png_beside", "policy_info", "policy_picture", "policy_png"]

_TASKS = ("understanding", "generation")


@dataclass(frozen=True)
class PolicyInfo:
    """A policy as drawn: `keep[layer][task]`, one column label per task (task, mode /
    selector) and the title (name or provenance; sharing, scope, tied schedules)."""

    keep: list[list[float]]
    columns: list[str]
    title: str


def policy_info(policy: Any, title: str | None = None) -> PolicyInfo:
    """The picture of a `ReductionPolicy`, titled `title` (default: the policy's name)."""
    sh = policy.sharing
    scope = "all layers" if sh.scope is None else f"layers {','.join(map(str, sh.scope))}"
    head = title or f"policy {policy.name or '(unnamed)'}"
    return PolicyInfo(
        keep=[list(ks) for ks in zip(*(policy.task(t).keep for t in _TASKS))],  # (L, 2): layers x task
        columns=[f"{t}\n{policy.task(t).mode} / {policy.task(t).selector}" for t in _TASKS],
        title=f"{head}\nsharing: qkv {sh.qkv}, mlp {sh.mlp} ({scope})"
        f"{' · tied schedules' if policy.tie_schedules else ''}",
    )


def policy_png(policy: Any, path: str | Path, title: str | None = None) -> Path:
    """A picture of one policy: keep ratio per layer (rows) and task (columns) as a heatmap,
    each cell labelled with its ratio; mode and selector under each task, sharing (q/k/v,
    MLP, scope) and `tie_schedules` in the title. `policy` is a `ReductionPolicy`."""
    return _heatmap_png(policy_info(policy, title), Path(path))


def _heatmap_png(info: PolicyInfo, path: Path) -> Path:
    import numpy as np
    from matplotlib import colormaps

    keep = np.array(info.keep, dtype=float)  # (L, 2): layers x task
    n = keep.shape[0]
    fig, ax = new_axes((5.2, 1.6 + 0.32 * n))
    im = ax.imshow(keep, vmin=0.0, vmax=1.0, cmap=colormaps["viridis"], aspect="auto")
    for (layer, col), v in np.ndenumerate(keep):
        ax.text(col, layer, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(info.columns)), info.columns)
    ax.set_yticks(range(n), [str(i) for i in range(n)])
    ax.set_ylabel("layer")
    ax.set_xlabel("task (mode / selector)")
    ax.set_title(info.title, fontsize=9)
    fig.colorbar(im, ax=ax, label="keep ratio (image tokens computed)")
    return save(fig, path)


def png_beside(policy_file: Path) -> Path:
    """`policy.json` -> `policy.png` (a file already named .png gets `.png` appended)."""
    if not policy_file.name:  # "" or "/": no file to be beside
        raise ConfigError(COMMAND_LINE, "POLICY_FILE", str(policy_file), "not a policy file name")
    if policy_file.suffix == ".png":
        return policy_file.with_name(policy_file.name + ".png")
    return policy_file.with_suffix(".png")


def policy_picture(policy_file: str | Path, png: str | Path | None = None) -> Path:
    """The `show` command: `policy_png` of a policy file (exported, or a bare explicit policy),
    titled by its provenance, written to `png` (default: beside the file, `.png`)."""
    from searchvlm.schema.errors import load_json
    from searchvlm.schema.policy import load_policy

    policy_file = Path(policy_file)
    png = Path(png) if png else png_beside(policy_file)
    policy = load_policy(policy_file)
    data = load_json(policy_file)
    prov = data.get("provenance", {}) if isinstance(data, dict) else {}
    title = (f"{prov.get('sweep')} trial #{prov.get('trial_number')} ({prov.get('trial_id')})"
             if prov.get("sweep") else f"{policy_file.name}{f' ({policy.name})' if policy.name else ''}")  # fmt: skip
    return policy_png(policy, png, title)
