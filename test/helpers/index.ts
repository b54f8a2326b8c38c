/** Shared harness of the integration tests and the benchmark: real node, real clients, cleanup. */
export { startNode, useNode, TesseraNode, tesseraBin } from './node.ts';
export type { StartNodeOptions, StoreStats } from './node.ts';
export { freePort, run, runOk, spawnTracked, startPortChild, requireTool, requirePythonNbd, makeTempDir, cleanup, cleanupSync } from './process.ts';
export type { PortChild, RunResult, RunOptions } from './process.ts';
export { testSeed, Rng, seededBytes, writeSeededFile, parseSize, MiB } from './data.ts';
export type { Diagnostics } from './data.ts';
export { nbdcopy, nbdinfo, nbdinfoMap, qemuImg, qemuIo, assertFilesEqual } from './clients.ts';
export type { MapExtent } from './clients.ts';
export { until } from './wait.ts';
export { mountTmpfs, mountLoop, remount, fillTo, freeBytes } from './mounts.ts';
export { promtoolCheck } from './promtool.ts';
export { treeState } from './tree-state.ts';
export { asNobody, nobody } from './users.ts';
export { startEtcd } from './etcd.ts';
export type { EtcdServer } from './etcd.ts';
export { fileDigest, storeDigest, storeDigests, storedStamps } from './cluster.ts';
export { crashload, startCrashWriter } from './crash-writer.ts';
export type { CrashWriter } from './crash-writer.ts';
