import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { defaultDataDir } from '../../src/cli/serve.ts';
import { runCli } from '../../src/cli/run.ts';
import { nbdOpen } from './nbd-handshake.ts';

const tesseraBin = fileURLToPath(new URL('../../bin/tessera', import.meta.url));
const packageVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Outcome of one CLI run. */
interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

const children = new Set<ChildProcess>();
const tempDirs: string[] = [];

after(() => {
  for (const child of children) child.kill('SIGKILL');
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-cli-'));
  tempDirs.push(dir);
  return dir;
}

/** Environment of the children: no TESSERA_API from the developer's shell. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (!('TESSERA_API' in extra)) delete env.TESSERA_API;
  return env;
}

/** Runs bin/tessera to completion. */
function tessera(args: string[], env: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(tesseraBin, args, { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs the CLI in this process (no node needed) and captures its output. */
async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env });
  return { code, stdout, stderr };
}

/** Checks a failure: exit `code`, nothing on stdout, exactly one `tessera: error:` line on stderr matching `pattern`. */
function assertFailure(o: Outcome, code: number, pattern: RegExp): void {
  assert.equal(o.code, code, `exit code; stderr: ${o.stderr}`);
  assert.equal(o.stdout, '');
  const lines = o.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `one line on stderr, got: ${o.stderr}`);
  assert.match(lines[0], /^tessera: error: /);
  assert.match(lines[0], pattern);
}

/** A TCP port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** A `tessera serve` child process, started on ephemeral ports. */
interface Served {
  child: ChildProcess;
  api: string;
  nbd: string;
  socket: string;
  dataDir: string;
  stderr(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const readyLine = /^tessera ready api=(http:\/\/127\.0\.0\.1:\d+) nbd=(127\.0\.0\.1:\d+) socket=(\S+)$/;

async function serve(dataDir: string): Promise<Served> {
  const socket = join(dataDir, 'nbd.sock');
  const child = spawn(tesseraBin, ['serve', '--data', dataDir, '--nbd-port', '0', '--api-port', '0', '--socket', socket], {
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal });
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within 60 s; stderr: ${stderr}`)), 60_000);
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
      if (stdout.includes('\n')) {
        clearTimeout(timer);
        resolve(stdout.slice(0, stdout.indexOf('\n')));
      }
    });
    exit.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited ${code} before it was ready; stderr: ${stderr}`));
    });
  });
  const m = readyLine.exec(line);
  assert.ok(m, `ready line: ${JSON.stringify(line)}`);
  assert.equal(m[3], socket);
  return { child, api: m[1], nbd: m[2], socket: m[3], dataDir, stderr: () => stderr, exit };
}

describe('cli without a node', () => {
  test('cli --help lists every command and exits 0', async () => {
    const o = await cli(['--help']);
    assert.equal(o.code, 0);
    assert.equal(o.stderr, '');
    for (const c of ['serve', 'disk create', 'disk list', 'disk info', 'disk resize', 'disk clone', 'disk rm', 'snap create', 'snap list', 'snap revert', 'snap rm', 'node info', 'compact', 'help']) {
      assert.match(o.stdout, new RegExp(`^  ${c}\\b`, 'm'), c);
    }
  });

  test('cli help CMD and CMD --help print that command\'s usage and exit 0', async () => {
    const a = await cli(['help', 'disk', 'create']);
    const b = await cli(['disk', 'create', '--help']);
    assert.equal(a.code, 0);
    assert.equal(b.code, 0);
    assert.equal(a.stdout, b.stdout);
    assert.match(a.stdout, /^Usage: tessera \[--api URL\] disk create NAME --size SIZE/);
    assert.match(a.stdout, /Examples:/);
    const group = await cli(['help', 'snap']);
    assert.equal(group.code, 0);
    assert.match(group.stdout, /snap revert DISK SNAP/);
    const serveHelp = await cli(['help', 'serve']);
    assert.match(serveHelp.stdout, /--nbd-port PORT/);
  });

  test('cli --version prints the package version and whether the native helpers are in use', async () => {
    const o = await cli(['--version']);
    assert.equal(o.code, 0);
    assert.equal(o.stdout, `tessera ${packageVersion}\nnative helpers: loaded\n`, 'the native helpers are built by npm install (apt-get install gcc libzstd-dev)');
    const off = await tessera(['--version'], { TESSERA_NATIVE: '0' });
    assert.equal(off.stdout, `tessera ${packageVersion}\nnative helpers: off (TESSERA_NATIVE=0)\n`);
  });

  test('cli without a command prints help on stderr and exits 2', async () => {
    const o = await cli([]);
    assert.equal(o.code, 2);
    assert.equal(o.stdout, '');
    assert.match(o.stderr, /^Usage: tessera/);
  });

  test('cli usage errors exit 2 with one line on stderr', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['frobnicate'], /unknown command 'frobnicate'/],
      [['disk'], /missing a command/],
      [['disk', 'explode'], /unknown command 'disk explode'/],
      [['disk', 'create'], /missing NAME/],
      [['disk', 'create', 'vm1'], /missing --size SIZE/],
      [['disk', 'create', 'vm1', '--size'], /option '--size' needs a value/],
      [['disk', 'create', 'vm1', '--size', '1GB'], /invalid size '1GB'/],
      [['disk', 'create', 'vm1', '--size', 'lots'], /invalid size 'lots'/],
      [['disk', 'create', 'vm1', '--size', '1000'], /not a multiple of 512/],
      [['disk', 'create', 'vm1', '--size', '1G', '--bogus'], /unknown option '--bogus'/],
      [['disk', 'create', 'vm1', 'vm2', '--size', '1G'], /unexpected argument 'vm2'/],
      [['disk', 'list', '--json=yes'], /option '--json' takes no value/],
      [['disk', 'resize', 'vm1', '--size', '-1G'], /value of option '--size' starts with '-'/],
      [['disk', 'resize', 'vm1', '--size=-1G'], /invalid size '-1G'/],
      [['disk', 'clone', 'vm1', 'vm2'], /expected DISK@SNAP/],
      [['disk', 'clone', 'vm1@', 'vm2'], /expected DISK@SNAP/],
      [['snap', 'create', 'vm1'], /missing SNAP/],
      [['disk', 'info', ''], /NAME must not be empty/],
      [['--api', 'not a url', 'disk', 'list'], /invalid API URL 'not a url'/],
      [['--api', 'ftp://x', 'disk', 'list'], /invalid API URL/],
      [['serve', '--api-port', '70000'], /invalid --api-port '70000'/],
      [['serve', '--nbd-port', 'x'], /invalid --nbd-port 'x'/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw'], /give one of --every DURATION and --cron EXPR/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '1h', '--cron', '@daily'], /give one of --every/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--every', '1h'], /missing --password-file FILE/],
      [['backup', 'schedule', 'add', 'vm1', '--password-file', '/etc/pw', '--every', '1h'], /missing --repo PATH/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '90'], /invalid --every '90': expected a positive whole number of s, m, h or d/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '0h'], /invalid --every '0h'/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '1h', '--keep-last', 'x'], /invalid --keep-last 'x'/],
      [['backup', 'schedule', 'add', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '1h', '--verify-read-data'], /--verify-read-data goes with --verify-every/],
      [['backup', 'schedule', 'add', 'vm1', 'vm1', '--repo', '/srv/b', '--password-file', '/etc/pw', '--every', '1h'], /disk vm1 is named twice/],
      [['backup', 'schedule', 'rm'], /missing ID/],
      [['backup', 'schedule'], /`tessera backup schedule` takes one of: add, list, rm/],
      [['snap', 'schedule', 'add', 'vm1', '--every', '15m'], /missing --keep N/],
      [['snap', 'schedule', 'add', 'vm1', '--every', '15m', '--keep', '0'], /missing --keep N \(at least 1\)/],
      [['snap', 'schedule', 'add', 'vm1', '--keep', '2'], /give one of --every/],
    ];
    for (const [args, pattern] of cases) assertFailure(await cli(args, { TESSERA_API: 'http://127.0.0.1:9' }), 2, pattern);
  });

  test('cli reports a node that is not running with the serve hint, exit 1', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    assertFailure(await cli(['--api', url, 'disk', 'list']), 1, new RegExp(`^tessera: error: cannot reach the Tessera node at ${url}: ECONNREFUSED; is \`tessera serve\` running\\?$`));
    // TESSERA_API is the default; --api after the command works too.
    assertFailure(await cli(['node', 'info'], { TESSERA_API: url }), 1, new RegExp(`cannot reach the Tessera node at ${url}`));
    assertFailure(await cli(['disk', 'list', '--api', url], { TESSERA_API: 'http://127.0.0.1:9' }), 1, new RegExp(`at ${url}:`));
  });

  test('commands that talk to a node load none of the backup code, nor the server, engine or node; backup commands do', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const src = new URL('../../src/', import.meta.url).href;
    // A fresh process per command line: the project's modules it loaded (a load hook sees the
    // ES modules), and how many lmdb and msgpackr modules.
    const loaded = async (args: string[]): Promise<{ packages: number; src: string[] }> => {
      const script = [
        "import { createRequire, registerHooks } from 'node:module';",
        'const seen = [];',
        'registerHooks({ load(url, context, next) { seen.push(url); return next(url, context); } });',
        `const { runCli } = await import(${JSON.stringify(new URL('../../src/cli/run.ts', import.meta.url).href)});`,
        'await runCli(process.argv.slice(1), { stdout: () => {}, stderr: () => {}, env: {} });',
        "const cache = Object.keys(createRequire(import.meta.url).cache);",
        'const packages = cache.filter((k) => /node_modules[\\/](lmdb|msgpackr)[\\/]/.test(k)).length;',
        `process.stdout.write(JSON.stringify({ packages, src: seen.filter((u) => u.startsWith(${JSON.stringify(src)})).map((u) => u.slice(${src.length})) }));`,
      ].join('\n');
      const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script, '--', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
      await new Promise((resolve) => child.on('close', resolve));
      assert.match(out, /^\{/, `the probe printed its findings: ${out}`);
      return JSON.parse(out);
    };
    // The client side of the API and the CLI's own modules only.
    const light = /^(cli|util|native)\/|^api\/(client\/|wire\.ts$)/;
    for (const args of [['--api', url, 'disk', 'list'], ['--api', url, 'snap', 'list', 'vm1'], ['--version'], ['--api', url, 'backup', 'create', 'vm1', '--repo', tempDir()], ['--api', url, 'backup', 'jobs'], ['--api', url, 'backup', 'job', 'cancel', '3f9a'], ['--api', url, 'backup', 'schedule', 'list'], ['--api', url, 'snap', 'schedule', 'list']]) {
      const { packages, src: modules } = await loaded(args);
      assert.equal(packages, 0, args.join(' '));
      assert.ok(modules.includes('api/client/api-client.ts') || args[0] === '--version', `${args.join(' ')} loads the client: ${modules.join(' ')}`);
      assert.deepEqual(modules.filter((m) => !light.test(m)), [], `${args.join(' ')} loads nothing of the server, engine, node or backup code`);
    }
    assert.ok((await loaded(['backup', 'list', '--repo', tempDir()])).packages > 0, 'backup list loads the repository code');
    assert.ok((await loaded(['--repo', tempDir(), 'backup', 'list'])).packages > 0, 'with its options first, too');
  });

  test('defaultDataDir is $XDG_DATA_HOME/tessera, else ~/.local/share/tessera', () => {
    assert.equal(defaultDataDir({ XDG_DATA_HOME: '/srv/data' }), '/srv/data/tessera');
    const fallback = join(homedir(), '.local', 'share', 'tessera');
    assert.equal(defaultDataDir({}), fallback);
    assert.equal(defaultDataDir({ XDG_DATA_HOME: '' }), fallback);
    // The XDG spec says to ignore relative paths.
    assert.equal(defaultDataDir({ XDG_DATA_HOME: 'relative/dir' }), fallback);
  });

  test('serve without --data and --socket uses $XDG_DATA_HOME/tessera and its nbd.sock', async () => {
    const xdg = tempDir();
    const child = spawn(tesseraBin, ['serve', '--nbd-port', '0', '--api-port', '0'], {
      env: childEnv({ XDG_DATA_HOME: xdg }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    let out = '';
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
      });
      exited.then(() => reject(new Error(`serve exited early: ${err}`)));
    });
    const dataDir = join(xdg, 'tessera');
    assert.match(line, new RegExp(`^tessera ready api=http://127\\.0\\.0\\.1:\\d+ nbd=127\\.0\\.0\\.1:\\d+ socket=${dataDir}/nbd\\.sock$`));
    assert.ok(existsSync(join(dataDir, 'tessera.lock')));
    child.kill('SIGINT');
    assert.equal(await exited, 0, err);
    assert.equal(out, line + '\n', 'nothing but the ready line on stdout');
  });

  test('bin/tessera reports a node that is not running, exit 1', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    assertFailure(await tessera(['--api', url, 'disk', 'list']), 1, /cannot reach the Tessera node at .*: ECONNREFUSED; is `tessera serve` running\?/);
  });
});

describe('cli against a running node', () => {
  let node: Served;
  let dataDir: string;
  const t = (args: string[]): Promise<Outcome> => tessera(['--api', node.api, ...args]);
  /** Runs a command that must succeed and returns its stdout. */
  const ok = async (args: string[]): Promise<string> => {
    const o = await t(args);
    assert.equal(o.code, 0, `tessera ${args.join(' ')}: ${o.stderr}`);
    assert.equal(o.stderr, '');
    return o.stdout;
  };

  before(async () => {
    dataDir = tempDir();
    node = await serve(dataDir);
  });

  after(async () => {
    if (node?.child.exitCode === null) node.child.kill('SIGKILL');
  });

  test('serve holds a lock with its pid and listens on the socket it announced', () => {
    assert.equal(readFileSync(join(dataDir, 'tessera.lock'), 'utf8').trim(), String(node.child.pid));
    assert.ok(existsSync(node.socket));
    assert.match(node.stderr(), /api=/);
  });

  test('a second serve on the same data dir fails with a clear message', async () => {
    const o = await tessera(['serve', '--data', dataDir, '--nbd-port', '0', '--api-port', '0', '--socket', join(dataDir, 'other.sock')]);
    assert.equal(o.code, 1);
    assert.equal(o.stdout, '');
    assert.match(o.stderr, new RegExp(`tessera: error: cannot start the node: data directory is in use by another Tessera node \\(pid ${node.child.pid}`));
  });

  test('disk commands create, list, show, resize, clone and delete disks', async () => {
    assert.equal(await ok(['disk', 'create', 'vm1', '--size', '1G']), 'Created disk vm1 (1.0 GiB)\n');
    assert.equal(await ok(['disk', 'create', 'small', '--size', '1.5M']), 'Created disk small (1.5 MiB)\n');

    const table = (await ok(['disk', 'list'])).split('\n');
    assert.match(table[0], /^NAME\s+SIZE\s+ALLOCATED\s+SNAPSHOTS\s+ORIGIN\s+CREATED$/);
    assert.ok(table.some((l) => /^small\s+1\.5 MiB\s+\S+ \S+\s+0\s+-\s+\d{4}-\d\d-\d\dT/.test(l)), table.join('\n'));
    assert.ok(table.some((l) => /^vm1\s+1\.0 GiB\s/.test(l)), table.join('\n'));

    const listed = JSON.parse(await ok(['disk', 'list', '--json']));
    const vm1 = listed.find((d: any) => d.name === 'vm1');
    assert.equal(vm1.sizeBytes, 1024 ** 3);

    const info = await ok(['disk', 'info', 'vm1']);
    assert.match(info, /^Name:\s+vm1$/m);
    assert.match(info, /^Size:\s+1\.0 GiB \(1073741824 bytes\)$/m);
    assert.deepEqual(JSON.parse(await ok(['disk', 'info', 'vm1', '--json'])).sizeBytes, 1024 ** 3);

    assert.equal(await ok(['disk', 'resize', 'vm1', '--size', '2GiB']), 'Resized disk vm1 to 2.0 GiB\n');
    assert.equal(JSON.parse(await ok(['disk', 'info', 'vm1', '--json'])).sizeBytes, 2 * 1024 ** 3);

    assert.equal(await ok(['snap', 'create', 'vm1', 'base']), 'Created snapshot vm1@base\n');
    assert.equal(await ok(['disk', 'clone', 'vm1@base', 'vm2']), 'Cloned vm1@base to disk vm2 (2.0 GiB)\n');
    assert.equal(JSON.parse(await ok(['disk', 'info', 'vm2', '--json'])).origin, 'vm1@base');
    assert.match(await ok(['disk', 'info', 'vm2']), /^Origin:\s+vm1@base$/m);

    assert.equal(await ok(['disk', 'rm', 'vm2']), 'Deleted disk vm2\n');
    assertFailure(await t(['disk', 'info', 'vm2']), 1, /vm2/);
  });

  test('snap commands create, list, revert and delete snapshots', async () => {
    await ok(['disk', 'create', 'db', '--size', '64M']);
    await ok(['snap', 'create', 'db', 's1']);
    await ok(['snap', 'create', 'db', 's2']);
    const table = (await ok(['snap', 'list', 'db'])).split('\n');
    assert.match(table[0], /^NAME\s+SIZE\s+CREATED\s+HLC\s+NBD EXPORT$/);
    assert.match(table[1], /^s1\s+64\.0 MiB\s+\S+\s+\d{18,20}\s+db@s1$/);
    assert.match(table[2], /^s2\s+64\.0 MiB\s+\S+\s+\d{18,20}\s+db@s2$/);
    const listed = JSON.parse(await ok(['snap', 'list', 'db', '--json']));
    assert.deepEqual(listed.map((s: any) => s.name), ['s1', 's2']);
    // Stamped by the node's clock, the later snapshot above the earlier.
    assert.ok(BigInt(listed[1].hlc) > BigInt(listed[0].hlc), `${listed[1].hlc} > ${listed[0].hlc}`);

    await ok(['disk', 'resize', 'db', '--size', '128M']);
    assert.equal(await ok(['snap', 'revert', 'db', 's1']), 'Reverted disk db to snapshot s1\n');
    assert.equal(JSON.parse(await ok(['disk', 'info', 'db', '--json'])).sizeBytes, 64 * 1024 ** 2);

    assert.equal(await ok(['snap', 'rm', 'db', 's2']), 'Deleted snapshot db@s2\n');
    assert.deepEqual(JSON.parse(await ok(['snap', 'list', 'db', '--json'])).map((s: any) => s.name), ['s1']);
  });

  test('node info and compact report the node', async () => {
    const info = JSON.parse(await ok(['node', 'info', '--json']));
    assert.equal(info.version, packageVersion);
    assert.equal(info.api, node.api);
    assert.equal(info.dataDir, dataDir);
    assert.equal(`${info.nbd.tcp.host}:${info.nbd.tcp.port}`, node.nbd);
    assert.equal(info.nbd.socket, node.socket);
    assert.equal(typeof info.stats.logBytes, 'number');
    const text = await ok(['node', 'info']);
    assert.match(text, new RegExp(`^NBD:\\s+${node.nbd}$`, 'm'));
    assert.match(text, new RegExp(`^Version:\\s+${packageVersion.replaceAll('.', '\\.')}$`, 'm'));
    assert.deepEqual(info.drive, { state: 'ok', error: null, sinceMs: null });
    assert.match(text, /^Drive:\s+ok$/m);
    // The node's clock, a new value each time asked: the text's was read after the JSON's.
    const clock = /^Clock \(HLC\):\s+(\d+)$/m.exec(text);
    assert.ok(clock !== null, text);
    assert.ok(BigInt(clock[1]!) > BigInt(info.hlc), `${clock[1]} > ${info.hlc}`);
    assert.match(await ok(['compact']), /^Compacted: \d+ segments? removed, .+ reclaimed, .+ rewritten\n$/);
  });

  test('failures exit 1 with the node\'s one-line reason', async () => {
    assertFailure(await t(['disk', 'info', 'ghost']), 1, /ghost/);
    assertFailure(await t(['disk', 'rm', 'ghost']), 1, /ghost/);
    assertFailure(await t(['snap', 'create', 'ghost', 's']), 1, /ghost/);
    await ok(['disk', 'create', 'dup', '--size', '1M']);
    assertFailure(await t(['disk', 'create', 'dup', '--size', '1M']), 1, /dup/);
    assertFailure(await t(['snap', 'rm', 'dup', 'nosnap']), 1, /nosnap/);
    assertFailure(await t(['disk', 'clone', 'dup@nosnap', 'dup2']), 1, /nosnap/);
    assertFailure(await t(['disk', 'create', 'bad', '--size', '12X']), 2, /invalid size '12X'/);
  });

  test('NBD exports are the disks (read-write) and their snapshots (read-only); a disk or snapshot in use cannot be deleted', async () => {
    await ok(['disk', 'create', 'held', '--size', '4M']);
    await ok(['snap', 'create', 'held', 'snap1']);
    const head = await nbdOpen(node.socket, 'held');
    assert.equal(head.sizeBytes, 4 * 1024 ** 2);
    assert.equal(head.flags & 2, 0, 'the head is writable');
    const snap = await nbdOpen(node.socket, 'held@snap1');
    assert.equal(snap.flags & 2, 2, 'a snapshot is read-only');
    await assert.rejects(nbdOpen(node.socket, 'held@nope'));
    await assert.rejects(nbdOpen(node.socket, 'nope'));
    try {
      assert.equal(JSON.parse(await ok(['node', 'info', '--json'])).nbd.connections, 2);
      assertFailure(await t(['disk', 'rm', 'held']), 1, /held.*in use|in use.*held/i);
      await head.close();
      // Only the snapshot export is open now: the disk is still in use, and so is the snapshot.
      assertFailure(await t(['disk', 'rm', 'held']), 1, /in use/i);
      assertFailure(await t(['snap', 'rm', 'held', 'snap1']), 1, /held@snap1.*in use/i);
    } finally {
      await snap.close();
      await head.close();
    }
    // The server releases a volume when it sees the disconnect; allow it a moment.
    let last: Outcome | null = null;
    for (let i = 0; i < 50; i++) {
      last = await t(['disk', 'rm', 'held']);
      if (last.code === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(last?.code, 0, last?.stderr);
  });

  test('SIGTERM shuts the node down gracefully, even with an NBD client connected: exit 0, lock and socket removed, API gone', async () => {
    const client = await nbdOpen(node.socket, 'vm1');
    node.child.kill('SIGTERM');
    const { code, signal } = await node.exit;
    assert.equal(signal, null);
    assert.equal(code, 0, node.stderr());
    assert.equal(existsSync(join(dataDir, 'tessera.lock')), false);
    assert.equal(existsSync(node.socket), false);
    assertFailure(await t(['disk', 'list']), 1, /cannot reach the Tessera node/);
    await client.close();
  });

  test('a restarted node finds the disks of the last run', async () => {
    node = await serve(dataDir);
    const names = JSON.parse(await ok(['disk', 'list', '--json'])).map((d: any) => d.name).sort();
    assert.deepEqual(names, ['db', 'dup', 'small', 'vm1']);
    node.child.kill('SIGINT');
    assert.equal((await node.exit).code, 0);
  });
});
