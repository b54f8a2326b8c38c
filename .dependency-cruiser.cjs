// Tessera's layering, checked by `npm run check:layers` (part of `npm test`). docs/layout.md says
// the same in prose: rooms (folders of src/) form layers, and data flows one way, downward.
//
//   cli                        argument parsing and output; reaches the node only through api/client
//   node                       wiring only: starts the store, NBD, API
//   api (server)   api/client  HTTP routes over the rooms below; the client side for every caller
//   cluster                    etcd membership, placement, the peer protocol, chain replication
//   transfer                   bulk transfer over long links (plain files; disks through the node)
//   hydrate                    instant restore (a volume served from a backup)
//   backup  nbd                repository and its operations; the NBD protocol over the engine
//   engine  fsread             the store; read-only filesystem readers
//   objstore                   directory and S3 object storage
//   flow                       limiters, pools, pacing: no domain logic
//   util  native  observe      leaf pieces
//   lab                        emulated networks for tests: uses util alone, used by cli alone
//
// A room may import from rooms in the layers below it, never above or beside-and-back, which
// also rules out cycles between rooms. Within and across files, no import cycle at all.

/** Rooms each room may NOT import (besides itself). Anything not listed is allowed. */
const above = {
  util: ['native', 'observe', 'flow', 'objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  lab: ['native', 'observe', 'flow', 'objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli'],
  native: ['util', 'observe', 'flow', 'objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  observe: ['native', 'flow', 'objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  flow: ['objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  objstore: ['engine', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  engine: ['objstore', 'fsread', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  fsread: ['objstore', 'engine', 'nbd', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  nbd: ['objstore', 'fsread', 'backup', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  backup: ['engine', 'nbd', 'hydrate', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  hydrate: ['nbd', 'transfer', 'cluster', 'api', 'node', 'cli', 'lab'],
  transfer: ['objstore', 'engine', 'fsread', 'nbd', 'backup', 'hydrate', 'cluster', 'api', 'node', 'cli', 'lab'],
  cluster: ['objstore', 'fsread', 'nbd', 'backup', 'hydrate', 'api', 'node', 'cli', 'lab'],
  api: ['nbd', 'node', 'cli', 'lab'],
  node: ['cli', 'lab'],
  cli: [],
};

const roomRules = Object.entries(above)
  .filter(([, banned]) => banned.length > 0)
  .map(([room, banned]) => ({
    name: `${room}-imports-downward`,
    comment: `${room}/ may only import rooms below it (docs/layout.md)`,
    severity: 'error',
    from: { path: `^src/${room}/` },
    to: { path: `^src/(${banned.join('|')})/` },
  }));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'No import cycle between files (and so none between rooms)',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...roomRules,
    {
      name: 'cli-through-api-client',
      comment:
        'The CLI reaches a node only through the API client (src/api/client/); only `tessera serve` starts a node in-process',
      severity: 'error',
      from: { path: '^src/cli/', pathNot: '^src/cli/serve\\.ts$' },
      to: { path: ['^src/(engine|nbd|node|hydrate)/', '^src/api/(?!client/)'] },
    },
    {
      name: 'api-client-stands-alone',
      comment: 'The API client loads nothing of the server side, so callers stay light',
      severity: 'error',
      from: { path: '^src/api/client/' },
      to: { path: ['^src/(engine|nbd|node|hydrate|backup|cli|objstore)/', '^src/api/(?!client/)'] },
    },
    {
      name: 'rooms-through-their-face',
      comment:
        "Another room's files are reached through its index.ts face (util/ is a shelf of separate leaf files, each its own face)",
      severity: 'error',
      // The one exception: src/cli/key-ahead.ts derives a repository key while the CLI loads,
      // from backup/kdf.ts alone, since backup's face loads lmdb and the repository code.
      from: { path: '^src/([^/]+)/', pathNot: '^src/cli/key-ahead\\.ts$' },
      to: {
        path: '^src/([^/]+)/',
        pathNot: ['^src/$1/', '^src/[^/]+/index\\.ts$', '^src/api/client/index\\.ts$', '^src/util/'],
      },
    },
    {
      name: 'src-not-from-tests',
      comment: 'Product code never imports test code',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // swc reads TypeScript, type-only imports included (a type cycle is a design cycle too); the
    // TypeScript compiler's own API, which tsPreCompilationDeps would ask for, is not in TypeScript 7.0.
    tsPreCompilationDeps: false,
    parser: 'swc',
    exclude: { path: '(^|/)node_modules/' },
  },
};
