# imagegen: multi-stage build of the service from the committed genrpc/ (no protoc here).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY genrpc/ genrpc/
COPY server/ server/
COPY clients/python/ clients/python/
# Wheels for imagegen, imagegen-client (the SDK and the `imagegen` launcher) and
# every dependency, so the runtime stage needs no compiler.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./clients/python .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 imagegen \
    && mkdir -p /data && chown imagegen:imagegen /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER imagegen
WORKDIR /home/imagegen
ENV IMAGEGEN_HOST=0.0.0.0 \
    IMAGEGEN_DATA_DIR=/data \
    IMAGEGEN_GRPC_PORT=50051 \
    IMAGEGEN_HTTP_PORT=8080 \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 50051 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["imagegen", "healthcheck"]
# SIGTERM reaches imagegen directly (exec form): it drains and exits 0.
ENTRYPOINT ["imagegen"]
CMD ["serve"]
