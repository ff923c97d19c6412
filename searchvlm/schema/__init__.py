"""L0: the schemas (pydantic) a file or a table is read into, and the stdlib-level helpers.

L0 module: no torch, Ray or MLflow, not even lazily.

| module | owns |
|---|---|
| `policy/` | the reduction policy (`ReductionPolicy`, `load_policy`) and its parts: `selectors`, |
| | `schedules`, `presets`, and its search space (`space`) |
| `config` | the model, data, training and synergy configs, `TrialConfig` |
| `metrics` | one row per metric a trial reports |
| `trial_result` | `TrialResult`: what a trial reaches |
| `search` | a space file's `search:` side: objectives, constraints, sampler |
| `space` | `SearchSpace`: a search-space file, its sampling and loading |
| `overrides` | `--set key=value` overrides |
| `results` | a sweep's folder and tables: trials.csv, sweep.json, confirmed.csv |
| `identity` | a trial's identity (its key) |
| `file_checks` | `validate`: every problem of a space or policy file |
| `doc` | docs/space.md, generated: `python -m searchvlm.schema.doc` |
| `errors` | `ConfigError` and the file readers that raise it |
| `_strict`, `_digest`, `_hf` | strict pydantic models, digests, HF config reads |
| `_host`, `_storage_uri`, `_tables` | the host, `--storage` checked, atomic CSV writes |
"""

__all__ = []
