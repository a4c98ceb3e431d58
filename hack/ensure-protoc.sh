#!/usr/bin/env bash
# Makes sure protoc of the pinned version (Debian 12's protobuf-compiler) is
# installed; installs it with apt when missing. Usage: ensure-protoc.sh VERSION
set -euo pipefail
want=$1
have=$(protoc --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  if [ -n "$have" ]; then
    echo "protoc $have found, $want wanted (Debian 12's protobuf-compiler)" >&2
    exit 1
  fi
  echo "installing protobuf-compiler with apt" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq protobuf-compiler >/dev/null
  have=$(protoc --version | awk '{print $2}')
  [ "$have" = "$want" ] || { echo "apt installed protoc $have, want $want" >&2; exit 1; }
fi
