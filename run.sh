#!/usr/bin/env bash
# nnsens: one command to set up and run.
#   ./run.sh        create .venv (first time), install requirements and nnsens itself (pip install -e .),
#                   serve the dashboard on :8501
#   ./run.sh test   also install the test extras (pytest, Playwright; Debian chromium and poppler-utils
#                   when root), run all tests
#   ./run.sh public serve in public mode (NNSENS_PUBLIC=1: no TorchScript uploads, tighter compute
#                   budget, smaller uploads; see docs/security.md, and put authentication in front)
#   ./run.sh bench  run the benchmarks in bench/
# Python 3.11 is used when present (PYTHON=... overrides).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${NNSENS_VENV:-.venv}"

install() {  # install a requirements file once per content (stamp = its hash)
  local req="$1" stamp="$VENV/.stamp-$1"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local want; want="$(cat requirements*.txt pyproject.toml | sha256sum | cut -c1-16)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -r "$req"
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .   # the nnsens package + `nnsens` command
    echo "$want" > "$stamp"
  fi
}

case "${1:-run}" in
  run)
    install requirements.txt
    exec "$VENV/bin/python" -m streamlit run app.py --server.port "${PORT:-8501}" ;;
  public)
    install requirements.txt
    export NNSENS_PUBLIC=1
    exec "$VENV/bin/python" -m streamlit run app.py --server.port "${PORT:-8501}" \
      --server.maxUploadSize "${NNSENS_MAX_UPLOAD_MB:-100}" ;;
  test)
    install requirements-dev.txt
    if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/pdftoppm ]; } && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium poppler-utils) >/dev/null 2>&1 \
        || echo "note: could not install chromium / poppler-utils; browser and PDF-rendering tests will be skipped"
    fi
    shift
    exec "$VENV/bin/python" -m pytest "$@" ;;
  bench)
    install requirements.txt
    for b in bench/*.py; do echo "== $b"; "$VENV/bin/python" "$b"; done ;;
  *) echo "usage: ./run.sh [run|public|test|bench]" >&2; exit 2 ;;
esac
