/**
 * node:http and node:https, loaded as CommonJS modules. Imported as ES modules, their namespace
 * is built by reading every export, and node:http's WebSocket getter then loads undici: ~15 ms
 * of the start of every command that talks to a node.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export const http = require('node:http') as typeof import('node:http');
export const https = require('node:https') as typeof import('node:https');
