"""Keys a sweep's trial config carries (shared by the driver's searcher and the workers)."""

PRESET_ATTR = "preset"
POLICY_ATTR = "policy_json"  # a fixed explicit policy (the `analysis` warm start)
NUMBER_KEY = "optuna_number"
TRIAL_ID_ATTR = "searchvlm_trial_id"  # Optuna user attr: the trial id of trials.csv and MLflow
DUPLICATE_OF = "duplicate_of"  # the trial whose stored result a repeated policy reuses
REUSE_ATTR = "reuse_json"  # that trial's TrialResult JSON, carried to the (non-)training worker
WARNINGS_KEY = "trial_warnings"  # a report's new Python warnings, caught in the worker (one line each)
PROFILE_ENV = "SEARCHVLM_PROFILE"  # a folder: each trial's cProfile stats go to <folder>/<trial>.prof
