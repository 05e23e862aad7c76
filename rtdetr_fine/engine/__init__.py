"""Training: the epoch loops (loops.py), optimiser / scheduler / EMA (optim.py), what a checkpoint
saves and -r restores (training_state.py), and the run folder's rules (run_dir.py)."""
from .loops import Evaluation, NonFiniteLossError, amp_dtype_for, evaluate, train_one_epoch

__all__ = ["Evaluation", "NonFiniteLossError", "amp_dtype_for", "evaluate", "train_one_epoch"]
