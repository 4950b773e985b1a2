"""Training: the fixed-size and elastic loops, what both share (optimizer, epoch end,
callbacks, checkpoints, schedule, evaluation, results), and job.run, which chooses between them."""
