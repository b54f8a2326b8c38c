/**
 * Global options (docs/cli.md, "Global options"): every command, `backup …` ones included,
 * takes --api URL before or after its words and behaves exactly as without it; --json goes
 * anywhere on the line of a command that prints JSON; --version and --help after any command.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { version } from '../../src/cli/index.ts';
import { allCommands, runCli } from '../../src/cli/run.ts';
import { cleanup, makeTempDir, run, tesseraBin } from '../helpers/index.ts';

after(cleanup);

/** Outcome of one in-process run. */
interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(args: string[], env: Record<string, string>): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const code = await runCli(args, { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), env });
  return { code, stdout, stderr };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/**
 * The command line of `name` that fails without side effects: missing arguments, no
 * repository, no password, a node that does not answer; `serve` is stopped by a bad port before
 * it starts anything.
 */
function harmless(name: string): string[] {
  // `lab show` and `lab down` take no argument: one too many stops them before they look at a lab.
  const extra = name === 'serve' ? ['--nbd-port', 'x'] : name === 'lab show' || name === 'lab down' ? ['unexpected'] : [];
  return [...name.split(' '), ...extra];
}

test('every command takes --api URL before or after its words, and does with it what it does without', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const env = { TESSERA_API: url };
  const commands = await allCommands();
  assert.ok(commands.some((c) => c.name === 'backup init') && commands.some((c) => c.name === 'serve'), 'the list holds the backup commands and serve');
  for (const cmd of commands) {
    const line = harmless(cmd.name);
    const plain = await cli(line, env);
    // Each fails (nothing runs), for its own reason: never an option it does not know.
    assert.notEqual(plain.code, 0, `tessera ${line.join(' ')} ran: ${plain.stdout}`);
    for (const args of [['--api', url, ...line], [...line, '--api', url], [...line, `--api=${url}`]]) {
      const o = await cli(args, env);
      assert.doesNotMatch(o.stderr, /unknown option/, `tessera ${args.join(' ')}`);
      assert.deepEqual(o, plain, `tessera ${args.join(' ')} does what tessera ${line.join(' ')} does`);
    }
  }
});

test('--json goes before or after the words of every command that prints JSON; --version and --help after any command', async () => {
  const url = `http://127.0.0.1:${await closedPort()}`;
  const env = { TESSERA_API: url };
  for (const cmd of await allCommands()) {
    const line = harmless(cmd.name);
    if (cmd.options.json !== undefined) {
      const after = await cli([...line, '--json'], env);
      assert.doesNotMatch(after.stderr, /unknown option/, `tessera ${line.join(' ')} --json`);
      assert.deepEqual(await cli(['--json', ...line], env), after, `tessera --json ${line.join(' ')}`);
    }
    const v = await cli([...line, '--version'], env);
    assert.equal(v.code, 0, `tessera ${line.join(' ')} --version: ${v.stderr}`);
    assert.match(v.stdout, new RegExp(`^tessera ${version().replaceAll('.', '\\.')}\n`));
    const h = await cli([...line, '-h'], env);
    assert.equal(h.code, 0, `tessera ${line.join(' ')} -h: ${h.stderr}`);
    assert.match(h.stdout, new RegExp(`^Usage: tessera .*${cmd.name}`));
    // Help shows --api where the command talks to a node.
    assert.equal(h.stdout.includes('--api URL'), cmd.usesApi, `help of ${cmd.name}`);
  }
});

test('bin/tessera --api URL backup init --repo R: a repository, whatever the --api', async () => {
  const dir = makeTempDir('tessera-global-');
  const url = `http://127.0.0.1:${await closedPort()}`;
  const repo = join(dir, 'repo');
  const env = { ...process.env, TESSERA_PASSWORD: 'global options', TESSERA_CACHE_DIR: join(dir, 'cache') };
  const r = await run(tesseraBin, ['--api', url, 'backup', 'init', '--repo', repo], { env, timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^Created backup repository [0-9a-f]{8} at ${repo} `));
});
