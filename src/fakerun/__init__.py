"""fakerun: a GPU-free stand-in for torchrun."""

__version__ = "0.1.0"
