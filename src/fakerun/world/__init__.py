"""The simulated world: what the seed draws (model, GPU, software, hosts) and the physics of training it."""
