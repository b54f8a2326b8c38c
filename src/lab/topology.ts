/**
 * A lab's topology file (docs/lab.md): hosts and the links between them, checked once here.
 * `parseTopology` is the one gate: it returns a topology the rest of the lab trusts, or a
 * LabError whose message names the file, the host or link, and the rule broken.
 */
import { LabError, LabErrorCode } from './errors.ts';
import { idealLink, parseDelay, parseLoss, parseQueue, parseRate } from './units.ts';
import type { LinkParams } from './units.ts';

/** Most hosts of a lab: each is a namespace (and 10.200.0.N numbers 254 of them). */
export const hostsMax = 250;
/** Most links of a lab: each is a process. */
export const linksMax = 250;

/** A host of a checked topology. */
export interface HostSpec {
  name: string;
  /** Its IPv4 address, the same on every link (held on its loopback device). */
  address: string;
}

/** A link of a checked topology. */
export interface LinkSpec {
  /** Also the name of its device in both hosts (at most 15 characters, as Linux allows). */
  name: string;
  endpoints: [string, string];
  params: LinkParams;
}

/** A checked topology: names unique, endpoints known, values in range. */
export interface Topology {
  hosts: HostSpec[];
  links: LinkSpec[];
  /** Seeds the links' random draws (loss, jitter): link i draws from seed + i. Absent: fresh randomness. */
  seed?: number;
}

/** Where hosts without an address are numbered: 10.200.0.1, 10.200.0.2, ... */
const addressPrefix = '10.200.0.';

const hostName = /^[A-Za-z][A-Za-z0-9_-]{0,31}$/;
/** A Linux interface name (IFNAMSIZ 16, less the NUL), without the characters `ip` would take for others. */
const linkName = /^[A-Za-z][A-Za-z0-9_.-]{0,14}$/;
const hostFields = new Set(['name', 'address']);
const linkFields = new Set(['name', 'endpoints', 'delay', 'jitter', 'rate', 'loss', 'queue']);

function invalid(where: string, message: string): LabError {
  return new LabError(LabErrorCode.INVALID, `${where}: ${message}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A dotted IPv4 address of a private range's host (no network, broadcast, loopback or multicast). */
function isHostAddress(text: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (m === null) return false;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255) || o[0] === 0 || o[0] === 127 || o[0] >= 224 || o[3] === 0 || o[3] === 255) return false;
  return true;
}

/** Reads `value` with `parse`, or throws naming the field. */
function field<T>(where: string, name: string, value: unknown, parse: (text: string) => { ok: true; value: T } | { ok: false; expected: string }): T {
  if (typeof value !== 'string' && typeof value !== 'number') throw invalid(where, `${name} must be a string such as the examples in docs/lab.md`);
  const r = parse(String(value));
  if (!r.ok) throw invalid(where, `${name} '${String(value)}' is not ${r.expected}`);
  return r.value;
}

/** A link's values from an object with any of delay, jitter, rate, loss, queue (the rest as `base`). */
export function linkParamsOf(where: string, spec: Record<string, unknown>, base: LinkParams = idealLink): LinkParams {
  const p = { ...base };
  if (spec.delay !== undefined) p.delayNs = field(where, 'delay', spec.delay, parseDelay);
  if (spec.jitter !== undefined) p.jitterNs = field(where, 'jitter', spec.jitter, parseDelay);
  if (spec.rate !== undefined) p.rateBps = field(where, 'rate', spec.rate, parseRate);
  if (spec.loss !== undefined) p.loss = field(where, 'loss', spec.loss, parseLoss);
  if (spec.queue !== undefined) p.queue = field(where, 'queue', spec.queue, parseQueue);
  return p;
}

/** Parses and checks a topology file's text; `source` names it in errors. */
export function parseTopology(text: string, source = 'topology'): Topology {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw invalid(source, `not JSON: ${(err as Error).message}`);
  }
  return checkTopology(doc, source);
}

/** Checks an already-parsed topology document. */
export function checkTopology(doc: unknown, source = 'topology'): Topology {
  if (!isObject(doc)) throw invalid(source, 'expected an object with "hosts" and "links"');
  for (const key of Object.keys(doc)) {
    if (key !== 'hosts' && key !== 'links' && key !== 'seed') throw invalid(source, `unknown field '${key}' (expected "hosts", "links" and "seed")`);
  }
  if (doc.seed !== undefined && !(Number.isSafeInteger(doc.seed) && (doc.seed as number) >= 0)) {
    throw invalid(source, `seed ${JSON.stringify(doc.seed)} must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  if (!Array.isArray(doc.hosts) || doc.hosts.length === 0) throw invalid(source, '"hosts" must be a non-empty array');
  if (doc.hosts.length > hostsMax) throw invalid(source, `${doc.hosts.length} hosts: at most ${hostsMax}`);
  const linksDoc = doc.links ?? [];
  if (!Array.isArray(linksDoc)) throw invalid(source, '"links" must be an array');
  if (linksDoc.length > linksMax) throw invalid(source, `${linksDoc.length} links: at most ${linksMax}`);

  const named = new Map<string, { name: string; address?: string }>();
  for (const [i, h] of doc.hosts.entries()) {
    const where = `${source}: host ${i + 1}`;
    if (!isObject(h)) throw invalid(where, 'expected an object such as {"name": "a"}');
    for (const key of Object.keys(h)) if (!hostFields.has(key)) throw invalid(where, `unknown field '${key}' (expected name, address)`);
    if (typeof h.name !== 'string' || !hostName.test(h.name)) {
      throw invalid(where, `name ${JSON.stringify(h.name)} must be 1-32 letters, digits, '_' or '-', starting with a letter`);
    }
    if (named.has(h.name)) throw invalid(source, `host '${h.name}' is named twice`);
    if (h.address !== undefined && (typeof h.address !== 'string' || !isHostAddress(h.address))) {
      throw invalid(`${source}: host '${h.name}'`, `address ${JSON.stringify(h.address)} is not an IPv4 host address such as 10.1.0.5`);
    }
    named.set(h.name, { name: h.name, address: h.address as string | undefined });
  }
  // Addresses: those given, then the next free 10.200.0.N for the others, in the file's order.
  const taken = new Map<string, string>();
  for (const h of named.values()) {
    if (h.address === undefined) continue;
    const other = taken.get(h.address);
    if (other !== undefined) throw invalid(source, `hosts '${other}' and '${h.name}' have the same address ${h.address}`);
    taken.set(h.address, h.name);
  }
  let next = 1;
  const hosts: HostSpec[] = [...named.values()].map((h) => {
    if (h.address !== undefined) return { name: h.name, address: h.address };
    while (taken.has(addressPrefix + next)) next++;
    const address = addressPrefix + next++;
    taken.set(address, h.name);
    return { name: h.name, address };
  });

  const links: LinkSpec[] = [];
  const linkNames = new Set<string>();
  const pairs = new Map<string, string>();
  for (const [i, l] of linksDoc.entries()) {
    let where = `${source}: link ${i + 1}`;
    if (!isObject(l)) throw invalid(where, 'expected an object such as {"name": "a-b", "endpoints": ["a", "b"]}');
    if (typeof l.name === 'string') where = `${source}: link '${l.name}'`;
    for (const key of Object.keys(l)) {
      if (!linkFields.has(key)) throw invalid(where, `unknown field '${key}' (expected ${[...linkFields].join(', ')})`);
    }
    if (!Array.isArray(l.endpoints) || l.endpoints.length !== 2 || !l.endpoints.every((e) => typeof e === 'string')) {
      throw invalid(where, 'endpoints must be two host names, e.g. ["a", "b"]');
    }
    const [a, b] = l.endpoints as [string, string];
    for (const e of [a, b]) if (!named.has(e)) throw invalid(where, `endpoint '${e}' is not a host of the topology`);
    if (a === b) throw invalid(where, `both endpoints are '${a}'`);
    const name = l.name === undefined ? `${a}-${b}` : l.name;
    if (typeof name !== 'string' || !linkName.test(name) || name === 'lo') {
      const hint = l.name === undefined ? ` (the default, '${a}-${b}'; give the link a shorter "name")` : '';
      throw invalid(where, `name ${JSON.stringify(name)} must be 1-15 letters, digits, '_', '.' or '-', starting with a letter${hint}`);
    }
    if (linkNames.has(name)) throw invalid(source, `link '${name}' is named twice`);
    linkNames.add(name);
    const pair = [a, b].sort().join('\0');
    const twin = pairs.get(pair);
    if (twin !== undefined) throw invalid(source, `links '${twin}' and '${name}' both join '${a}' and '${b}': one link per pair of hosts`);
    pairs.set(pair, name);
    links.push({ name, endpoints: [a, b], params: linkParamsOf(`${source}: link '${name}'`, l) });
  }
  return doc.seed === undefined ? { hosts, links } : { hosts, links, seed: doc.seed as number };
}

/** One route of a host: to `address` (another host) through its device `dev` (a link's name). */
export interface Route {
  to: string;
  address: string;
  dev: string;
}

/**
 * Every host's routes to every host it can reach: the first hop of a shortest path (fewest links;
 * ties go to the link listed first), found by a breadth-first search from each host.
 */
export function routesOf(topology: Topology): Map<string, Route[]> {
  const adjacent = new Map<string, Array<{ peer: string; link: string }>>();
  for (const h of topology.hosts) adjacent.set(h.name, []);
  for (const l of topology.links) {
    adjacent.get(l.endpoints[0])!.push({ peer: l.endpoints[1], link: l.name });
    adjacent.get(l.endpoints[1])!.push({ peer: l.endpoints[0], link: l.name });
  }
  const addressOf = new Map(topology.hosts.map((h) => [h.name, h.address]));
  const routes = new Map<string, Route[]>();
  for (const src of topology.hosts) {
    // firstHop: for each host reached, the device src sends through to get there.
    const firstHop = new Map<string, string>([[src.name, '']]);
    let frontier = [src.name];
    while (frontier.length > 0) {
      const nextFrontier: string[] = [];
      for (const h of frontier) {
        for (const { peer, link } of adjacent.get(h)!) {
          if (firstHop.has(peer)) continue;
          firstHop.set(peer, h === src.name ? link : firstHop.get(h)!);
          nextFrontier.push(peer);
        }
      }
      frontier = nextFrontier;
    }
    firstHop.delete(src.name);
    routes.set(src.name, [...firstHop].map(([to, dev]) => ({ to, address: addressOf.get(to)!, dev })));
  }
  return routes;
}
