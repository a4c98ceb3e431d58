#!/bin/bash
# build-images.sh builds zmesh's container images, one Dockerfile per binary
# (docker/<name>.Dockerfile), with docker or podman.
#
#   HUB=registry/zmesh TAG=v0.1.0 hack/build-images.sh [name...]
#
# Names: controller ztunnel zmesh-nodeagent waypoint zmeshctl (default: all).
# Env: HUB (default zmesh), TAG (default dev), BUILDER (docker or podman;
# default whichever is on PATH and answers `info`), PUSH=1 pushes after building, DRY_RUN=1 only
# prints the commands. Without a builder the script prints what it would run
# and fails, unless DRY_RUN=1.
set -euo pipefail
cd "$(dirname "$0")/.."

HUB=${HUB:-zmesh}
TAG=${TAG:-dev}
DRY_RUN=${DRY_RUN:-0}
PUSH=${PUSH:-0}
ALL=(controller ztunnel zmesh-nodeagent waypoint zmeshctl)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=("${ALL[@]}")

for n in "${names[@]}"; do
  [ -f "docker/$n.Dockerfile" ] || { echo "build-images: no docker/$n.Dockerfile (known: ${ALL[*]})" >&2; exit 2; }
done

builder=${BUILDER:-}
if [ -z "$builder" ]; then
  for b in docker podman; do
    if command -v "$b" >/dev/null 2>&1; then builder=$b; break; fi
  done
fi
# A client without a reachable daemon cannot build either.
why=""
if [ -z "$builder" ]; then
  why="neither docker nor podman is installed"
elif ! "$builder" info >/dev/null 2>&1; then
  why="'$builder info' fails (no daemon reachable)"
fi

cmds=()
for n in "${names[@]}"; do
  cmds+=("${builder:-docker} build -f docker/$n.Dockerfile -t $HUB/$n:$TAG .")
  [ "$PUSH" = 1 ] && cmds+=("${builder:-docker} push $HUB/$n:$TAG")
done

if [ "$DRY_RUN" = 1 ]; then
  echo "build-images: DRY_RUN=1, would run:"
  printf '  %s\n' "${cmds[@]}"
  exit 0
fi
if [ -n "$why" ]; then
  echo "build-images: $why, so no image can be built here." >&2
  echo "build-images: it would run:" >&2
  printf '  %s\n' "${cmds[@]}" >&2
  echo "build-images: set DRY_RUN=1 to only print these commands." >&2
  exit 1
fi
for c in "${cmds[@]}"; do
  echo "+ $c"
  $c
done
