"""A run's configuration: the options, their limits, and the plan built from them."""
