/**
 * `tessera transfer send` and `tessera transfer recv`: the transfer engine's plain file-to-file
 * form (docs/transfer.md). The engine loads only when one of them runs.
 */
import { readFile } from 'node:fs/promises';
import type { Command, Io, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { jsonOption, progressLine } from './output.ts';
import { formatSize, parseSize } from './size.ts';

const CLASSES = ['bulk', 'replication', 'interactive'] as const;
type ClassName = (typeof CLASSES)[number];

const secretOption: OptionSpec = {
  type: 'string',
  valueName: 'FILE',
  description: 'File holding a shared secret (its bytes, a final newline dropped): then the other end must hold the same',
};

/** Splits `HOST:PORT` (`[v6]:PORT` for IPv6). */
export function parseHostPort(text: string, option: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) throw usageError(`${option} must be HOST:PORT, got '${text}'`);
  return { host: m[1] ?? m[2], port };
}

async function readSecret(file: string | undefined): Promise<Buffer | null> {
  if (file === undefined) return null;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new CliError(CliErrorCode.FAILED, `cannot read the secret file ${file}: ${(err as Error).message}`);
  }
  const secret = bytes.at(-1) === 0x0a ? bytes.subarray(0, bytes.at(-2) === 0x0d ? -2 : -1) : bytes;
  if (secret.length === 0) throw usageError(`the secret file ${file} is empty`);
  return secret;
}

/** The DSCP code points by class from TESSERA_TRANSFER_DSCP (`bulk=8,replication=10,interactive=34`). */
export function parseDscpMap(text: string | undefined): Partial<Record<ClassName, number>> {
  const out: Partial<Record<ClassName, number>> = {};
  if (text === undefined || text.trim() === '') return out;
  for (const part of text.split(',')) {
    const [name, value] = part.split('=').map((s) => s.trim());
    const n = Number(value);
    if (!(CLASSES as readonly string[]).includes(name) || !/^\d+$/.test(value ?? '') || n > 63) {
      throw usageError(`TESSERA_TRANSFER_DSCP: '${part}' is not CLASS=CODEPOINT (classes ${CLASSES.join(', ')}, code points 0 to 63)`);
    }
    out[name as ClassName] = n;
  }
  return out;
}

function wholeNumber(text: string | undefined, option: string, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw usageError(`${option} must be a whole number from ${min} to ${max}, got '${text}'`);
  return n;
}

/** A TransferError as the CLI's one line. */
function failed(err: unknown): never {
  if (err instanceof Error && 'code' in err && typeof err.code === 'string' && err.code.startsWith('TRANSFER_')) {
    throw new CliError(CliErrorCode.FAILED, err.message.charAt(0).toLowerCase() + err.message.slice(1), { cause: err });
  }
  throw err;
}

function seconds(s: number | null): string {
  if (s === null) return '?';
  if (s < 90) return `${Math.ceil(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

const sendCommand: Command = {
  name: 'transfer send',
  args: ['FILE'],
  summary: 'Send a file to a `transfer recv` over several primed, paced connections; resumes what arrived before',
  options: {
    to: { type: 'string', valueName: 'HOST:PORT', description: 'The receiver' },
    connections: { type: 'string', valueName: 'N', description: 'Connections designated for the transfer, 1 to 16 (default 4)' },
    class: { type: 'string', valueName: 'CLASS', description: 'Service class: bulk (default), replication or interactive; sets the DSCP mark' },
    dscp: { type: 'string', valueName: 'N', description: "DSCP code point 0 to 63 instead of the class's" },
    'rate-max': { type: 'string', valueName: 'RATE', description: 'Highest rate, bytes a second (e.g. 50M)' },
    'retry-ms': { type: 'string', valueName: 'MS', description: 'How long to keep trying after a lost connection (default 30000)' },
    'no-prime': { type: 'boolean', description: 'Skip priming the connections before data' },
    'log-frames': { type: 'boolean', description: 'With --json: a line per data frame acknowledged, its network transit and receiver hold time' },
    'secret-file': secretOption,
    json: { ...jsonOption, description: 'Print progress and the report as JSON lines' },
  },
  examples: ['tessera transfer send vm1.img --to backup-site:7480', 'tessera transfer send vm1.img --to 10.0.0.2:7480 --connections 8 --class replication --json'],
  usesApi: false,
  async run({ args: [file], values, io }) {
    if (typeof values.to !== 'string') throw usageError('missing --to HOST:PORT');
    const { host, port } = parseHostPort(values.to, '--to');
    const className = (values.class ?? 'bulk') as string;
    if (!(CLASSES as readonly string[]).includes(className)) throw usageError(`--class must be one of ${CLASSES.join(', ')}, got '${className}'`);
    const map = parseDscpMap(io.env.TESSERA_TRANSFER_DSCP);
    const dscp = wholeNumber(values.dscp as string | undefined, '--dscp', 0, 63) ?? map[className as ClassName];
    const connections = wholeNumber(values.connections as string | undefined, '--connections', 1, 16);
    const retryMs = wholeNumber(values['retry-ms'] as string | undefined, '--retry-ms', 0, 86_400_000);
    const rateMax = values['rate-max'] === undefined ? undefined : parseSize(values['rate-max'] as string);
    if (rateMax !== undefined && rateMax <= 0) throw usageError('--rate-max must be above 0');
    const secret = await readSecret(values['secret-file'] as string | undefined);
    const { sendFile } = await import('../transfer/index.ts');
    const progress = progressLine(io);
    const json = values.json === true;
    let report;
    try {
      report = await sendFile({
        file,
        host,
        port,
        connections,
        className: className as ClassName,
        dscp,
        secret,
        rateMax,
        retryMs,
        prime: values['no-prime'] !== true,
        logFrames: values['log-frames'] === true && values.json === true,
        onEvent: (e) => {
          if (json) {
            io.stdout(JSON.stringify(e) + '\n');
            return;
          }
          if (e.event === 'progress') {
            const pct = e.sizeBytes === 0 ? 100 : Math.floor((100 * e.bytesDone) / e.sizeBytes);
            progress.update(`${formatSize(e.bytesDone)} of ${formatSize(e.sizeBytes)} (${pct}%), ${formatSize(e.rateBytesPerSecond)}/s, ETA ${seconds(e.etaSeconds)}, ${e.connectionsActive} connections`);
          } else if (e.event === 'retry') io.stderr(`tessera: ${e.message}; trying again\n`);
        },
      });
    } catch (err) {
      progress.done();
      failed(err);
    }
    progress.done();
    if (json) {
      io.stdout(JSON.stringify(report) + '\n');
      return;
    }
    const resumed = report.bytesSkipped > 0 ? ` (${formatSize(report.bytesSkipped)} were there already)` : '';
    io.stdout(
      `Sent ${report.name} (${formatSize(report.sizeBytes)}) in ${report.seconds.toFixed(1)} s, ${formatSize(report.rateBytesPerSecond)}/s over ${report.connectionsActiveMax} of ${report.connections} connections${resumed}; ` +
        `latency p50: network ${report.transitMs.p50} ms, receiver ${report.holdMs.p50} ms; sha256 ${report.sha256}\n`,
    );
  },
};

const recvCommand: Command = {
  name: 'transfer recv',
  args: [],
  summary: 'Receive files sent by `transfer send` into a directory, until stopped',
  options: {
    listen: { type: 'string', valueName: 'HOST:PORT', description: 'Address to listen on (port 0: any free one, printed)' },
    dir: { type: 'string', valueName: 'DIR', description: 'Directory received files land in, once complete and verified' },
    'secret-file': secretOption,
    json: { ...jsonOption, description: 'Print events as JSON lines' },
  },
  examples: ['tessera transfer recv --listen 0.0.0.0:7480 --dir /srv/images', 'tessera transfer recv --listen 127.0.0.1:0 --dir ./in --json'],
  usesApi: false,
  async run({ values, io }) {
    if (typeof values.listen !== 'string') throw usageError('missing --listen HOST:PORT');
    if (typeof values.dir !== 'string') throw usageError('missing --dir DIR');
    const { host, port } = parseHostPort(values.listen, '--listen');
    const secret = await readSecret(values['secret-file'] as string | undefined);
    const dscp = parseDscpMap(io.env.TESSERA_TRANSFER_DSCP);
    const testHoldMs = wholeNumber(io.env.TESSERA_TRANSFER_TEST_HOLD_MS || undefined, 'TESSERA_TRANSFER_TEST_HOLD_MS', 0, 60_000);
    const { TransferReceiver } = await import('../transfer/index.ts');
    const { stat } = await import('node:fs/promises');
    const st = await stat(values.dir).catch(() => null);
    if (st === null || !st.isDirectory()) throw new CliError(CliErrorCode.FAILED, `${values.dir} is not a directory`);
    const receiver = new TransferReceiver({ dir: values.dir, secret, dscp, testHoldMs });
    const json = values.json === true;
    const print = (event: object, text: string, out: Io['stdout'] = io.stdout) => out(json ? JSON.stringify(event) + '\n' : text + '\n');
    receiver.on('received', (r) =>
      print({ event: 'received', ...r }, `Received ${r.name} (${formatSize(r.sizeBytes)}) in ${r.seconds.toFixed(1)} s${r.bytesResumed > 0 ? `, ${formatSize(r.bytesResumed)} of it before` : ''}; sha256 ${r.sha256}`),
    );
    receiver.on('failed', (f) => print({ event: 'failed', ...f }, `Failed to receive ${f.name}: ${f.message}`));
    let bound;
    try {
      bound = await receiver.listen(host, port);
    } catch (err) {
      throw new CliError(CliErrorCode.FAILED, `cannot listen on ${values.listen}: ${(err as Error).message}`);
    }
    print({ event: 'listening', host: bound.host, port: bound.port }, `listening ${bound.host.includes(':') ? `[${bound.host}]` : bound.host}:${bound.port}`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await receiver.close();
  },
};

/** The transfer commands. */
export const transferCommands: Command[] = [sendCommand, recvCommand];
