#!/usr/bin/env bash
# Install the official Linux build of one Blender version into
# $WORKSPACE/blender/<version>/ (kept across pod restarts), verified against
# the SHA256 list blender.org publishes next to it; print the binary's path.
#
#   WORKSPACE=/workspace bash install_blender.sh 4.2.3    # or 4.2: the newest 4.2.x
#
# Environment:
#   BLENDER_MIRROR            where the releases are (default https://download.blender.org/release)
#   POSEFACTORY_BLENDER_KEEP  how many installed versions to keep (default 3; least recently used go)
# An installed version is reused without any network access. Errors: one line
# on stderr, `install_blender: error: ...`, exit 1; nothing half-installed stays.
set -euo pipefail

WORKSPACE="${WORKSPACE:-/workspace}"
mirror="${BLENDER_MIRROR:-https://download.blender.org/release}"
keep="${POSEFACTORY_BLENDER_KEEP:-3}"
root="$WORKSPACE/blender"
fail() { echo "install_blender: error: $*" >&2; exit 1; }

requested="${1:-}"
[[ "$requested" =~ ^[0-9]{1,2}\.[0-9]{1,2}(\.[0-9]{1,3})?$ ]] || fail "not a Blender version: '$requested' (use e.g. 4.2 or 4.2.3)"
[[ "$keep" =~ ^[1-9][0-9]*$ ]] || fail "POSEFACTORY_BLENDER_KEEP must be a whole number >= 1"
mkdir -p "$root"

if [[ "$requested" =~ ^[0-9]+\.[0-9]+$ ]]; then
    series="$requested"
    # The newest installed build of the series first: no network on a restart.
    version="$(find "$root" -mindepth 1 -maxdepth 1 -type d -name "$series.*" ! -name '*.part' -printf '%f\n' |
               sort -V | tail -n 1)"
    if [ -z "$version" ]; then
        index="$(curl -fsSL --retry 2 "$mirror/Blender$series/")" ||
            fail "cannot list Blender $series releases at $mirror/Blender$series/ (offline?)"
        version="$(grep -o "blender-$series\.[0-9]*-linux-x64\.tar\.xz" <<<"$index" |
                   sed "s/^blender-//; s/-linux-x64\.tar\.xz$//" | sort -V | tail -n 1)"
        [ -n "$version" ] || fail "no Linux build of Blender $series at $mirror/Blender$series/"
    fi
else
    version="$requested"
    series="${version%.*}"
fi

dir="$root/$version"
if [ ! -x "$dir/blender" ]; then
    name="blender-$version-linux-x64.tar.xz"
    sums="$(curl -fsSL --retry 2 "$mirror/Blender$series/blender-$version.sha256")" ||
        fail "cannot download the SHA256 list of Blender $version from $mirror/Blender$series/ (offline?)"
    expected="$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' <<<"$sums")"
    [[ "$expected" =~ ^[0-9a-f]{64}$ ]] || fail "the SHA256 list of Blender $version does not name $name"
    archive="$root/$name.part"
    trap 'rm -rf "$archive" "$dir.part"' EXIT
    curl -fsSL --retry 3 -o "$archive" "$mirror/Blender$series/$name" ||
        fail "cannot download Blender $version from $mirror/Blender$series/$name (offline?)"
    echo "$expected  $archive" | sha256sum -c --quiet - >/dev/null 2>&1 ||
        fail "the Blender $version download does not match its published sha256 $expected; nothing installed"
    rm -rf "$dir.part"
    mkdir -p "$dir.part"
    tar -xJf "$archive" -C "$dir.part" --strip-components=1 || fail "cannot unpack $name"
    [ -x "$dir.part/blender" ] || fail "$name holds no blender executable"
    mv "$dir.part" "$dir"
    echo "install_blender: installed Blender $version in $dir" >&2
fi
touch "$dir/.last_used"

# Keep the most recently used versions; the one just asked for is the newest.
find "$root" -mindepth 2 -maxdepth 2 -name .last_used -printf '%T@ %h\n' | sort -rn | tail -n +$((keep + 1)) |
    while read -r _ old; do
        rm -rf "$old"
        echo "install_blender: removed Blender $(basename "$old") (keeping $keep)" >&2
    done
echo "$dir/blender"
