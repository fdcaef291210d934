"""Use cases: each one a transaction over the store, blobs and events."""
