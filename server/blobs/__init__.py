"""Object storage for image bytes: S3 through minio, or a local directory."""
