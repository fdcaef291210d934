"""Plain domain types and rules; no gRPC, SQLAlchemy or object storage here."""
