/**
 * The API client (src/api/client) against local servers: each typed method sends its route's
 * method, path and body; error replies keep the node's code; a backup's JSON lines come back as
 * events; and servers that misbehave (silent, not JSON, gone, cut mid-backup) are one clear
 * ClientError each.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { ApiClient, ClientError, type BackupEvent } from '../../../src/api/client/index.ts';

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function stop(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
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
      if (req.url === '/api/v1/bad') return res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'EXISTS', message: 'disk vm1 exists already' } }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ echo: JSON.parse(body || 'null') }));
    });
  });
  const url = await listen(server);
  try {
    const client = new ApiClient(url);
    assert.deepEqual(await client.request('POST', '/echo', { body: { name: 'vm1', size: 1 } }), { echo: { name: 'vm1', size: 1 } });
    assert.deepEqual(seen.at(-1), { method: 'POST', url: '/api/v1/echo', body: '{"name":"vm1","size":1}' });
    assert.equal(await client.request('DELETE', '/gone'), undefined);
    await assert.rejects(client.request('GET', '/bad'), { code: 'CLIENT_REFUSED', status: 409, nodeCode: 'EXISTS', message: 'disk vm1 exists already' });
    await assert.rejects(client.request('GET', '/html'), { code: 'CLIENT_BAD_REPLY', message: /unexpected reply .* not JSON/ });
    await assert.rejects(client.request('GET', '/silent', { timeoutMs: 200 }), { code: 'CLIENT_TIMEOUT', message: `the Tessera node at ${url} did not answer within 0.2 s` });
  } finally {
    await stop(server);
  }
  await assert.rejects(new ApiClient(url).request('GET', '/disks'), { code: 'CLIENT_UNREACHABLE', message: /^cannot reach the Tessera node at .*: ECONNREFUSED$/ });
  assert.throws(() => new ApiClient('not a url'), { code: 'CLIENT_BAD_URL' });
  assert.throws(() => new ApiClient('ftp://x'), { code: 'CLIENT_BAD_URL' });
});

test('API client: each typed method sends its route, names percent-encoded', async () => {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url}${body === '' ? '' : ` ${body}`}`);
      if (req.method === 'DELETE') return res.writeHead(204).end();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  const client = new ApiClient(await listen(server));
  try {
    await client.listDisks();
    await client.getDisk('a b');
    await client.createDisk({ name: 'vm1', sizeBytes: 512 });
    await client.resizeDisk('vm1', 1024);
    await client.cloneDisk('vm1', { snapshot: 's/1', name: 'vm2' });
    await client.deleteDisk('vm2');
    await client.listSnapshots('vm1');
    await client.createSnapshot('vm1', 's2');
    await client.deleteSnapshot('vm1', 's/1');
    await client.revertDisk('vm1', 's2');
    await client.snapshotGroup({ name: 'g', disks: ['vm1', 'vm3'] });
    await client.nodeInfo();
    await client.compact();
    await client.listInstantRestores();
    await client.getInstantRestore('r1');
    await client.startInstantRestore({ disk: 'r1', repo: '/srv/b', snapshot: 'ab12', password: 'pw' });
    await client.resumeInstantRestore('r1', { password: 'pw' });
    await client.cancelInstantRestore('r1');
    await client.startBackupJob({ disks: ['vm1'], repo: '/srv/b', password: 'pw' });
    await client.listBackupJobs();
    await client.listBackupJobs({ scope: 'node' });
    await client.getBackupJob('3f9a');
    await client.cancelBackupJob('3f9a', { scope: 'node' });
  } finally {
    await stop(server);
  }
  assert.deepEqual(seen, [
    'GET /api/v1/disks',
    'GET /api/v1/disks/a%20b',
    'POST /api/v1/disks {"name":"vm1","sizeBytes":512}',
    'POST /api/v1/disks/vm1/resize {"sizeBytes":1024}',
    'POST /api/v1/disks/vm1/clone {"snapshot":"s/1","name":"vm2"}',
    'DELETE /api/v1/disks/vm2',
    'GET /api/v1/disks/vm1/snapshots',
    'POST /api/v1/disks/vm1/snapshots {"name":"s2"}',
    'DELETE /api/v1/disks/vm1/snapshots/s%2F1',
    'POST /api/v1/disks/vm1/snapshots/s2/revert',
    'POST /api/v1/snapshots {"name":"g","disks":["vm1","vm3"]}',
    'GET /api/v1/node',
    'POST /api/v1/compact',
    'GET /api/v1/instant-restores',
    'GET /api/v1/instant-restores/r1',
    'POST /api/v1/instant-restores {"disk":"r1","repo":"/srv/b","snapshot":"ab12","password":"pw"}',
    'POST /api/v1/instant-restores/r1/resume {"password":"pw"}',
    'DELETE /api/v1/instant-restores/r1',
    'POST /api/v1/backups?follow=false {"disks":["vm1"],"repo":"/srv/b","password":"pw"}',
    'GET /api/v1/backup-jobs',
    'GET /api/v1/backup-jobs?scope=node',
    'GET /api/v1/backup-jobs/3f9a',
    'POST /api/v1/backup-jobs/3f9a/cancel?scope=node',
  ]);
});

test('API client: a backup run by the node streams its events; an error line, a refused request and a cut stream are ClientErrors', async () => {
  const outcome = { id: 'f'.repeat(64), name: 'vm1', incremental: false };
  const lines: Record<string, string[]> = {
    ok: [
      JSON.stringify({ event: 'snapshot', name: 'tessera-1' }),
      JSON.stringify({ event: 'progress', progress: { disk: 'vm1', bytesRead: 1, bytesToRead: 2 } }),
      JSON.stringify({ event: 'note', message: 'full backup of vm1' }),
      JSON.stringify({ event: 'done', outcomes: [outcome] }),
    ],
    failing: [JSON.stringify({ event: 'snapshot', name: 'tessera-2' }), JSON.stringify({ event: 'error', code: 'WRONG_PASSWORD', message: 'Wrong password' })],
    cut: [JSON.stringify({ event: 'snapshot', name: 'tessera-3' })],
  };
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const { disks } = JSON.parse(body) as { disks: string[] };
      const which = disks[0];
      if (which === 'busy') return res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'BUSY', message: 'A backup is running on this node already' } }));
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      // Split mid-line, as a socket may deliver it.
      const text = lines[which].join('\n') + '\n';
      res.write(text.slice(0, 10));
      setTimeout(() => {
        if (which === 'cut') {
          res.write(text.slice(10));
          setTimeout(() => res.destroy(), 20);
        } else res.end(text.slice(10));
      }, 20);
    });
  });
  const client = new ApiClient(await listen(server));
  const req = (disk: string) => ({ disks: [disk], repo: '/srv/b', password: 'pw' });
  try {
    const events: BackupEvent[] = [];
    const outcomes = await client.runBackup(req('ok'), (e) => {
      events.push(e);
    });
    assert.deepEqual(outcomes, [outcome]);
    assert.deepEqual(events.map((e) => e.event), ['snapshot', 'progress', 'note']);
    await assert.rejects(client.runBackup(req('failing')), (err: unknown) => err instanceof ClientError && err.code === 'CLIENT_REFUSED' && err.nodeCode === 'WRONG_PASSWORD' && err.message === 'Wrong password');
    await assert.rejects(client.runBackup(req('busy')), { code: 'CLIENT_REFUSED', status: 503, nodeCode: 'BUSY', message: 'A backup is running on this node already' });
    await assert.rejects(client.runBackup(req('cut')), { code: 'CLIENT_LOST', message: 'the node closed the connection before the backup was done' });
  } finally {
    await stop(server);
  }
});
