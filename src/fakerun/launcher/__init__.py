"""The launcher (torchrun's agent): forks the ranks, supervises them, runs the job loop."""
