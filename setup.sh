#!/usr/bin/env bash
# Installs what Kiri builds against: Lua 5.4, OpenBLAS, libpng and zlib from Debian, plus pkg-config, luacheck for
# the tests that lint its Lua preludes, and Fashion-MNIST (kiri.data.fashion_mnist, /usr/share/datasets/fashion-mnist).
# With --test it also installs what the server's tests drive: Chromium and its WebDriver (the web page's test) and
# Python's venv (the tests make one with PyPI's webuiapi and selenium).
# Idempotent: when everything is present it only checks and exits.
set -euo pipefail
packages=(pkg-config liblua5.4-dev libopenblas-dev libpng-dev zlib1g-dev lua-check dataset-fashion-mnist)
if [ "${1:-}" = "--test" ]; then packages+=(chromium chromium-driver); fi
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
