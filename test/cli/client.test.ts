/**
 * The CLI's API client against local servers that misbehave: one that never answers, one that
 * answers with something other than JSON, one that is gone. Each is one clear CliError.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { ApiClient } from '../../src/cli/client.ts';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('API client: JSON in and out, a silent node times out, a non-JSON reply and a closed port are one line each', async () => {
  const seen: { method: string; url: string; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, body });
      if (req.url === '/api/v1/silent') return; // never answers
      if (req.url === '/api/v1/html') return res.end('<html>');
      if (req.url === '/api/v1/gone') return res.writeHead(204).end();
      if (req.url === '/api/v1/bad') return res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'disk vm1 exists already' } }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ echo: JSON.parse(body || 'null') }));
    });
  });
  const url = await listen(server);
  try {
    const client = new ApiClient(url);
    assert.deepEqual(await client.request('POST', '/echo', { body: { name: 'vm1', size: 1 } }), { echo: { name: 'vm1', size: 1 } });
    assert.deepEqual(seen.at(-1), { method: 'POST', url: '/api/v1/echo', body: '{"name":"vm1","size":1}' });
    assert.equal(await client.request('DELETE', '/gone'), undefined);
    await assert.rejects(client.request('GET', '/bad'), { code: 'CLI_FAILED', message: 'disk vm1 exists already' });
    await assert.rejects(client.request('GET', '/html'), /unexpected reply .* not JSON/);
    await assert.rejects(client.request('GET', '/silent', { timeoutMs: 200 }), { code: 'CLI_FAILED', message: `the Tessera node at ${url} did not answer within 0.2 s` });
  } finally {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  await assert.rejects(new ApiClient(url).request('GET', '/disks'), { code: 'CLI_UNREACHABLE', message: /cannot reach the Tessera node at .*: is `tessera serve` running\?/ });
});
