/**
 * Starts the tests' S3 server by hand, for trying the S3 backend or the tessera CLI against it:
 *
 *   node_modules/.bin/node test/helpers/s3-server.ts [--bucket NAME]
 *
 * Prints the AWS environment variables that point a client at it, keeps running until Ctrl-C
 * (or SIGTERM), then kills the cluster and deletes its temp dir (kept with TESSERA_KEEP_TMP=1).
 */
import { parseArgs } from 'node:util';
import { startS3Server } from './s3.ts';

const { values } = parseArgs({ options: { bucket: { type: 'string', default: 'tessera' } } });
const server = await startS3Server();
await server.createBucket(values.bucket);
process.stdout.write(
  `# radosgw on a one-node Ceph cluster in ${server.dir}, started in ${(server.startupMs / 1000).toFixed(1)} s; Ctrl-C stops it and deletes it.\n` +
    Object.entries(server.env).map(([k, v]) => `export ${k}=${v}\n`).join('') +
    `# bucket ${values.bucket} is there: try  bin/tessera backup init --repo s3://${values.bucket}/repo\n` +
    `# daemon logs: ${server.dir}/log\n`,
);
// The daemons are children of this process; the harness kills them on SIGINT, SIGTERM and exit.
