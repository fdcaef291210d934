"""The REST gateway: JSON over HTTP translated to the gRPC API."""

from server.gateway.app import create_gateway
from server.gateway.serving import GatewayServer, serve_gateway

__all__ = ["GatewayServer", "create_gateway", "serve_gateway"]
