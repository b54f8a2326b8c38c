import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CliError, parseSize } from '../../src/cli/index.ts';
import { formatFields, formatTable } from '../../src/cli/table.ts';
import { formatSize, parseDiskSize } from '../../src/cli/size.ts';

const K = 1024;
const M = K * K;
const G = M * K;
const T = G * K;
const P = T * K;

test('parseSize reads bytes and binary suffixes as qemu-img does', () => {
  const cases: Array<[string, number]> = [
    ['0', 0],
    ['512', 512],
    ['1048576', M],
    ['1b', 1],
    ['1B', 1],
    ['1k', K],
    ['1K', K],
    ['1KiB', K],
    ['1kib', K],
    ['64M', 64 * M],
    ['64MiB', 64 * M],
    ['1G', G],
    ['1g', G],
    ['1GiB', G],
    ['2T', 2 * T],
    ['2TiB', 2 * T],
    ['1P', P],
    ['1PiB', P],
    ['1.5G', 1.5 * G],
    ['0.5K', 512],
    ['2.25M', 2.25 * M],
    ['10 G', 10 * G],
    [' 4G ', 4 * G],
    ['007', 7],
    ['7P', 7 * P],
  ];
  for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
});

test('parseSize refuses malformed sizes with a usage error naming the input', () => {
  const cases = ['', ' ', 'G', '-1', '-1G', '1.G', '.5G', '1..5G', '1e9', '0x100', '1GB', '1kb', '1MB', '1X', '1Gi', '1GiBs', '1 2G', 'abc', '1,5G', '1.3B', '1.1K', '0.0001K', '8P', '99999999999999999999'];
  for (const text of cases) {
    assert.throws(
      () => parseSize(text),
      (err: unknown) => err instanceof CliError && err.code === 'CLI_USAGE' && err.exitCode === 2 && err.message.includes(`'${text}'`),
      JSON.stringify(text),
    );
  }
});

test('parseSize explains that decimal units are refused', () => {
  assert.throws(() => parseSize('10GB'), /use G or GiB/);
});

test('parseDiskSize accepts positive multiples of 512 only', () => {
  assert.equal(parseDiskSize('512'), 512);
  assert.equal(parseDiskSize('1G'), G);
  assert.equal(parseDiskSize('1.5K'), 1536);
  assert.throws(() => parseDiskSize('0'), /cannot be empty/);
  assert.throws(() => parseDiskSize('1000'), /not a multiple of 512/);
  assert.throws(() => parseDiskSize('1.5B'), /whole number/);
});

test('formatSize prints binary units with one decimal', () => {
  const cases: Array<[number, string]> = [
    [0, '0 B'],
    [1, '1 B'],
    [512, '512 B'],
    [1023, '1023 B'],
    [K, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [M, '1.0 MiB'],
    [G, '1.0 GiB'],
    [1.5 * G, '1.5 GiB'],
    [10 * G, '10.0 GiB'],
    [T, '1.0 TiB'],
    [P, '1.0 PiB'],
    [M - 1, '1.0 MiB'],
    [1023 * K, '1023.0 KiB'],
  ];
  for (const [bytes, text] of cases) assert.equal(formatSize(bytes), text, String(bytes));
});

test('formatTable aligns columns, right-aligns where asked and leaves no trailing spaces', () => {
  const out = formatTable({
    headers: ['NAME', 'SIZE', 'ORIGIN'],
    rows: [
      ['vm1', '1.0 GiB', '-'],
      ['database', '10.0 GiB', 'golden@v1'],
    ],
    align: ['left', 'right'],
  });
  assert.equal(
    out,
    ['NAME          SIZE  ORIGIN', 'vm1        1.0 GiB  -', 'database  10.0 GiB  golden@v1', ''].join('\n'),
  );
  for (const line of out.split('\n')) assert.equal(line, line.trimEnd());
});

test('formatTable prints the header alone for no rows', () => {
  assert.equal(formatTable({ headers: ['NAME', 'SIZE'], rows: [] }), 'NAME  SIZE\n');
});

test('formatFields aligns values after their labels', () => {
  assert.equal(formatFields([['Name', 'vm1'], ['Snapshots', 'a, b']]), 'Name:       vm1\nSnapshots:  a, b\n');
});
