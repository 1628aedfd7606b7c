# Shared by scripts/demo and scripts/test: a project-local virtualenv installed from the pin set.
# Re-installs only when pyproject.toml or constraints.txt changed (a stamp records their hash).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

ensure_venv() {
    local extras="$1"  # e.g. "" or "test,celery"
    "$PYTHON_BIN" - <<'PY' || { echo "Python 3.11+ is required (found: $("$PYTHON_BIN" --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
    local want
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)-${extras}"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.icr-installed" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    echo "==> Installing into $VENV (pinned by constraints.txt; log: .venv/install.log)"
    [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
    local target="$ROOT"
    [ -n "$extras" ] && target="$ROOT[$extras]"
    if ! { "$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" &&
           "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$target"; } \
           > "$VENV/install.log" 2>&1; then
        tail -40 "$VENV/install.log" >&2
        echo "Installing failed; the whole log is $VENV/install.log" >&2
        exit 1
    fi
    echo "$want" > "$VENV/.icr-installed"
}
