import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { cleanup, startEtcd } from '../helpers/index.ts';

after(cleanup);

test('etcd helper starts a real etcd that keeps its data across a kill -9 and a restart', async () => {
  const etcd = await startEtcd();
  // etcd3's default circuit breaker would refuse calls for a while after the outage.
  const client = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  try {
    await client.put('/t/k').value('v1');
    await etcd.kill();
    await assert.rejects(client.get('/t/k').string());
    await etcd.start();
    assert.equal(await client.get('/t/k').string(), 'v1');
  } finally {
    client.close();
    await etcd.stop();
  }
});
