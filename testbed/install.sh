#!/usr/bin/env bash
# Installs what `make demo`, `make test` and .ci/run need, and nothing that is there.
#
# Called by the Makefile (target `install`, a prerequisite of demo, test, lint, ...) and
# by .ci/run. Three parts, each a quick check when its work is already done:
#
# 1. Debian packages: the test bed's Prometheus, Alertmanager and PostgreSQL 15 (with
#    pg_stat_statements from postgresql-contrib), Chromium for the HTML report test, and
#    python3-venv. `apt-get update` runs once, only when a package is missing; Debian
#    starts system services on install, which are stopped (the test bed runs its own
#    servers on free loopback ports).
# 2. Python packages: a virtual environment at $VENV (default .venv in the checkout)
#    with `pip install -e '.[test]'`. It is re-installed only when pyproject.toml
#    changed: $VENV/postdeploy-installed holds the hash of the pyproject.toml it was
#    installed from.
# 3. Go builds: testbed/build-binaries.sh, which skips every binary already built for
#    its version in ~/.cache/postdeploy/bin.
#
# Options (environment): VENV, BASE_PYTHON (the interpreter that creates the venv, default
# python3), SKIP_APT=1 and SKIP_BINARIES=1 skip parts 1 and 3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
BASE_PYTHON=${BASE_PYTHON:-python3}
APT_PACKAGES=(prometheus prometheus-alertmanager postgresql-15 postgresql-contrib chromium python3-venv)
# The system services the packages above start on install.
SERVICES=(postgresql prometheus prometheus-alertmanager prometheus-node-exporter)

say() { printf '[install] %s\n' "$*" >&2; }

install_debian_packages() {
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages present"
    return
  fi
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  local svc
  for svc in "${SERVICES[@]}"; do
    ("${sudo[@]}" service "$svc" stop || true) >/dev/null 2>&1
  done
}

install_python_packages() {
  local stamp="$VENV/postdeploy-installed" wanted
  wanted=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    say "Python packages present in $VENV"
    return
  fi
  mkdir -p "$VENV"
  exec 9>"$VENV/install.lock"  # two `make` runs at once install once, one after the other
  flock 9
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating a virtual environment in $VENV"
    "$BASE_PYTHON" -m venv "$VENV"
  fi
  say "installing the Python packages into $VENV (pip install -e '.[test]')"
  rm -f "$stamp"
  (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e '.[test]')
  echo "$wanted" >"$stamp"
}

build_binaries() {
  local cache=${POSTDEPLOY_CACHE:-$HOME/.cache/postdeploy}
  mkdir -p "$cache"
  exec 8>"$cache/build.lock"  # one build at a time, however many checkouts ask
  flock 8
  "$ROOT/testbed/build-binaries.sh"
}

[ "${SKIP_APT:-0}" = 1 ] || install_debian_packages
install_python_packages
[ "${SKIP_BINARIES:-0}" = 1 ] || build_binaries
