#!/usr/bin/env bash
# The evaluation corpus: freely licensed recordings from Debian packages,
# fetched with `apt-get download` and unpacked once into $1 (a cache; the
# Makefile's $(EVAL_CORPUS)/.fetched stamp). Running it again rebuilds the
# same tree.
# Sound effects and short music, for eval/run.py:
#   sonic-pi-samples      165 CC0 samples (loops, drums, ambience)
#   openarena-data        game sound effects (GPL-2)
#   extremetuxracer-data  10 music tracks, up to 2 minutes (GPL-2+)
#   frozen-bubble-data    3 music tracks of 3-5 minutes and effects (GPL-2)
# Game soundtracks, into $1/music/<package>/ (the copy-detection corpus of
# eval/copies.py, with extremetuxracer's music; about 11 h):
#   supertuxkart-data     (0.98 h; its sped-up last-lap versions *_fast and
#                          farm_f are copies of other tracks and left out)
#   hedgewars-data        (1.56 h)   freedroidrpg-data  (0.81 h)
#   widelands-data        (1.58 h)   wesnoth-1.16-music (2.14 h)
#   warzone2100-music     (4.05 h, Ogg Opus)
# Only the audio under each package's music folder is kept, with the
# package's copyright file as $1/COPYRIGHT.<package>.
set -euo pipefail
dest=$(realpath -m "${1:-eval/.cache/corpus}")
effects=(sonic-pi-samples openarena-data extremetuxracer-data frozen-bubble-data)
music=(supertuxkart-data hedgewars-data freedroidrpg-data widelands-data wesnoth-1.16-music warzone2100-music)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download "${effects[@]}" "${music[@]}" >/dev/null 2>&1; then
  echo "refreshing the apt index" >&2
  apt-get update >/dev/null
  apt-get download "${effects[@]}" "${music[@]}" >/dev/null
fi
for p in "${effects[@]}"; do dpkg-deb -x "$p"_*.deb pkg; done
for p in "${music[@]}"; do
  # Only the music and the copyright file: the game data is most of each package.
  dpkg-deb --fsys-tarfile "$p"_*.deb | tar -x -C pkg --wildcards \
    '*/[Mm]usic/*' "./usr/share/doc/$p/copyright"
done
cd - >/dev/null
rm -rf "$dest"/sonic-pi "$dest"/openarena "$dest"/extremetuxracer "$dest"/frozen-bubble "$dest"/music
mkdir -p "$dest"/sonic-pi "$dest"/openarena "$dest"/extremetuxracer "$dest"/frozen-bubble "$dest"/music
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
# Each package's music folder, its layout below it kept (warzone2100's albums).
declare -A music_dir=(
  [supertuxkart-data]=usr/share/games/supertuxkart/data/music
  [hedgewars-data]=usr/share/games/hedgewars/Data/Music
  [freedroidrpg-data]=usr/share/freedroidrpg/data/sound/music
  [widelands-data]=usr/share/games/widelands/data/music
  [wesnoth-1.16-music]=usr/share/games/wesnoth/1.16/data/core/music
  [warzone2100-music]=usr/share/games/warzone2100/music
)
for p in "${music[@]}"; do
  src="$work/pkg/${music_dir[$p]}"
  test -d "$src" || { echo "no music folder $src in $p" >&2; exit 1; }
  mkdir -p "$dest/music/$p"
  (cd "$src" && find . -type f \( -name '*.ogg' -o -name '*.opus' -o -name '*license.txt' \) \
    ! -name '*_fast.ogg' ! -name 'farm_f.ogg' -print0 | xargs -0 cp --parents -t "$dest/music/$p")
done
for p in "${effects[@]}" "${music[@]}"; do
  cp "$work"/pkg/usr/share/doc/$p/copyright "$dest"/COPYRIGHT.$p
done
find "$dest" -type f \( -name '*.wav' -o -name '*.ogg' -o -name '*.flac' -o -name '*.opus' \) | wc -l |
  xargs echo "audio files in $dest:" >&2
find "$dest/music" -type f \( -name '*.ogg' -o -name '*.opus' \) | wc -l | xargs echo "soundtrack files in $dest/music:" >&2
