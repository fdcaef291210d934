"""The REST gateway: JSON over HTTP translated to the gRPC API."""
