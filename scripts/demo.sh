#!/usr/bin/env bash
# The main job on the embedded default: a full render round trip on the
# built-in `local` host (a login shell on this machine standing in for a pod),
# with the bundled sample scene: a small pose batch (the character's three
# timeline-marker poses), ending with the contact sheet's path. Uses Stability
# SDXL when STABILITY_API_KEY is set, otherwise renders without the AI step
# and says so.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/bootstrap.sh"
cd "$repo"
export POSEFACTORY_DATA_DIR="${POSEFACTORY_DATA_DIR:-$repo/.data}"
scene="$POSEFACTORY_DATA_DIR/sample/golden-rigged.blend"  # the rigged character with marker poses
if [ ! -f "$scene" ]; then
    mkdir -p "$(dirname "$scene")"
    echo "building the sample scene: $scene"
    .venv/bin/python pod_setup/make_sample_scene.py "$scene" --samples 8 >/dev/null
fi
exec .venv/bin/python -m remote.cli render "$scene" \
    --prompt "a heroic armoured knight standing on a stone floor, dramatic lighting, detailed" \
    --negative-prompt "blurry, low quality" --poses markers --variations 1 --steps 30 --strength 0.35 "$@"
