"""Training: the loop (trainer.py) and tf.distribute strategies (distribute.py)."""
