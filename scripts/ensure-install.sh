#!/bin/sh
# Installs the project's npm dependencies (Node.js 24 among them) on a fresh clone, so that
# `npm start`, `npm test` and bin/tessera work without a separate install step, and builds the
# optional native helpers.
#
# Commands started at once on a fresh clone (`npm start` beside `bin/tessera disk list`) would
# each run `npm install` in the same tree, and one fails (ENOTEMPTY): the first takes a lock
# (flock(1), util-linux) and installs, the others wait for it and then find it installed. Once
# installed, no lock is taken: bin/tessera runs this before every command.
# TESSERA_NPM names the npm to run (tests stub it; default: npm).
cd "$(dirname "$0")/.." || exit 1
installed() {
  [ -x node_modules/node/bin/node ] && [ -d node_modules/lmdb ] && [ ! package.json -nt node_modules/.package-lock.json ]
}
if ! installed; then
  mkdir -p build
  # The lock goes with the open file: a process killed while it installs releases it.
  exec 9>build/.install.lock
  if command -v flock >/dev/null 2>&1 && ! flock -n 9; then
    echo "tessera: waiting for another install of the npm dependencies to finish..." >&2
    flock 9 || exit 1
  fi
  if ! installed; then
    echo "tessera: installing npm dependencies (Node.js 24, lmdb, typescript)..." >&2
    ${TESSERA_NPM:-npm} install --no-audit --no-fund >&2 || exit 1
  fi
fi
# The optional native helpers (docs/native.md): built when missing or older than their source;
# after an install still under the lock, so that those waiting find them built.
sh scripts/build-native.sh
