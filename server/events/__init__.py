"""Change fan-out for the watch RPCs."""
