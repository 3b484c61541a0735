// The web console in a real browser: headless Debian Chromium driven by puppeteer-core
// (no browser download), against the real relay binary, which must embed the console
// (<repo>/target/debug/axon built from this tree, or $AXON_BIN). Screenshots of each
// page state go to browser-test/output/ (gitignored); any console error fails the test.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

import { Key, connect, signEvent } from '../src/index.mjs';
import { TestRelay } from '../test/support/relay.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const OUTPUT = path.join(here, 'output');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

describe('web console', () => {
  const admin = Key.generate();
  const agent = Key.generate();
  let relay;
  let browser;
  let profile;
  const consoleErrors = [];
  let outage = false; // while the relay is down, refused connections are expected

  before(async () => {
    rmSync(OUTPUT, { recursive: true, force: true });
    mkdirSync(OUTPUT, { recursive: true });
    relay = await TestRelay.start({ admins: [admin.publicHex] });
    profile = mkdtempSync(path.join(tmpdir(), 'axon-chromium-'));
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: profile,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  after(async () => {
    await browser?.close();
    await relay?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  async function openConsole(name) {
    const page = await browser.newPage();
    page.setDefaultTimeout(15000);
    await page.setViewport({ width: 1280, height: 900 });
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      if (outage && /ERR_CONNECTION_REFUSED|WebSocket connection to/.test(message.text())) return;
      consoleErrors.push(`${name}: ${message.text()}`);
    });
    page.on('pageerror', (error) => consoleErrors.push(`${name}: ${error.message}`));
    const response = await page.goto(`${relay.httpUrl}/`, { waitUntil: 'load' });
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-type'], /text\/html/);
    await page.waitForFunction(() => document.querySelector('#relay-name').textContent.includes('ws://'), { polling: 100 });
    return page;
  }

  // Screenshots and clicks need the page in front (a background tab renders no frames).
  const shot = async (page, name) => {
    await page.bringToFront();
    await page.screenshot({ path: path.join(OUTPUT, `${name}.png`), fullPage: true });
  };
  const tab = async (page, name) => {
    await page.bringToFront();
    await page.click(`nav button[data-tab=${name}]`);
  };
  const connState = (page) => page.$eval('#conn', (el) => ({ state: el.dataset.state, text: el.textContent }));

  it('admin allows a key, the key publishes from a second page, the first sees it live, revocation is explained', { timeout: 120000 }, async () => {
    // JSON clients still get the info document at GET /.
    const info = await (await fetch(`${relay.httpUrl}/`, { headers: { accept: 'application/json' } })).json();
    assert.equal(info.relay_url, relay.url);

    const first = await openConsole('admin page');
    await page_waitForMetrics(first);
    await shot(first, '01-status');

    // Load the admin key by pasting it.
    await tab(first, 'key');
    await first.type('#key-hex', admin.toKeyFile().trim());
    await first.click('#key-hex-load');
    await waitOpen(first);
    assert.match(await first.$eval('#key-storage', (el) => el.textContent), /memory only/);
    await shot(first, '02-admin-key-loaded');

    // Allow the second key.
    await tab(first, 'admin');
    await first.type('#allow-key', agent.publicHex);
    await first.click('#allow-submit');
    await first.waitForSelector(`#allowlist tr[data-key="${agent.publicHex}"]`);
    await first.waitForFunction(() => document.querySelector('#audit tbody').textContent.includes('allow'), { polling: 100 });
    await shot(first, '03-admin-allowed');

    // Second page: load the agent's key from a key file, publish.
    const second = await openConsole('agent page');
    await tab(second, 'key');
    const keyDir = mkdtempSync(path.join(tmpdir(), 'axon-key-'));
    const keyFile = path.join(keyDir, 'agent.key');
    writeFileSync(keyFile, agent.toKeyFile());
    const input = await second.$('#key-file');
    await input.uploadFile(keyFile);
    await waitOpen(second);
    rmSync(keyDir, { recursive: true, force: true });
    assert.equal(await second.$eval('#key-public', (el) => el.textContent), agent.publicHex);
    await shot(second, '04-agent-key-loaded');

    await tab(first, 'events');
    await first.waitForFunction(() => document.querySelector('#events-counts').textContent.includes('then live'), { polling: 100 });
    await tab(second, 'events');
    await second.type('#publish-form [name=tags]', 'topic=browser');
    await second.type('#publish-form [name=content]', 'hello from the second page');
    await second.click('#publish-submit');
    await second.waitForFunction(() => document.querySelector('#publish-result').textContent.startsWith('Published'), { polling: 100 });
    await shot(second, '05-agent-published');

    // It appears live on the first page; its details open on click.
    await first.bringToFront();
    await first.waitForFunction(() => document.querySelector('#events-table tbody').textContent.includes('hello from the second page'), { polling: 100 });
    // Find and click the row in one step: the table is redrawn while events arrive.
    await first.evaluate(() => {
      const rows = [...document.querySelectorAll('#events-table tbody tr')];
      rows.find((row) => row.textContent.includes('hello from the second page')).click();
    });
    await first.waitForFunction(() => document.querySelector('#event-detail').textContent.includes('valid (checked in this page)'), { polling: 100 });
    assert.match(await first.$eval('#event-detail', (el) => el.textContent), new RegExp(agent.publicHex));
    await shot(first, '06-admin-sees-event-live');

    // An error from the relay is shown in words with its code: a non-admin publishing
    // an admin event gets 403.
    await second.bringToFront();
    await second.$eval('#publish-form [name=kind]', (el) => {
      el.value = '9000';
    });
    await second.click('#publish-submit');
    await second.waitForFunction(() => document.querySelector('#errors').textContent.includes('403 not allowed'), { polling: 100 });
    await shot(second, '07-agent-error-in-words');

    // Revoke: the second page is told why it was disconnected.
    await tab(first, 'admin');
    // Find and click in one step: switching to the tab redraws the allowlist.
    await first.waitForSelector(`#allowlist tr[data-key="${agent.publicHex}"] button.revoke`);
    await first.evaluate((key) => document.querySelector(`#allowlist tr[data-key="${key}"] button.revoke`).click(), agent.publicHex);
    await first.waitForFunction((key) => !document.querySelector(`#allowlist tr[data-key="${key}"]`), { polling: 100 }, agent.publicHex);
    await second.waitForSelector('#conn[data-state=revoked]', { timeout: 10000 });
    const { text } = await connState(second);
    assert.match(text, /403/);
    assert.match(text, /not allowed/);
    await shot(first, '08-admin-revoked');
    await shot(second, '09-agent-disconnected');

    // The relay goes away: the page shows the state, then reconnects by itself and its
    // live table resumes. (The browser logs the refused connections meanwhile.)
    outage = true;
    await relay.stop();
    await first.waitForSelector('#conn[data-state=reconnecting]');
    await shot(first, '10-admin-relay-down');
    await relay.spawn();
    await waitOpen(first, 30000);
    outage = false;
    await shot(first, '11-admin-reconnected');

    // A burst of thousands of events: the live table keeps up (capped, with counts).
    const publisher = await connect(relay.url, admin);
    const burst = 2000;
    const signed = Array.from({ length: burst }, (_, i) => signEvent(admin, { kind: 1000, content: `burst ${i}`, tags: [['topic', 'burst']] }));
    await first.bringToFront();
    const started = Date.now();
    await Promise.all(signed.map((event) => publisher.publishEvent(event)));
    publisher.close();
    const publishedMs = Date.now() - started;
    await tab(first, 'events');
    await first.waitForFunction(
      (n) => Number(document.querySelector('#events-counts').textContent.replace(/,/g, '').match(/^(\d+)/)[1]) >= n,
      { polling: 100, timeout: 30000 },
      burst + 1,
    );
    const rowCount = await first.$$eval('#events-table tbody tr', (list) => list.length);
    assert.ok(rowCount <= 500, `the table is capped (${rowCount} rows)`);
    assert.match(await first.$eval('#events-table tbody tr', (el) => el.textContent), /burst 1999/);
    console.log(`# ${burst} events published in ${publishedMs} ms, all counted by the page after ${Date.now() - started} ms`);
    await shot(first, '12-admin-after-burst');

    assert.deepEqual(consoleErrors, [], 'no console errors');
  });
});

/** Waits for the connection to open; on failure, says what the page shows. */
async function waitOpen(page, timeout = 15000) {
  try {
    await page.waitForSelector('#conn[data-state=open]', { timeout });
  } catch (error) {
    const shown = await page.evaluate(() => `${document.querySelector('#conn').textContent} | ${document.querySelector('#errors').textContent}`);
    throw new Error(`the page did not connect: ${shown}`, { cause: error });
  }
}

async function page_waitForMetrics(page) {
  await page.waitForFunction(() => /^\d/.test(document.querySelector('#v-connections').textContent), { polling: 100 });
}
