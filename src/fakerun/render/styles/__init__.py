"""One module per style: the training script's own output in a framework's conventions."""
