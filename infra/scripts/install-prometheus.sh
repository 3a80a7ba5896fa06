#!/usr/bin/env bash
# Install Debian's Prometheus (it ships `prometheus` and `promtool`) when either is missing.
# The dashboard test needs both; a missing binary is a failure here, never a silent skip there.
set -euo pipefail

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

if ! have; then
  echo "installing prometheus (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: the exporters and web assets are not needed to run a scraper.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a system service on :9090 where systemd runs; we never use it.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
  fi
fi
have || { echo "prometheus/promtool still missing after install" >&2; exit 1; }
