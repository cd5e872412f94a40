"""The `fakerun` command line: options, the environment they come from, and dispatch."""
