/**
 * S3Backend against a real S3 server: Ceph's radosgw on a throwaway one-node cluster that this
 * file starts (test/helpers/s3.ts). The shared conformance suite, then what the world does wrong:
 * wrong credentials, a missing bucket, a gateway that dies, hangs or comes back.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { ObjstoreError, ObjstoreErrorCode, openBackend } from '../../src/objstore/index.ts';
import { S3Backend, openS3Backend, parseS3Url, s3OptionsFromEnv, type S3BackendOptions } from '../../src/objstore/s3.ts';
import { cleanup } from '../helpers/process.ts';
import { startS3Server, type S3Server } from '../helpers/s3.ts';
import { backendConformance } from './conformance.ts';

let server: S3Server;
const bucket = 'tessera-tests';
let prefixes = 0;

before(async () => {
  server = await startS3Server();
  await server.createBucket(bucket);
});
after(async () => {
  await server?.stop();
  await cleanup();
});

function optionsOf(s: S3Server, more: Partial<S3BackendOptions> = {}): S3BackendOptions {
  return {
    bucket,
    prefix: `repo-${++prefixes}`,
    endpoint: s.endpoint,
    region: s.region,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    ...more,
  };
}

/** Rejects with a ObjstoreError of `code` whose message matches every pattern; returns it. */
async function rejectsWith(promise: Promise<unknown>, code: string, ...patterns: RegExp[]): Promise<ObjstoreError> {
  let caught: ObjstoreError | undefined;
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof ObjstoreError, `a ObjstoreError, got ${String(err)}`);
    assert.equal(err.code, code, `code of: ${err.message}`);
    for (const p of patterns) assert.match(err.message, p);
    caught = err;
    return true;
  });
  return caught!;
}

const escape = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

backendConformance('S3Backend', { create: async () => new S3Backend(optionsOf(server)) });

describe('S3 store URLs and environment', () => {
  test('parseS3Url takes s3://BUCKET[/PREFIX] and refuses anything else', () => {
    assert.deepEqual(parseS3Url('s3://bkt'), { bucket: 'bkt', prefix: '' });
    assert.deepEqual(parseS3Url('s3://bkt/'), { bucket: 'bkt', prefix: '' });
    assert.deepEqual(parseS3Url('s3://my.bucket-1/a/b_c/'), { bucket: 'my.bucket-1', prefix: 'a/b_c' });
    for (const bad of ['s3://', 's3://b', 's3://Upper', 's3://bkt//x', 's3://bkt/a//b', 's3://bkt/../x', 's3://bkt/sp ace', 'http://bkt/x', '/srv/repo', `s3://bkt/${'x'.repeat(600)}`]) {
      assert.throws(() => parseS3Url(bad), (err: unknown) => err instanceof ObjstoreError && err.code === ObjstoreErrorCode.INVALID, bad);
    }
  });

  test('s3OptionsFromEnv reads the usual AWS variables; the S3-specific endpoint wins', () => {
    const o = s3OptionsFromEnv('s3://bkt/p', {
      AWS_ENDPOINT_URL: 'http://127.0.0.1:1',
      AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:2',
      AWS_DEFAULT_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'AK',
      AWS_SECRET_ACCESS_KEY: 'SK',
    });
    assert.deepEqual(o, { bucket: 'bkt', prefix: 'p', endpoint: 'http://127.0.0.1:2', region: 'eu-west-1', credentials: { accessKeyId: 'AK', secretAccessKey: 'SK' } });
    assert.equal(s3OptionsFromEnv('s3://bkt', { AWS_REGION: 'a', AWS_DEFAULT_REGION: 'b' }).region, 'a');
    assert.equal(s3OptionsFromEnv('s3://bkt', {}).credentials, undefined, 'no keys: the SDK chain decides');
    assert.throws(() => s3OptionsFromEnv('s3://bkt', { AWS_ACCESS_KEY_ID: 'AK' }), /AWS_SECRET_ACCESS_KEY is not set/);
    assert.throws(() => s3OptionsFromEnv('s3://bkt', { AWS_ENDPOINT_URL: '127.0.0.1:9000' }), /Bad S3 endpoint/);
  });

  test('openS3Backend works from the environment a user would set', async () => {
    const b = openS3Backend(`s3://${bucket}/from-env/`, { ...server.env });
    try {
      assert.equal(b.location, `s3://${bucket}/from-env`);
      await b.put('config', Buffer.from('hello'));
      assert.deepEqual(await b.get('config'), Buffer.from('hello'));
      assert.deepEqual(await b.list(''), [{ path: 'config', sizeBytes: 5 }]);
    } finally {
      await b.close();
    }
  });

  test('openBackend opens s3:// URLs with the AWS environment variables', async () => {
    const b = await openBackend(`s3://${bucket}/open-backend`, { ...server.env });
    try {
      assert.ok(b instanceof S3Backend);
      await b.put('tessera-repository', Buffer.from('{}'));
      assert.deepEqual(await b.stat('tessera-repository'), { path: 'tessera-repository', sizeBytes: 2 });
    } finally {
      await b.close();
    }
    await assert.rejects(openBackend('s3://Bad_Bucket/x'), (err: unknown) => err instanceof ObjstoreError && err.code === ObjstoreErrorCode.INVALID);
  });

  test('stores under different prefixes of one bucket do not see each other', async () => {
    const a = new S3Backend(optionsOf(server, { prefix: 'shared/a' }));
    const ab = new S3Backend(optionsOf(server, { prefix: 'shared/ab' }));
    const root = new S3Backend(optionsOf(server, { prefix: '' }));
    try {
      await a.put('snapshots/x', Buffer.from('a'));
      await ab.put('snapshots/x', Buffer.from('ab'));
      assert.deepEqual(await a.list(''), [{ path: 'snapshots/x', sizeBytes: 1 }]);
      assert.deepEqual(await ab.get('snapshots/x'), Buffer.from('ab'));
      assert.deepEqual(await root.get('shared/a/snapshots/x'), Buffer.from('a'));
      assert.equal(root.location, `s3://${bucket}`);
    } finally {
      await Promise.all([a.close(), ab.close(), root.close()]);
    }
  });
});

describe('S3Backend errors', () => {
  test('wrong credentials are OBJSTORE_STORAGE naming the endpoint and bucket, at once (no retries)', async () => {
    for (const credentials of [
      { accessKeyId: 'TSNOSUCHKEY000000000', secretAccessKey: server.secretAccessKey },
      { accessKeyId: server.accessKeyId, secretAccessKey: 'wrong-secret' },
    ]) {
      const b = new S3Backend(optionsOf(server, { credentials, retryDelayMs: 5000 }));
      try {
        const started = performance.now();
        const patterns = [/refused access/, escape(server.endpoint), escape(`s3://${bucket}/`), /InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|HTTP 403/];
        await rejectsWith(b.put('config', Buffer.from('x')), ObjstoreErrorCode.STORAGE, ...patterns);
        await rejectsWith(b.get('config'), ObjstoreErrorCode.STORAGE, ...patterns);
        await rejectsWith(b.list(''), ObjstoreErrorCode.STORAGE, ...patterns);
        await rejectsWith(b.stat('config'), ObjstoreErrorCode.STORAGE, /refused access/, escape(server.endpoint));
        await rejectsWith(b.delete('config'), ObjstoreErrorCode.STORAGE, ...patterns);
        assert.ok(performance.now() - started < 5000, 'a refusal is not retried (one retry would wait 2.5 s or more)');
      } finally {
        await b.close();
      }
    }
  });

  test('a missing bucket is OBJSTORE_NOT_FOUND naming the bucket, for every operation', async () => {
    const b = new S3Backend(optionsOf(server, { bucket: 'no-such-bucket' }));
    try {
      const patterns = [/No bucket no-such-bucket/, escape(server.endpoint)];
      await rejectsWith(b.put('config', Buffer.from('x')), ObjstoreErrorCode.NOT_FOUND, ...patterns);
      await rejectsWith(b.get('config'), ObjstoreErrorCode.NOT_FOUND, ...patterns);
      await rejectsWith(b.get('config', { offset: 0, length: 1 }), ObjstoreErrorCode.NOT_FOUND, ...patterns);
      await rejectsWith(b.list('snapshots/'), ObjstoreErrorCode.NOT_FOUND, ...patterns);
      await rejectsWith(b.stat('config'), ObjstoreErrorCode.NOT_FOUND, ...patterns);
      await rejectsWith(b.delete('config'), ObjstoreErrorCode.NOT_FOUND, ...patterns);
    } finally {
      await b.close();
    }
  });

  test('a missing object is OBJSTORE_NOT_FOUND naming the object and the store', async () => {
    const b = new S3Backend(optionsOf(server));
    try {
      await rejectsWith(b.get('keys/none'), ObjstoreErrorCode.NOT_FOUND, /No object keys\/none in s3:\/\/tessera-tests\/repo-/);
    } finally {
      await b.close();
    }
  });

  test('requests over inFlightMax wait, and over waitingMax are refused', async () => {
    const b = new S3Backend(optionsOf(server, { inFlightMax: 1, waitingMax: 1 }));
    try {
      await b.put('config', Buffer.from('x'));
      const [first, second, third] = await Promise.allSettled([b.get('config'), b.get('config'), b.get('config')]);
      assert.equal(first.status, 'fulfilled');
      assert.equal(second.status, 'fulfilled');
      assert.equal(third.status, 'rejected');
      assert.equal((third.reason as ObjstoreError).code, ObjstoreErrorCode.STORAGE);
      assert.match((third.reason as ObjstoreError).message, /Too many S3 requests waiting .* limit of 1/);
    } finally {
      await b.close();
    }
  });

  test('a closed backend refuses requests', async () => {
    const b = new S3Backend(optionsOf(server));
    await b.close();
    await rejectsWith(b.get('config'), ObjstoreErrorCode.INVALID, /closed/);
  });
});

describe('S3Backend when the gateway fails', () => {
  // A server of its own: these tests kill and freeze its gateway.
  let flaky: S3Server;
  before(async () => {
    flaky = await startS3Server();
    await flaky.createBucket(bucket);
  });
  after(() => flaky?.stop());

  test('a frozen gateway times out as OBJSTORE_STORAGE after the idle timeout, then works again when thawed', async () => {
    const b = new S3Backend(optionsOf(flaky, { idleTimeoutMs: 1000, attemptsMax: 2, retryDelayMs: 50 }));
    try {
      await b.put('config', Buffer.from('before'));
      flaky.freezeGateway();
      try {
        const started = performance.now();
        await rejectsWith(b.get('config'), ObjstoreErrorCode.STORAGE, /did not answer in time/, escape(flaky.endpoint), /after 2 attempts/);
        const ms = performance.now() - started;
        assert.ok(ms >= 1900 && ms < 30_000, `two attempts of 1 s each, took ${Math.round(ms)} ms`);
      } finally {
        flaky.thawGateway();
      }
      assert.deepEqual(await b.get('config'), Buffer.from('before'));
    } finally {
      await b.close();
    }
  });

  test('retries ride out a gateway restart', async () => {
    const b = new S3Backend(optionsOf(flaky, { attemptsMax: 30, retryDelayMs: 100, retryDelayMsMax: 200 }));
    try {
      const data = randomBytes(100_000);
      await b.put('snapshots/s', data);
      await flaky.killGateway();
      const reading = b.get('snapshots/s');
      const writing = b.put('snapshots/t', data);
      await new Promise((r) => setTimeout(r, 300));
      await flaky.startGateway();
      assert.deepEqual(await reading, data);
      await writing;
      assert.deepEqual(await b.get('snapshots/t'), data);
    } finally {
      await b.close();
    }
  });

  test('a gateway killed mid-way fails every request in flight and after as OBJSTORE_STORAGE, without a crash', async () => {
    const b = new S3Backend(optionsOf(flaky, { attemptsMax: 3, retryDelayMs: 50 }));
    try {
      await b.put('snapshots/small', Buffer.from('x'));
      // Large puts and gets in flight when the gateway dies.
      const big = randomBytes(32 * 1024 * 1024);
      await b.put('data/00/big', big);
      const inFlight = [
        ...Array.from({ length: 4 }, (_, i) => b.put(`data/00/p${i}`, big)),
        ...Array.from({ length: 4 }, () => b.get('data/00/big')),
      ];
      await new Promise((r) => setTimeout(r, 20));
      await flaky.killGateway();
      const results = await Promise.allSettled(inFlight);
      for (const r of results) {
        // A request the gateway finished before it died may have succeeded; none may fail otherwise.
        if (r.status === 'rejected') {
          assert.ok(r.reason instanceof ObjstoreError, `a ObjstoreError, got ${String(r.reason)}`);
          assert.equal(r.reason.code, ObjstoreErrorCode.STORAGE, r.reason.message);
          assert.match(r.reason.message, escape(flaky.endpoint));
        }
      }
      assert.ok(results.some((r) => r.status === 'rejected'), 'something was in flight when the gateway died');
      const patterns = [/Cannot reach S3 endpoint/, escape(flaky.endpoint), escape(`s3://${bucket}/`), /ECONNREFUSED/, /after 3 attempts/];
      await rejectsWith(b.get('snapshots/small'), ObjstoreErrorCode.STORAGE, ...patterns);
      await rejectsWith(b.put('snapshots/other', Buffer.from('y')), ObjstoreErrorCode.STORAGE, ...patterns);
      await rejectsWith(b.list(''), ObjstoreErrorCode.STORAGE, ...patterns);
      await rejectsWith(b.stat('snapshots/small'), ObjstoreErrorCode.STORAGE, ...patterns);
      await rejectsWith(b.delete('snapshots/small'), ObjstoreErrorCode.STORAGE, ...patterns);
    } finally {
      await b.close();
    }
  });
});
