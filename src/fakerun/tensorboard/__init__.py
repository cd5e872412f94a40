"""TensorBoard event files as each style's framework writes them (issue 22):
choice.py decides whether and whose, a board per framework turns the run's
events into SummaryWriter calls (writes.py), and the sink (sink.py) writes
them into event files (records.py, summaries.py) on the writing rank's node.
Nothing here but choice.py is imported unless a run writes event files."""
