#!/usr/bin/env bash
# The evaluation corpus: freely licensed recordings from Debian packages,
# fetched with `apt-get download` and unpacked once into $1 (a cache).
#   sonic-pi-samples      165 CC0 samples (loops, drums, ambience)
#   openarena-data        game sound effects (GPL-2)
#   extremetuxracer-data  10 music tracks, up to 2 minutes (GPL-2+)
#   frozen-bubble-data    3 music tracks of 3-5 minutes and effects (GPL-2)
set -euo pipefail
dest=${1:-eval/.cache/corpus}
packages=(sonic-pi-samples openarena-data extremetuxracer-data frozen-bubble-data)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
  echo "refreshing the apt index" >&2
  apt-get update >/dev/null
  apt-get download "${packages[@]}" >/dev/null
fi
for deb in *.deb; do dpkg-deb -x "$deb" pkg; done
cd - >/dev/null
mkdir -p "$dest"/sonic-pi "$dest"/openarena "$dest"/extremetuxracer "$dest"/frozen-bubble
cp "$work"/pkg/usr/share/sonic-pi/samples/*.flac "$dest"/sonic-pi/
cp "$work"/pkg/usr/share/games/etr/music/*.ogg "$dest"/extremetuxracer/
cp "$work"/pkg/usr/share/games/frozen-bubble/snd/*.ogg "$dest"/frozen-bubble/
python3 - "$work"/pkg/usr/share/games/openarena/baseoa/pak0.pk3 "$dest"/openarena <<'PY'
import sys, zipfile, pathlib
pak, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(pak) as z:
    for info in z.infolist():
        if info.filename.lower().endswith((".wav", ".ogg")) and info.filename.startswith("sound/"):
            target = out / info.filename[len("sound/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
PY
for p in sonic-pi-samples openarena-data extremetuxracer-data frozen-bubble-data; do
  cp "$work"/pkg/usr/share/doc/$p/copyright "$dest"/COPYRIGHT.$p
done
find "$dest" -type f \( -name '*.wav' -o -name '*.ogg' -o -name '*.flac' \) | wc -l | xargs echo "audio files in $dest:" >&2
