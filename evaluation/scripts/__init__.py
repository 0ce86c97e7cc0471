"""Batch scripts (shell) shipped with the package: eval_checkpoints.sh, eval_experiment.sh."""
