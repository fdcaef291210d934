# Sourced by scripts/run and scripts/test: create .venv once, reinstall when the
# dependency list changes, and put .venv/bin first on PATH.
# Needs only Python 3.11+ with pip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian's python3 without python3-venv: fall back to virtualenv from PyPI.
    rm -rf "$VENV"
    "$PYTHON" -m pip install --quiet --user virtualenv
    "$PYTHON" -m virtualenv --quiet "$VENV"
  fi
fi

stamp="$VENV/.stamp-deps"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/clients/python/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing imagegen, imagegen-client and the dev tools into $VENV (first run takes a minute)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Both distributions editable, together: imagegen depends on imagegen-client (the SDK).
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT/clients/python[cli]" -e "$ROOT[dev]"
  echo "$want" > "$stamp"
fi
# The SDK's blocking client is generated from its asyncio one, not committed.
"$VENV/bin/python" "$ROOT/clients/python/gensync.py" >/dev/null
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
