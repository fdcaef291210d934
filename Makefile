# Shortcuts for developers; each target also works without make (see README).
.PHONY: run test proto proto-baseline lint typecheck

run:
	./scripts/run

test:
	./scripts/test

proto:
	.venv/bin/python scripts/genproto.py

# Record the current contract as the baseline that `buf breaking` checks against.
# Run it when a version is released, never to silence a breaking change.
proto-baseline:
	.venv/bin/buf build --exclude-source-info -o protos/baseline.json

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/buf lint && .venv/bin/buf format --diff --exit-code

typecheck:
	.venv/bin/mypy
