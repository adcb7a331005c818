#!/usr/bin/env bash
# Installs what Kiri builds against: Lua 5.4, OpenBLAS and libpng from Debian, plus pkg-config, and luacheck for
# the tests that lint its Lua preludes.
# Idempotent: when everything is present it only checks and exits.
set -euo pipefail
packages=(pkg-config liblua5.4-dev libopenblas-dev libpng-dev lua-check)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: Swift 6 is required (https://swift.org/install)" >&2; exit 1; }
