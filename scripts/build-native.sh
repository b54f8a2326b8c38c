#!/bin/sh
# Builds Tessera's optional native helpers (docs/native.md) into build/tessera-native.node when
# the module is missing, older than its source, or ISA-L's header appeared or went since it was
# built. Without a C compiler or zstd.h it says what to install and leaves Tessera on
# Node's own APIs: it never fails an install.
# Builds the lab's forwarding stage (docs/lab.md) into build/tessera-wire the same way: when it is
# missing or older than its source; without a compiler only `tessera lab` is unavailable.
cd "$(dirname "$0")/.." || exit 0
src=src/native/tessera-native.c
out=build/tessera-native.node
say() { echo "tessera: native helpers not built: $*; Tessera runs without them (docs/native.md)" >&2; }
cc=${CC:-cc}
command -v "$cc" >/dev/null 2>&1 || cc=gcc
# The lab's stage: plain C against libc, a program of its own (not loaded by Node).
wire_src=src/lab/wire.c
wire_out=build/tessera-wire
if [ ! -f "$wire_out" ] || [ "$wire_src" -nt "$wire_out" ]; then
  if command -v "$cc" >/dev/null 2>&1; then
    mkdir -p build
    wire_tmp="$wire_out.tmp.$$"
    if "$cc" -O2 -Wall -Wextra -Werror -o "$wire_tmp" "$wire_src"; then
      mv "$wire_tmp" "$wire_out"
    else
      rm -f "$wire_tmp"
      echo "tessera: the lab's forwarding stage not built: the compiler failed (above); tessera lab is unavailable (docs/lab.md)" >&2
    fi
  else
    echo "tessera: the lab's forwarding stage not built: no C compiler (apt-get install gcc libc6-dev); tessera lab is unavailable (docs/lab.md)" >&2
  fi
fi
command -v "$cc" >/dev/null 2>&1 || { say "no C compiler (apt-get install gcc libzstd-dev)"; exit 0; }
has() { printf '#include <%s>\n' "$1" | "$cc" -E -x c - >/dev/null 2>&1; }
# Whether ISA-L's header is in the usual places: a test of files, as this runs before every
# command (asking the compiler, above, took ~0.1 s a command).
isal_seen=no
for d in /usr/local/include /usr/include/*-linux-gnu /usr/include; do [ -f "$d/isa-l/crc.h" ] && isal_seen=yes; done
# Up to date: built, not older than its source, and ISA-L's header is where it was at that build.
[ -f "$out" ] && [ ! "$src" -nt "$out" ] && [ "$(cat "$out.probe" 2>/dev/null)" = "isal=$isal_seen" ] && exit 0
# ISA-L's CRC-32 (Debian: libisal-dev) when the compiler finds its header; else the engine keeps zlib's.
isal=""
has isa-l/crc.h && isal="-DTESSERA_ISAL -lisal"
# Node-API headers: those of the Node.js the project installed (node_modules/node/...), else the system's.
inc=$(ls -d node_modules/node/node_modules/node-*/include/node 2>/dev/null | head -n 1)
[ -n "$inc" ] || inc=/usr/include/node
[ -f "$inc/node_api.h" ] || { say "no Node-API headers (run npm install first)"; exit 0; }
has zstd.h || { say "no zstd.h (apt-get install libzstd-dev)"; exit 0; }
[ -n "$isal" ] || echo "tessera: native helpers built without ISA-L's CRC-32 (apt-get install libisal-dev for it)" >&2
mkdir -p build
# A temporary of its own: two commands started at once may both build.
tmp="$out.tmp.$$"
# shellcheck disable=SC2086
if "$cc" -O2 -fPIC -shared -Wall -Wextra -Werror -I "$inc" -o "$tmp" "$src" -lzstd $isal; then
  mv "$tmp" "$out"
  printf 'isal=%s\n' "$isal_seen" > "$out.probe"
else
  rm -f "$tmp"
  say "the compiler failed (above)"
fi
exit 0
