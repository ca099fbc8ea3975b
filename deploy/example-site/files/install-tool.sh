#!/bin/sh
# steward-install-tool URL SHA256 DEST [MEMBER]: download URL, check its sha256, install it
# as DEST (mode 0755). With MEMBER, URL is a zip and MEMBER the file to take from it.
# Used by the guarded exec resources of the example site (`creates: DEST`).
set -eu
url=$1 sha256=$2 dest=$3 member=${4:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --proto '=https' --retry 3 -o "$tmp/download" "$url"
echo "$sha256  $tmp/download" | sha256sum -c - >/dev/null
if [ -n "$member" ]; then
  unzip -p "$tmp/download" "$member" > "$tmp/tool"
else
  mv "$tmp/download" "$tmp/tool"
fi
install -m 0755 "$tmp/tool" "$dest.steward-new"
mv -f "$dest.steward-new" "$dest"
