#!/usr/bin/env bash
# Installs redis-server with apt-get when it is missing (tests start their
# own servers on free ports in temp dirs; nothing is left running).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-redis: redis-server not found; installing it with apt-get" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq redis-server >/dev/null
# The package may start a system instance; tests never use it.
($SUDO service redis-server stop >/dev/null 2>&1 || true)
command -v redis-server >/dev/null
