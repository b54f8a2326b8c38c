/**
 * The OpenAPI 3.1 description of the HTTP API, written by hand so that it says what the API
 * promises rather than what the code happens to do. A test checks that it names exactly the
 * routes the router serves.
 */
import { instantRestorePaths, instantRestoreSchemas } from './instant-restore.ts';
import { backupPaths, backupSchemas } from './backups.ts';
import { scrubPaths, scrubSchemas } from './scrub.ts';
import { schedulePathsDoc, scheduleSchemas } from './schedules.ts';
import { importPaths, importSchemas } from './import.ts';
import { wireObject } from './schema.ts';
import { ApiErrorCode } from './client/wire.ts';
import type {
  CloneRequest,
  ClusterNode,
  ClusterStatus,
  DiskLease,
  CompactStats,
  CreateDiskRequest,
  CreateSnapshotRequest,
  DiskInfo,
  DriveHealth,
  ErrorBody,
  ExtentRun,
  ExtentsReply,
  GroupSnapshotRequest,
  NbdEndpoints,
  NodeInfo,
  NodeClusterInfo,
  CopyToDelete,
  NodeSpace,
  ResizeRequest,
  LatencyProfile,
  LatencyDistribution,
  SetLatencyProfileRequest,
  SnapshotInfo,
  StoreStats,
  TrimRequest,
} from './client/wire.ts';

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });

const nameParam = { name: 'name', in: 'path', required: true, description: 'Disk name', schema: { type: 'string' } };
const snapParam = { name: 'snap', in: 'path', required: true, description: 'Snapshot name', schema: { type: 'string' } };
const queryBytes = (name: string, required: boolean, description: string) => ({ name, in: 'query', required, description, schema: { type: 'integer', minimum: 0 } });
const octets = (description: string) => ({ description, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } });

/** Error responses every route that takes a body can give. */
const bodyErrors = {
  '400': errorRef('BadRequest'),
  '413': errorRef('BodyTooLarge'),
  '415': errorRef('UnsupportedMediaType'),
};

/** Error responses of every route. */
const commonErrors = {
  '500': errorRef('Internal'),
  '503': errorRef('Unavailable'),
};

const resizeOperation = (operationId: string, summary: string) => ({
  operationId,
  summary,
  description: 'Grows or shrinks the disk. Shrinking drops the data past the new end.',
  parameters: [nameParam],
  requestBody: { required: true, ...json(ref('ResizeRequest')) },
  responses: {
    '200': { description: 'The resized disk', ...json(ref('DiskInfo')) },
    ...bodyErrors,
    '404': errorRef('NotFound'),
    '409': errorRef('Conflict'),
    '507': errorRef('NoSpace'),
    ...commonErrors,
  },
});

const errorResponse = (description: string) => ({ description, ...json(ref('Error')) });

/** The document served at GET /api/v1/openapi.json. */
export const openApiDocument = {
  openapi: '3.1.0',
  info: {
    title: 'Tessera node API',
    version: '1',
    description:
      'Manages the disks and snapshots of one Tessera node. Sizes are integers in bytes. Every ' +
      'error has a JSON body `{"error": {"code", "message", "requestId"}}`; `code` is stable, `message` is for people, ' +
      '`requestId` (also the `x-request-id` header of every reply; a client may send its own) finds the error in the node log.',
  },
  servers: [{ url: '/' }],
  paths: {
    '/api/v1/disks': {
      get: {
        operationId: 'listDisks',
        summary: 'List disks',
        responses: { '200': { description: 'All disks, by name', ...json({ type: 'array', items: ref('DiskInfo') }) }, ...commonErrors },
      },
      post: {
        operationId: 'createDisk',
        summary: 'Create an empty (thin) disk',
        requestBody: { required: true, ...json(ref('CreateDiskRequest')) },
        responses: {
          '201': { description: 'The new disk', headers: { Location: { schema: { type: 'string' } } }, ...json(ref('DiskInfo')) },
          ...bodyErrors,
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}': {
      get: {
        operationId: 'getDisk',
        summary: 'Describe a disk',
        parameters: [nameParam],
        responses: { '200': { description: 'The disk', ...json(ref('DiskInfo')) }, '404': errorRef('NotFound'), ...commonErrors },
      },
      patch: {
        ...resizeOperation('patchDisk', 'Resize a disk, or (in a cluster) change its replica count'),
        description:
          'With `sizeBytes`: grows or shrinks the disk (same as POST .../resize); shrinking drops the data past the new end. ' +
          'With `replicas` (a cluster only, `disk set`): the new replica count, 1 to 5; the controller adds or drops replicas to meet it, the disk online. ' +
          'A count the nodes up cannot hold is refused with 409 POLICY_UNMET.',
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: { sizeBytes: { type: 'integer', minimum: 0 }, replicas: { type: 'integer', minimum: 1, maximum: 5 } },
          }),
        },
      },
      delete: {
        operationId: 'deleteDisk',
        summary: 'Delete a disk and its snapshots',
        description: 'In a cluster: answered once every node up that held a copy deleted it; a copy a node could not delete (a client of that node has it open) is a 409 IN_USE naming the node, the disk gone from the cluster all the same.',
        parameters: [nameParam],
        responses: {
          '204': { description: 'Deleted' },
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/latency-profile': {
      put: {
        operationId: 'setLatencyProfile',
        summary: "Give a disk a device's latency (a single node)",
        description:
          'Every read, write, trim, zeroing and flush of the disk, over NBD and the data routes, answers no sooner than the emulated device would: ' +
          'a service time drawn from the profile, after a wait for one of its `parallel` slots (docs/latency.md). Kept in the node\'s metadata across restarts. ' +
          'A node in a cluster refuses it with 400 INVALID.',
        parameters: [nameParam],
        requestBody: { required: true, ...json(ref('SetLatencyProfileRequest')) },
        responses: {
          '200': { description: 'The disk', ...json(ref('DiskInfo')) },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          ...commonErrors,
        },
      },
      delete: {
        operationId: 'removeLatencyProfile',
        summary: "Remove a disk's latency profile",
        parameters: [nameParam],
        responses: { '200': { description: 'The disk', ...json(ref('DiskInfo')) }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), '409': errorRef('Conflict'), ...commonErrors },
      },
    },
    '/api/v1/disks/{name}/resize': {
      post: resizeOperation('resizeDisk', 'Resize a disk'),
    },
    '/api/v1/disks/{name}/clone': {
      post: {
        operationId: 'cloneDisk',
        summary: 'Create a new disk from a snapshot of this disk',
        parameters: [nameParam],
        requestBody: { required: true, ...json(ref('CloneRequest')) },
        responses: {
          '201': { description: 'The new disk', headers: { Location: { schema: { type: 'string' } } }, ...json(ref('DiskInfo')) },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/snapshots': {
      get: {
        operationId: 'listSnapshots',
        summary: "List a disk's snapshots, oldest first",
        parameters: [nameParam],
        responses: {
          '200': { description: 'The snapshots', ...json({ type: 'array', items: ref('SnapshotInfo') }) },
          '404': errorRef('NotFound'),
          ...commonErrors,
        },
      },
      post: {
        operationId: 'createSnapshot',
        summary: 'Take a snapshot of the disk as it is now',
        parameters: [nameParam],
        requestBody: { required: true, ...json(ref('CreateSnapshotRequest')) },
        responses: {
          '201': { description: 'The new snapshot', headers: { Location: { schema: { type: 'string' } } }, ...json(ref('SnapshotInfo')) },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/snapshots/{snap}': {
      delete: {
        operationId: 'deleteSnapshot',
        summary: 'Delete a snapshot',
        parameters: [nameParam, snapParam],
        responses: {
          '204': { description: 'Deleted' },
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/lease': {
      get: {
        operationId: 'getDiskLease',
        summary: "In a cluster: the disk's owner, epoch and the time its owner's lease has left",
        description: 'The owner and head from the node\'s cache of etcd; `ttlSeconds` asked of etcd. A node without etcd answers 400 INVALID.',
        parameters: [nameParam],
        responses: { '200': { description: 'The lease', ...json(ref('DiskLease')) }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), ...commonErrors },
      },
    },
    '/api/v1/disks/{name}/lease/break': {
      post: {
        operationId: 'breakDiskLease',
        summary: "In a cluster: move the disk's head to its next healthy replica at a new epoch, even while the owner's lease lives",
        description:
          'For an operator who knows the owner is dead. Takes no request body. The old head leaves the chain (as a node down does); if it is alive it is fenced by the new epoch ' +
          'and comes back as a replica catching up. 409 POLICY_UNMET when no other healthy replica is up to take over.',
        parameters: [nameParam],
        responses: { '200': { description: 'The lease after the break', ...json(ref('DiskLease')) }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), '409': errorRef('Conflict'), ...commonErrors },
      },
    },
    '/api/v1/disks/{name}/snapshots/{snap}/revert': {
      post: {
        operationId: 'revertDisk',
        summary: 'Make the disk read as the snapshot (the snapshot is kept)',
        description: 'Takes no request body.',
        parameters: [nameParam, snapParam],
        responses: {
          '200': { description: 'The reverted disk', ...json(ref('DiskInfo')) },
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/snapshots/{snap}/extents': {
      get: {
        operationId: 'getSnapshotExtents',
        summary: "A snapshot's allocation (data, zero, hole), or with `since` the runs changed since another snapshot of the disk",
        description:
          'Runs cover the range exactly, in order, adjacent runs of one type merged. A reply lists at most 65536 runs by default; ' +
          'when it stops early, `next` says where to continue (ask again with `offset=next`).',
        parameters: [
          nameParam,
          snapParam,
          { name: 'since', in: 'query', required: false, description: 'Report changes since this snapshot of the same disk (512-byte granularity)', schema: { type: 'string' } },
          queryBytes('offset', false, 'First byte (default 0)'),
          queryBytes('length', false, 'Bytes to cover (default: to the end)'),
        ],
        responses: {
          '200': { description: 'The runs', ...json(ref('ExtentsReply')) },
          '400': errorRef('BadRequest'),
          '404': errorRef('NotFound'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/snapshots/{snap}/data': {
      get: {
        operationId: 'readSnapshotData',
        summary: "Read a range of a snapshot's bytes",
        description: 'At most 16 MiB per request by default (400 BAD_REQUEST beyond it); the body is streamed.',
        parameters: [nameParam, snapParam, queryBytes('offset', true, 'First byte'), queryBytes('length', true, 'Bytes to read')],
        responses: {
          '200': octets('The bytes, exactly `length` of them'),
          '400': errorRef('BadRequest'),
          '404': errorRef('NotFound'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/data': {
      put: {
        operationId: 'writeDiskData',
        summary: 'Write bytes to a disk at an offset',
        description: 'The body (`application/octet-stream`, with a Content-Length, at most 16 MiB by default) is written at `offset`.',
        parameters: [nameParam, queryBytes('offset', true, 'Where the body goes')],
        requestBody: { required: true, ...octets('The bytes') },
        responses: {
          '204': { description: 'Written' },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/trim': {
      post: {
        operationId: 'trimDisk',
        summary: 'Deallocate a range of a disk: it reads as zeroes afterwards',
        parameters: [nameParam],
        requestBody: { required: true, ...json(ref('TrimRequest')) },
        responses: {
          '204': { description: 'Trimmed' },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/disks/{name}/flush': {
      post: {
        operationId: 'flushDisk',
        summary: 'Make everything written so far durable (as an NBD FLUSH)',
        description: 'Takes no request body.',
        parameters: [nameParam],
        responses: { '204': { description: 'Durable' }, '404': errorRef('NotFound'), ...commonErrors },
      },
    },
    '/api/v1/snapshots': {
      post: {
        operationId: 'createGroupSnapshot',
        summary: 'Snapshot several disks at the same instant (a consistency group)',
        description:
          'One engine operation: every snapshot holds the same writes. Any refused disk (unknown, named twice, snapshot name taken) creates none. ' +
          'In a cluster it runs at the node that heads every disk, through each disk\'s chain, crash-consistent across the disks; disks with different heads are refused (409 POLICY_UNMET, naming each disk\'s head).',
        requestBody: { required: true, ...json(ref('GroupSnapshotRequest')) },
        responses: {
          '201': { description: 'The new snapshots, in the order of `disks`', ...json({ type: 'array', items: ref('SnapshotInfo') }) },
          ...bodyErrors,
          '404': errorRef('NotFound'),
          '409': errorRef('Conflict'),
          '507': errorRef('NoSpace'),
          ...commonErrors,
        },
      },
    },
    '/api/v1/node': {
      get: {
        operationId: 'getNode',
        summary: 'Describe the node: version, data directory, NBD endpoints, space figures',
        responses: { '200': { description: 'The node', ...json(ref('NodeInfo')) }, ...commonErrors },
      },
    },
    '/api/v1/cluster': {
      get: {
        operationId: 'getCluster',
        summary: "List the cluster's nodes: state, zone, endpoints, controller, space",
        description:
          'Every member of the cluster, up (its etcd lease lives) or down, from the node\'s cache of etcd: it answers while etcd is unreachable, with what it saw last. ' +
          'A node started without etcd answers with itself alone (id `local`, up, controller).',
        responses: { '200': { description: 'The nodes', ...json(ref('ClusterStatus')) }, ...commonErrors },
      },
    },
    '/api/v1/nodes/{id}/drain': {
      post: {
        operationId: 'drainNode',
        summary: "Drain a node: move each of its replicas to other nodes, the disks online (`node drain`)",
        description: 'Marks the member draining: it takes no new replica, and the controller places a replacement for each of its replicas, removing the drained one once the replacement is healthy.',
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '202': { description: 'Draining', ...json({ type: 'object', properties: { node: { type: 'string' }, state: { type: 'string' } } }) }, '404': errorRef('NotFound'), ...commonErrors },
      },
    },
    '/api/v1/nodes/{id}': {
      delete: {
        operationId: 'removeNode',
        summary: 'Forget a drained or dead node (`node rm`)',
        description: "Refused (400 INVALID) for a node that is up and holds replicas (drain it first) or holds a disk's last healthy replica. A dead node's replicas are rebuilt elsewhere at once.",
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '204': { description: 'Forgotten' }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), ...commonErrors },
      },
    },
    '/api/v1/compact': {
      post: {
        operationId: 'compact',
        summary: 'Run one compaction pass over the write log and report what it did',
        description: 'Takes no request body. May take a long time on a large store.',
        responses: { '200': { description: 'What the pass did', ...json(ref('CompactStats')) }, '409': errorRef('Conflict'), ...commonErrors },
      },
    },
    '/api/v1/openapi.json': {
      get: {
        operationId: 'getOpenApi',
        summary: 'This document',
        responses: { '200': { description: 'OpenAPI 3.1 document', ...json({ type: 'object' }) } },
      },
    },
    ...instantRestorePaths,
    ...backupPaths,
    ...scrubPaths,
    ...schedulePathsDoc,
    ...importPaths,
  },
  components: {
    schemas: {
      DiskInfo: wireObject<DiskInfo>()({
        required: ['name', 'sizeBytes', 'allocatedBytes', 'snapshots', 'origin', 'createdMs'],
        properties: {
          name: { type: 'string', description: 'Unique name; also the NBD export name' },
          sizeBytes: { type: 'integer', description: 'Virtual size in bytes, a multiple of 512' },
          allocatedBytes: { type: 'integer', description: 'Bytes of data the disk references (thin)' },
          snapshots: { type: 'array', items: { type: 'string' }, description: 'Snapshot names, oldest first' },
          origin: { type: ['string', 'null'], description: '`DISK@SNAP` the disk was cloned from' },
          createdMs: { type: 'integer', description: 'Creation time, ms since the epoch' },
          replicas: {
            type: 'array',
            description: 'In a cluster: the replicas in chain order, head first',
            items: {
              type: 'object',
              required: ['node', 'role', 'state'],
              properties: {
                node: { type: 'string' },
                role: { type: 'string', enum: ['head', 'middle', 'tail'] },
                state: { type: 'string', enum: ['healthy', 'rebuilding', 'catching-up', 'stale'] },
              },
            },
          },
          epoch: { type: 'integer', description: 'In a cluster: grows at every change of the replica set or head' },
          policy: {
            type: 'object',
            description: 'In a cluster: the placement policy',
            required: ['replicas', 'failureDomain'],
            properties: { replicas: { type: 'integer', minimum: 1, maximum: 5 }, failureDomain: { type: 'string', enum: ['node', 'zone'] } },
          },
          latencyProfile: { oneOf: [ref('LatencyProfile'), { type: 'null' }], description: 'On a single node: the device latency the disk emulates, or null (docs/latency.md)' },
        },
      }),
      LatencyDistribution: wireObject<LatencyDistribution>()({
        required: ['medianUs', 'p99Us'],
        additionalProperties: false,
        description: 'A log-normal service time, by its median and 99th percentile',
        properties: {
          medianUs: { type: 'number', minimum: 0, maximum: 86400e6, description: 'Median, µs' },
          p99Us: { type: 'number', minimum: 0, maximum: 86400e6, description: '99th percentile, µs; at least the median' },
        },
      }),
      LatencyProfile: wireObject<LatencyProfile>()({
        required: ['name', 'parallel', 'read', 'write'],
        additionalProperties: false,
        description: 'A device\'s latency; also the file format of `disk set --latency-profile FILE`',
        properties: {
          name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', description: 'hdd, ssd, nvme, or a custom profile\'s own name (not none)' },
          description: { type: 'string', maxLength: 1000 },
          parallel: { type: 'integer', minimum: 1, maximum: 1024, description: 'Requests the device serves at once; more wait for a slot' },
          read: ref('LatencyDistribution'),
          write: { ...ref('LatencyDistribution'), description: 'Writes, trims and writes of zeroes' },
          sequential: { ...ref('LatencyDistribution'), description: 'A read or write that starts where the previous request ended' },
          flush: { ...ref('LatencyDistribution'), description: 'A flush, and a FUA write on top of its write' },
          bytesPerSecond: { type: 'number', minimum: 1, description: 'Transfer rate: a request takes length / rate more' },
        },
      }),
      SetLatencyProfileRequest: wireObject<SetLatencyProfileRequest>()({
        required: ['profile'],
        additionalProperties: false,
        properties: { profile: { oneOf: [{ type: 'string', enum: ['hdd', 'ssd', 'nvme'] }, ref('LatencyProfile')] } },
      }),
      SnapshotInfo: wireObject<SnapshotInfo>()({
        required: ['name', 'disk', 'sizeBytes', 'seq', 'createdMs', 'hlc'],
        properties: {
          name: { type: 'string' },
          disk: { type: 'string' },
          sizeBytes: { type: 'integer', description: 'Size of the disk when the snapshot was taken' },
          seq: { type: 'integer', description: 'Write log sequence number the snapshot stands at' },
          createdMs: { type: 'integer' },
          hlc: {
            type: ['string', 'null'],
            pattern: '^(0|[1-9][0-9]{0,19})$',
            description: "The hybrid logical clock's value when it was taken, a decimal 64-bit integer (in a cluster the head's, the same on every replica); null for a snapshot taken before stamps existed",
          },
        },
      }),
      StoreStats: wireObject<StoreStats>()({
        required: ['logBytes', 'liveBytes', 'segments'],
        properties: {
          logBytes: { type: 'integer', description: 'Bytes in write log segment files' },
          liveBytes: { type: 'integer', description: 'Bytes of data still referenced' },
          segments: { type: 'integer' },
        },
      }),
      CompactStats: wireObject<CompactStats>()({
        required: ['segmentsRemoved', 'bytesReclaimed', 'bytesRewritten'],
        properties: {
          segmentsRemoved: { type: 'integer' },
          bytesReclaimed: { type: 'integer' },
          bytesRewritten: { type: 'integer' },
        },
      }),
      NodeSpace: wireObject<NodeSpace>()({
        description: 'How full the file system under the data directory is; client writes are refused from fullRatio on',
        required: ['state', 'totalBytes', 'freeBytes', 'reserveBytes', 'usableBytes', 'usedBytes', 'usedRatio', 'nearfullRatio', 'fullRatio'],
        properties: {
          state: { type: 'string', enum: ['ok', 'nearfull', 'full'] },
          totalBytes: { type: 'integer' },
          freeBytes: { type: 'integer' },
          reserveBytes: { type: 'integer', description: 'Kept for compaction, the index and recovery' },
          usableBytes: { type: 'integer', description: 'totalBytes - reserveBytes' },
          usedBytes: { type: 'integer', description: 'totalBytes - freeBytes, whoever\'s files they are' },
          usedRatio: { type: 'number', description: 'usedBytes / usableBytes' },
          nearfullRatio: { type: 'number' },
          fullRatio: { type: 'number' },
        },
      }),
      ClusterNode: wireObject<ClusterNode>()({
        required: ['id', 'state', 'zone', 'api', 'nbd', 'peer', 'controller', 'capacityBytes', 'usedBytes'],
        properties: {
          id: { type: 'string', description: 'Node id (`--node-id`); `local` for a node without etcd' },
          state: { type: 'string', enum: ['up', 'down'], description: 'up while its etcd lease lives' },
          zone: { type: 'string', description: 'Failure domain (`--zone`)' },
          api: { type: 'string', description: 'HOST:PORT of its HTTP API, as advertised' },
          nbd: { type: 'string', description: 'HOST:PORT of its NBD server, as advertised' },
          peer: { type: ['string', 'null'], description: 'HOST:PORT of its peer protocol; null without etcd' },
          controller: { type: 'boolean', description: "Whether it is the cluster's controller" },
          capacityBytes: { type: 'integer', description: 'Usable bytes of its store; 0 while down' },
          usedBytes: { type: 'integer', description: 'Bytes of its store in use; 0 while down' },
        },
      }),
      DiskLease: wireObject<DiskLease>()({
        required: ['disk', 'owner', 'epoch', 'ownerEpoch', 'ttlSeconds', 'head'],
        properties: {
          disk: { type: 'string' },
          owner: { type: ['string', 'null'], description: "The node holding the disk's owner key in etcd; null while none does" },
          epoch: { type: 'integer', description: "The disk's epoch now (the fencing token)" },
          ownerEpoch: { type: ['integer', 'null'], description: 'The epoch the owner took the key at' },
          ttlSeconds: { type: ['integer', 'null'], description: "Seconds the owner's etcd lease has left without a keep-alive" },
          head: { type: ['string', 'null'], description: "The head the disk's record names" },
        },
      }),
      ClusterStatus: wireObject<ClusterStatus>()({ required: ['nodes'], properties: { nodes: { type: 'array', items: ref('ClusterNode') } } }),
      NodeInfo: wireObject<NodeInfo>()({
        required: ['version', 'dataDir', 'nbd', 'api', 'pid', 'uptimeMs', 'disks', 'readOnly', 'stats', 'space', 'drive', 'scrub', 'hlc', 'cluster'],
        properties: {
          version: { type: 'string' },
          dataDir: { type: ['string', 'null'] },
          nbd: wireObject<NbdEndpoints>()({
            type: ['object', 'null'],
            required: ['tcp', 'socket', 'connections'],
            properties: {
              tcp: wireObject<NonNullable<NbdEndpoints['tcp']>>()({
                type: ['object', 'null'],
                required: ['host', 'port'],
                properties: { host: { type: 'string' }, port: { type: 'integer' } },
              }),
              socket: { type: ['string', 'null'] },
              connections: { type: 'integer' },
            },
          }),
          api: { type: ['string', 'null'], description: 'Base URL of this API' },
          pid: { type: 'integer' },
          uptimeMs: { type: 'integer' },
          disks: { type: 'integer', description: 'Number of disks' },
          readOnly: { type: 'boolean', description: 'The node serves its store read-only (serve --read-only): every change is refused with 409 READ_ONLY' },
          stats: ref('StoreStats'),
          space: ref('NodeSpace'),
          drive: wireObject<DriveHealth>()({
            required: ['state', 'error', 'sinceMs'],
            description: 'The drive under the store: `failing` once a write, sync or index update failed on it (not for a full file system); writes, flushes and disk and snapshot changes then get IO_ERROR until the node is restarted, reads go on',
            properties: {
              state: { type: 'string', enum: ['ok', 'failing'] },
              error: { type: ['string', 'null'], description: 'What failed first, when failing' },
              sinceMs: { type: ['integer', 'null'], description: 'When the drive started failing, ms since the epoch' },
            },
          }),
          scrub: ref('ScrubStatus'),
          hlc: {
            type: ['string', 'null'],
            pattern: '^(0|[1-9][0-9]{0,19})$',
            description: "A new value of the node's hybrid logical clock, a decimal 64-bit integer, above every value it stamped before (snapshots, log records); null for a node that keeps none (read-only)",
          },
          cluster: wireObject<NodeClusterInfo>()({
            type: ['object', 'null'],
            required: ['node', 'revision', 'copiesToDelete'],
            description: "The node's part in its cluster; null for a node without etcd",
            properties: {
              node: { type: 'string', description: 'The node id' },
              revision: { type: 'integer', description: "The etcd revision the node's cache of the cluster's keys is at" },
              copiesToDelete: {
                type: 'array',
                description: 'Copies of disks the node must delete (the disk deleted, or its replica placed elsewhere) and has not yet; it tries again every 2 s',
                items: wireObject<CopyToDelete>()({
                  required: ['disk', 'reason', 'error', 'sinceMs'],
                  properties: {
                    disk: { type: 'string' },
                    reason: { type: 'string' },
                    error: { type: ['string', 'null'], description: 'What refused the last try (e.g. a client still has the copy open), null before the first' },
                    sinceMs: { type: 'integer', description: 'When the node learnt the copy must go, ms since the epoch' },
                  },
                }),
              },
            },
          }),
        },
      }),
      CreateDiskRequest: wireObject<CreateDiskRequest>()({
        required: ['name', 'sizeBytes'],
        additionalProperties: false,
        properties: {
          name: { type: 'string' },
          sizeBytes: { type: 'integer', minimum: 0 },
          replicas: { type: 'integer', minimum: 1, maximum: 5, description: 'In a cluster: replicas (default 3, or the node count below 3)' },
          failureDomain: { type: 'string', enum: ['node', 'zone'], description: 'In a cluster: what two replicas may not share (default node)' },
        },
      }),
      ResizeRequest: wireObject<ResizeRequest>()({
        required: ['sizeBytes'],
        additionalProperties: false,
        properties: { sizeBytes: { type: 'integer', minimum: 0 } },
      }),
      CloneRequest: wireObject<CloneRequest>()({
        required: ['snapshot', 'name'],
        additionalProperties: false,
        properties: {
          snapshot: { type: 'string', description: 'Snapshot of the disk in the path to clone' },
          name: { type: 'string', description: 'Name of the new disk' },
        },
      }),
      ExtentsReply: wireObject<ExtentsReply>()({
        required: ['sizeBytes', 'since', 'offset', 'length', 'extents', 'next'],
        properties: {
          sizeBytes: { type: 'integer', description: 'Size of the snapshot' },
          since: { type: ['string', 'null'], description: 'The snapshot changes are reported against, or null for allocation' },
          offset: { type: 'integer', description: 'First byte covered' },
          length: { type: 'integer', description: 'Bytes covered by `extents`' },
          extents: {
            type: 'array',
            items: wireObject<ExtentRun>()({
              required: ['offset', 'length', 'type'],
              properties: {
                offset: { type: 'integer' },
                length: { type: 'integer' },
                type: { type: 'string', enum: ['data', 'zero', 'hole', 'changed', 'unchanged'] satisfies ExtentRun['type'][] },
              },
            }),
          },
          next: { type: ['integer', 'null'], description: 'Offset to continue from when the reply stopped at its extent limit' },
        },
      }),
      TrimRequest: wireObject<TrimRequest>()({
        required: ['offset', 'length'],
        additionalProperties: false,
        properties: { offset: { type: 'integer', minimum: 0 }, length: { type: 'integer', minimum: 0 } },
      }),
      GroupSnapshotRequest: wireObject<GroupSnapshotRequest>()({
        required: ['name', 'disks'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', description: 'Name of the snapshot on every disk' },
          disks: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 256, description: 'Disks to snapshot, each once' },
        },
      }),
      CreateSnapshotRequest: wireObject<CreateSnapshotRequest>()({
        required: ['name'],
        additionalProperties: false,
        properties: { name: { type: 'string' } },
      }),
      ...instantRestoreSchemas,
      ...backupSchemas,
      ...scrubSchemas,
      ...scheduleSchemas,
      ...importSchemas,
      Error: wireObject<ErrorBody>()({
        required: ['error'],
        properties: {
          error: wireObject<ErrorBody['error']>()({
            required: ['code', 'message', 'requestId'],
            properties: {
              code: { type: 'string', enum: Object.values(ApiErrorCode) },
              message: { type: 'string' },
              requestId: { type: 'string', description: "The request's id (also the `x-request-id` response header): the node's log names it with the error" },
            },
          }),
        },
      }),
    },
    responses: {
      BadRequest: errorResponse('BAD_REQUEST: malformed JSON or wrong field types; INVALID: a bad name or size; OUT_OF_RANGE'),
      NotFound: errorResponse('NOT_FOUND: no such disk, snapshot or schedule'),
      Conflict: errorResponse('EXISTS: the name is taken; IN_USE: still in use (open NBD connections); READ_ONLY: a snapshot, or any change of a node that runs read-only (serve --read-only); POLICY_UNMET: in a cluster, the nodes up cannot meet the placement policy, or no other healthy replica can take over a disk'),
      BodyTooLarge: errorResponse('BODY_TOO_LARGE: the request body is over the limit (1 MiB by default)'),
      UnsupportedMediaType: errorResponse('UNSUPPORTED_MEDIA_TYPE: the request body is not application/json'),
      NoSpace: errorResponse("NO_SPACE: the node's file system is full"),
      Internal: errorResponse("CORRUPT: stored data failed its checks; IO_ERROR: the node's drive failed a read of this request, or is failing (GET /api/v1/node, `drive`) and writes and changes are refused; INTERNAL: an unexpected failure, see the node log"),
      Unavailable: errorResponse("CLOSED: the node is shutting down; NOT_READY: the node is starting; BUSY: too many requests in flight, or a backup running already; in a cluster, UNAVAILABLE: the disk's head or a replica cannot be reached now or its chain is changing (retry), ETCD_UNAVAILABLE: etcd does not answer, so changes wait"),
      WrongPassword: errorResponse('WRONG_PASSWORD: no key of the backup repository opens with the password'),
      Repository: errorResponse('REPOSITORY: the backup repository failed, could not be reached, or holds damaged data'),
      Source: errorResponse("SOURCE: an import's source (an NBD server, an image file) could not be reached or read"),
    },
  },
} as const;
