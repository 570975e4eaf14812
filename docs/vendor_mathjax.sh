#!/usr/bin/env bash
# MathJax for the documentation site, from the npm registry (the pages render their equations offline, with no
# CDN): the single-file TeX component and its fonts into docs/javascripts/mathjax/ (not committed).
set -euo pipefail
cd "$(dirname "$0")"
VERSION=3.2.2
TARGET=javascripts/mathjax
if [ -f "$TARGET/VERSION" ] && [ "$(cat "$TARGET/VERSION")" = "$VERSION" ]; then
    exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "mathjax@$VERSION" > /dev/null && tar xzf "mathjax-$VERSION.tgz")
rm -rf "$TARGET"
mkdir -p "$TARGET/output/chtml/fonts"
cp "$WORK/package/es5/tex-mml-chtml.js" "$TARGET/"
cp -r "$WORK/package/es5/output/chtml/fonts/woff-v2" "$TARGET/output/chtml/fonts/"
cp "$WORK/package/LICENSE" "$TARGET/LICENSE"
echo "$VERSION" > "$TARGET/VERSION"
