#!/bin/sh
# Installs the project's npm dependencies (Node.js 24 among them) on a fresh clone, so that
# `npm start`, `npm test` and bin/tessera work without a separate install step, and builds the
# optional native helpers.
cd "$(dirname "$0")/.." || exit 1
if [ ! -x node_modules/node/bin/node ] || [ ! -d node_modules/lmdb ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "tessera: installing npm dependencies (Node.js 24, lmdb, typescript)..." >&2
  npm install --no-audit --no-fund >&2 || exit 1
fi
# The optional native helpers (docs/native.md): built when missing or older than their source.
sh scripts/build-native.sh
