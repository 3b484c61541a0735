// Starts the real `axon relay` binary on a free port with a temporary config and database.
// The binary: $AXON_BIN, else <repo>/target/debug/axon.

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..', '..');
export const AXON_BIN = process.env.AXON_BIN ?? path.join(REPO, 'target', 'debug', 'axon');

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A relay process; `restart()` keeps its database and port. */
export class TestRelay {
  static async start({ admins = [], allowlist = [], limits = {} } = {}) {
    if (!existsSync(AXON_BIN)) throw new Error(`relay binary not found: ${AXON_BIN} (build it with cargo build, or set AXON_BIN)`);
    const relay = new TestRelay();
    relay.dir = mkdtempSync(path.join(tmpdir(), 'axon-js-'));
    relay.port = await freePort();
    relay.url = `ws://127.0.0.1:${relay.port}`;
    relay.httpUrl = `http://127.0.0.1:${relay.port}`;
    relay.config = path.join(relay.dir, 'relay.yaml');
    const limitLines = Object.entries(limits).map(([k, v]) => `  ${k}: ${v}`).join('\n');
    writeFileSync(
      relay.config,
      [
        `addr: "127.0.0.1:${relay.port}"`,
        `db: "${path.join(relay.dir, 'axon.db')}"`,
        `relay_url: "${relay.url}"`,
        `admins: [${admins.map((k) => `"${k}"`).join(', ')}]`,
        `allowlist: [${allowlist.map((k) => `"${k}"`).join(', ')}]`,
        limitLines ? `limits:\n${limitLines}` : '',
        '',
      ].join('\n'),
    );
    await relay.spawn();
    return relay;
  }

  async spawn() {
    this.stderr = '';
    this.process = spawn(AXON_BIN, ['relay', '--config', this.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.process.stderr.on('data', (chunk) => {
      this.stderr += chunk;
    });
    const exited = new Promise((resolve) => this.process.once('exit', resolve));
    this.exited = exited;
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      if (this.process.exitCode !== null) throw new Error(`relay exited: ${this.stderr}`);
      try {
        const response = await fetch(`${this.httpUrl}/health`);
        if (response.ok) return;
      } catch {
        /* not listening yet */
      }
      await sleep(50);
    }
    throw new Error(`relay did not become healthy: ${this.stderr}`);
  }

  async stop(signal = 'SIGTERM') {
    if (!this.process || this.process.exitCode !== null) return;
    this.process.kill(signal);
    await this.exited;
  }

  async restart() {
    await this.stop();
    await this.spawn();
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Next item of an async iterator (a subscription, a job queue), or throws after `ms`. */
export async function nextWithin(iterator, ms = 10000) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no item within ${ms} ms`)), ms);
  });
  try {
    const { value, done } = await Promise.race([iterator.next(), timeout]);
    if (done) throw new Error('the iterator ended');
    return value;
  } finally {
    clearTimeout(timer);
  }
}
