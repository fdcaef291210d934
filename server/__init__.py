"""imagegen: the gRPC image-generation service."""
