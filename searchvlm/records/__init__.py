"""L4: what runs on a finished sweep and what it writes: its tables as data, the runs
folder, recovery, confirmation, the decision, the literature table, analysis and diagnosis.

L4 module.

| module | owns |
|---|---|
| `frames` | results as DataFrames (`load_trials`, `load_front`) |
| `runs` | the runs folder: `list_runs`, `compare_runs`, `remove_run` |
| `recover` | a sweep's trials back from MLflow |
| `confirm` | the front retrained on fresh seeds (`run_confirm`) |
| `decide` | the decision: a policy non-inferior to dense (`decide`) |
| `reproduce` | the literature presets side by side (`run_reproduce`) |
| `diagnose` | the tasks' gradients per layer (`run_diagnose`) |
| `analysis_run` | the `analyze` command (`run_analysis`) |
| `_storage` | where Tune keeps a sweep's state (`--storage`): the sweep writes it, `rm` deletes it |
"""

__all__ = []
