"""What pinning torch's CPU kernels to AVX2 costs: the training step with the pin and without.

`import searchvlm` pins ATen, MKL and oneDNN to their AVX2 kernels (`searchvlm.schema._host.pin_kernels`)
so that numbers reproduce across CPU types. On a CPU with AVX-512 the native kernels may be
faster; this times `benchmarks/step_time.py` (dense and three presets at the default proxy's
shape) in alternating subprocesses, pinned and `SEARCHVLM_CPU_KERNELS=native`, `--rounds`
times each, and reports each policy's median step time under both and their ratio (CPU time,
one thread; the rounds interleave, so machine load hits both alike).

    .venv/bin/python benchmarks/kernel_pin.py --out benchmarks/results/kernel_pin.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchvlm.schema._host import KERNELS_ENV, PINS, cpu_model  # noqa: E402

SHAPE = ["--layers", "4", "--hidden", "64", "--image-tokens", "64", "--batch-size", "16"]
ONLY = "dense,fastv,himix,hmgen"


def _step_times(native: bool, reps: int) -> tuple[str, dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k not in (*PINS["avx2"], KERNELS_ENV)}
    env[KERNELS_ENV] = "native" if native else "avx2"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "step.json"
        cmd = [sys.executable, str(ROOT / "benchmarks/step_time.py"), *SHAPE, "--only", ONLY, "--reps", str(reps),
               "--out", str(out)]  # fmt: skip
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        data = json.loads(out.read_text())
    probe = "import searchvlm, torch; print(torch.backends.cpu.get_cpu_capability())"
    kernels = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True)
    return kernels.stdout.strip(), {r["preset"]: r["step_ms"] for r in data["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs of each setting")
    ap.add_argument("--reps", type=int, default=20, help="timed steps per policy per run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/kernel_pin.json")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"pinned": [], "native": []}
    kernels: dict[str, str] = {}
    for r in range(args.rounds):
        for name in ("pinned", "native") if r % 2 == 0 else ("native", "pinned"):
            kernels[name], times = _step_times(name == "native", args.reps)
            runs[name].append(times)
            print(f"round {r} {name} ({kernels[name]}): " + ", ".join(f"{k} {v:.1f} ms" for k, v in times.items()),
                  flush=True)  # fmt: skip
    rows = []
    for policy in runs["pinned"][0]:
        pinned = statistics.median(t[policy] for t in runs["pinned"])
        native = statistics.median(t[policy] for t in runs["native"])
        rows.append({"policy": policy, "pinned_ms": round(pinned, 2), "native_ms": round(native, 2),
                     "pinned_over_native": round(pinned / native, 3),
                     "pinned_runs_ms": [t[policy] for t in runs["pinned"]],
                     "native_runs_ms": [t[policy] for t in runs["native"]]})  # fmt: skip
        print(f"{policy}: pinned {pinned:.1f} ms, native {native:.1f} ms, ratio {pinned / native:.3f}")
    result = {"command": "python benchmarks/kernel_pin.py", "cpu": cpu_model(), "kernels": kernels,
              "shape": " ".join(SHAPE), "rounds": args.rounds, "reps": args.reps, "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
