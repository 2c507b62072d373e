#!/usr/bin/env bash
# Fetches Debian's sonic-pi-samples (CC0 FLAC samples) with apt-get download
# and unpacks the samples into the folder given as $1. No root needed for
# the download itself; an outdated apt index is refreshed once if possible.
set -euo pipefail
dest=${1:-samples/sonic-pi}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download sonic-pi-samples >/dev/null 2>&1; then
  echo "apt index has no sonic-pi-samples; running apt-get update" >&2
  apt-get update >/dev/null
  apt-get download sonic-pi-samples >/dev/null
fi
dpkg-deb -x sonic-pi-samples_*.deb pkg
cd - >/dev/null
mkdir -p "$dest"
cp "$work"/pkg/usr/share/sonic-pi/samples/*.flac "$dest"/
cp "$work"/pkg/usr/share/doc/sonic-pi-samples/copyright "$dest"/COPYRIGHT
cat > "$dest"/README <<'TXT'
Samples from the Debian package sonic-pi-samples (Sonic Pi's sample pack).
Licences are listed per file in COPYRIGHT (CC0 1.0 for the samples).
TXT
echo "$(ls "$dest"/*.flac | wc -l) samples in $dest" >&2
