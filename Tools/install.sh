#!/usr/bin/env bash
# Installs Kiri under PREFIX (default /usr/local): the release binary as PREFIX/bin/kiri, and in PREFIX/share/kiri
# what it finds there by itself (Sources/Kiri/RecipeRunner.swift, BundledFiles): the plugins, the recipes, the
# bundled models and CLIP tokenizer, and the Lua API reference with its editor stubs; then shell completions for
# bash, zsh and fish. KIRI_BINARY names an already built binary to install instead of building one.
#   Tools/install.sh [PREFIX]
set -euo pipefail
prefix="${1:-/usr/local}"
cd "$(dirname "$0")/.."
binary="${KIRI_BINARY:-}"
if [ -z "$binary" ]; then
    swift build -c release --product kiri
    binary=.build/release/kiri
fi
share="$prefix/share/kiri"
install -d "$prefix/bin" "$share" "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
    "$prefix/share/fish/vendor_completions.d"
install -m 755 "$binary" "$prefix/bin/kiri"
rm -rf "$share/Plugins" "$share/Scripts" "$share/models" "$share/clip" "$share/docs"
cp -R Plugins Scripts "$share/"
cp -R Sources/Kiri/Resources/models Sources/Kiri/Resources/clip "$share/"
mkdir -p "$share/docs" && cp -R docs/lua-api.md docs/luals "$share/docs/"
"$prefix/bin/kiri" --generate-completion-script bash > "$prefix/share/bash-completion/completions/kiri"
"$prefix/bin/kiri" --generate-completion-script zsh > "$prefix/share/zsh/site-functions/_kiri"
"$prefix/bin/kiri" --generate-completion-script fish > "$prefix/share/fish/vendor_completions.d/kiri.fish"
echo "installed $prefix/bin/kiri and $share"
