"""L3: training and trials: one explicit train/eval loop, a trial with its baselines, analysis.

L3 module.

| module | owns |
|---|---|
| `training` | the train/eval loop and the metric scorers |
| `trial` | one trial (`run_trial`): seeds, baselines, the result |
| `baselines` | the isolated and dense baselines a trial is compared with |
| `checkpoint` | a trained model's checkpoint |
| `distributed` | data-parallel trials: ranks, batch shares, DDP / FSDP |
| `gradients` | each task's gradient per layer and parameter group |
| `analysis` | attention allocation per task and segment (`analyze`); its figures `_allocation`, `_heatmap` |
"""

__all__ = []
