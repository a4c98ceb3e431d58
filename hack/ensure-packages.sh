#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, when missing.
# Idempotent; does nothing when every command is already present.
# Usage: ensure-packages.sh
set -euo pipefail
declare -A pkg_for=(
  [ip]=iproute2
  [iptables]=iptables
  [nft]=nftables
  [curl]=curl
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages (${missing[*]}); run as root to install them" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
