/** The CLI, including `tessera serve`, on the process (loaded by main.ts once the compile cache is on). */
import { runCli } from './run.ts';
import { readSecretFromTty } from './secret.ts';

const code = await runCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  writeBytes: (bytes) =>
    new Promise<void>((resolve, reject) => {
      // The callback reports a failed write (EPIPE) as the command's failure.
      if (process.stdout.listenerCount('error') === 0) process.stdout.on('error', () => {});
      const ok = process.stdout.write(bytes, (err) => (err ? reject(err) : undefined));
      if (ok) resolve();
      else process.stdout.once('drain', resolve);
    }),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
  stderrIsTty: process.stderr.isTTY === true,
  readSecret: process.stdin.isTTY ? (prompt) => readSecretFromTty(prompt) : undefined,
});
// Exit once the output is out, without waiting for idle keep-alive sockets or engine threads.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
