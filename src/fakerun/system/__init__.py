"""Edges to the operating system: files, the runtime directory, signals, the terminal."""
