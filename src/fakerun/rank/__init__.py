"""The rank process: one simulated GPU running the training script."""
