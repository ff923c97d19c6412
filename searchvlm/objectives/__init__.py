"""L1: arithmetic on numbers and schemas (numpy): what a trial costs and gains, and the front.

L1 module: no torch, Ray or MLflow, not even lazily.

| module | owns |
|---|---|
| `flops` | a policy's FLOPs (`count_flops`) |
| `synergy` | the synergy gains of a trial |
| `pareto` | the Pareto front, hypervolume, the knee and the export rules |
| `ehvi` | expected hypervolume improvement |
| `noninferiority` | the paired non-inferiority test of `confirm` and `decide` |
| `export` | the exported policy file (`export_policy`) |
"""

__all__ = []
