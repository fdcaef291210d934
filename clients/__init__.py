"""imagegen clients: the Python SDK and CLI (the Node client lives in clients/node)."""
