import assert from 'node:assert/strict';
import { test } from 'node:test';
import { testSeed } from '../../helpers/index.ts';
import { ChainSim } from './sim.ts';

/** Seeds per run: many in CI, each a few hundred writes through crashes, cut-offs and lost links. */
const SEEDS = Number(process.env.TESSERA_SIM_SEEDS ?? 150);

test('chain replication under a faulty network and node loss loses no acknowledged write, keeps one head per epoch and leaves the replicas equal', async (t) => {
  const base = testSeed(t);
  const totals = { acked: 0, failed: 0, unknown: 0, epochs: 0, crashes: 0, isolations: 0, drops: 0, duplicates: 0, catchUps: 0 };
  for (let i = 0; i < SEEDS; i++) {
    const seed = (base + i) >>> 0;
    const sim = new ChainSim({ seed, nodes: 3 + (seed % 3), writes: 150, blocks: 24, faultChance: 0.01, duplicateChance: 0.05 });
    const r = await sim.run();
    if (r.violations.length > 0) assert.fail(`seed ${seed} (replay: TESSERA_TEST_SEED=${seed} TESSERA_SIM_SEEDS=1): ${r.violations.slice(0, 5).join('; ')}`);
    for (const k of Object.keys(totals) as Array<keyof typeof totals>) totals[k] += r[k];
  }
  t.diagnostic(JSON.stringify(totals));
  // The faults happened: a run where nothing failed proves nothing.
  assert.ok(totals.crashes > 0 && totals.isolations > 0 && totals.drops > 0 && totals.duplicates > 0 && totals.catchUps > 0, JSON.stringify(totals));
  assert.ok(totals.acked > totals.unknown, JSON.stringify(totals));
});
