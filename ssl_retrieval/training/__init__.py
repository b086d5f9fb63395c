"""Training: the loop (trainer.py) and its parts (checkpoints.py, validation.py, averaging.py,
progress.py, summary.py), tf.distribute strategies (distribute.py), optimizers (optimizers.py)."""
