"""The coordinator: the pure core that runs rendezvous and collectives, and its timeline."""
