#!/usr/bin/env bash
# Sets up a fresh Debian machine (Python 3.11) for the hub: the servers of the local
# stack from Debian's packages, then the hub itself in .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || packages+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || packages+=(mosquitto-clients)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || packages+=(docker-compose)
command -v runuser >/dev/null 2>&1 || packages+=(util-linux)
# The web page's browser tests: Playwright (PyPI) drives Debian's Chromium and never downloads a browser.
# --no-install-recommends below matters here: with recommends apt pulls ~130 packages (systemd, CUPS, ...).
[ -x /usr/bin/chromium ] || packages+=(chromium)
# Read auditing of organisation roles (hub audit): pgaudit for the installed PostgreSQL major version.
# Without it the hub runs the same and `hub audit` says read auditing is off.
for pg in /usr/lib/postgresql/*/bin/initdb; do
  [ -e "$pg" ] || continue
  major=$(basename "$(dirname "$(dirname "$pg")")")
  [ -e "/usr/lib/postgresql/$major/lib/pgaudit.so" ] || packages+=("postgresql-$major-pgaudit")
done
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql-15-pgaudit)

if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${packages[*]}"
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' >/dev/null
echo "setup done: the hub is .venv/bin/hub"
