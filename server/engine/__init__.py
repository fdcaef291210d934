"""The worker: claims generations with leases and runs them."""
