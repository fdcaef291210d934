"""gRPC servicers and interceptors: convert proto to domain and back, delegate to services."""
