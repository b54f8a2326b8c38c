/** Reading a password from the terminal without echoing it. */
import { ReadStream } from 'node:tty';

/**
 * Prompts on stderr and reads one line from the terminal on stdin with echo off. Resolves to
 * the line; rejects on Ctrl-C or Ctrl-D on an empty line.
 */
export function readSecretFromTty(prompt: string, stdin: ReadStream = process.stdin as ReadStream, stderr: NodeJS.WriteStream = process.stderr): Promise<string> {
  return new Promise((resolve, reject) => {
    stderr.write(prompt);
    const wasRaw = stdin.isRaw;
    stdin.setRawMode(true);
    stdin.resume();
    let line = '';
    const finish = (err: Error | null) => {
      stdin.off('data', onData);
      stdin.setRawMode(wasRaw);
      stdin.pause();
      stderr.write('\n');
      if (err) reject(err);
      else resolve(line);
    };
    const onData = (data: Buffer) => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(null);
        if (ch === '\u0003' || (ch === '\u0004' && line === '')) return finish(new Error('no password given'));
        if (ch === '\u007f' || ch === '\b') line = line.slice(0, -1);
        else if (ch >= ' ') line += ch;
      }
    };
    stdin.on('data', onData);
  });
}
