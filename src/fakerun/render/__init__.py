"""The views: events in, text out. They never see sockets."""
