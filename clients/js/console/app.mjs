// The relay's web console: a single page built on axon-client, served by the relay at
// GET / (Accept: text/html). Bundled into console/dist/console.html by console/build.mjs.

import { END_OF_STORED, Key, bytesToHex, connect, fetchInfo } from '../src/index.mjs';

const $ = (selector) => document.querySelector(selector);
const STORAGE_KEY = 'axon-console-key';
const MAX_ROWS = 500; // rows kept in the live table; older ones are dropped (counted)

const CODE_WORDS = {
  0: 'connection closed',
  400: 'invalid request',
  401: 'not authenticated (bad AUTH signature)',
  403: 'not allowed',
  409: 'duplicate',
  410: 'expired',
  412: 'job lease not held',
  413: 'too large',
  429: 'rate limited',
  500: 'storage failure',
  503: 'relay overloaded, shutting down, or subscription overflow',
};

const wsUrl = (() => {
  const u = new URL(location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  u.pathname = '/';
  u.search = '';
  u.hash = '';
  return u.toString().replace(/\/$/, '');
})();

const state = {
  info: null,
  key: null,
  relay: null,
  subscription: null,
  events: [], // newest last
  received: 0,
  dropped: 0,
  paused: false,
  selected: null,
  renderQueued: false,
  connectGeneration: 0,
};

// ---------------------------------------------------------------------------
// Errors in words

function describeError(error) {
  if (error && error.code === 0) return error.message; // already says "connection closed …"
  if (error && typeof error.code === 'number') {
    const words = CODE_WORDS[error.code] ?? 'error';
    return `${error.code ? `${error.code} ` : ''}${words}: ${error.message}`;
  }
  return String(error?.message ?? error);
}

function showError(error, context = '') {
  const box = document.createElement('div');
  box.className = 'error';
  const text = document.createElement('span');
  text.textContent = `${context ? `${context}: ` : ''}${describeError(error)}`;
  const close = document.createElement('button');
  close.textContent = '×';
  close.title = 'dismiss';
  close.onclick = () => box.remove();
  box.append(text, close);
  const errors = $('#errors');
  errors.prepend(box);
  while (errors.children.length > 5) errors.lastChild.remove();
}

// ---------------------------------------------------------------------------
// Tabs

for (const button of document.querySelectorAll('nav button')) {
  button.onclick = () => showTab(button.dataset.tab);
}
function showTab(name) {
  for (const button of document.querySelectorAll('nav button')) button.classList.toggle('active', button.dataset.tab === name);
  for (const section of document.querySelectorAll('.tab')) section.hidden = section.id !== `tab-${name}`;
  if (name === 'admin') refreshAdmin();
}

// ---------------------------------------------------------------------------
// Connection state

function setConn(stateName, text) {
  const conn = $('#conn');
  conn.dataset.state = stateName;
  $('#conn-text').textContent = text;
}

async function connectRelay() {
  const generation = ++state.connectGeneration;
  state.relay?.close();
  state.relay = null;
  if (!state.key) {
    setConn('no-key', 'no key loaded');
    return;
  }
  setConn('connecting', `connecting as ${short(state.key.publicHex)}…`);
  let attempt = 0;
  for (;;) {
    try {
      const relay = await connect(wsUrl, state.key, { relayUrl: state.info?.relay_url });
      if (generation !== state.connectGeneration) {
        relay.close();
        return;
      }
      state.relay = relay;
      relay.on('state', (name, error) => onRelayState(relay, name, error));
      setConn('open', `connected as ${short(state.key.publicHex)}`);
      startSubscription();
      if (!$('#tab-admin').hidden) refreshAdmin();
      return;
    } catch (error) {
      if (generation !== state.connectGeneration) return;
      if (error.code === 401 || error.code === 403) {
        setConn('failed', `refused: ${describeError(error)}`);
        showError(error, 'connect');
        return;
      }
      attempt += 1;
      const wait = Math.max(error.retryAfterMs ?? 0, Math.min(30000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2));
      setConn('reconnecting', `cannot connect (${describeError(error)}); retrying in ${Math.round(wait / 1000)} s`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (generation !== state.connectGeneration) return;
    }
  }
}

function onRelayState(relay, name, error) {
  if (relay !== state.relay) return;
  if (name === 'open') setConn('open', `connected as ${short(state.key.publicHex)}`);
  else if (name === 'disconnected') {
    if (error?.code === 403 || error?.code === 401) {
      setConn('revoked', `disconnected by the relay: ${describeError(error)}`);
      showError(error, 'disconnected');
    } else {
      setConn('reconnecting', `connection lost (${describeError(error)}); reconnecting…`);
      // The events subscription resumes by itself; without one, reconnect here.
      if (!state.subscription) relay.ensureConnection().catch((e) => showError(e, 'reconnect'));
    }
  } else if (name === 'reconnecting') setConn('reconnecting', `reconnecting (${describeError(error)})…`);
}

const short = (hex) => `${hex.slice(0, 8)}…${hex.slice(-4)}`;

// ---------------------------------------------------------------------------
// Status: info document and /metrics

function renderInfo(info) {
  $('#relay-name').textContent = `${info.name ?? ''} ${info.version ?? ''} · ${info.relay_url ?? ''}`;
  const dl = $('#info');
  dl.replaceChildren();
  for (const [k, v] of Object.entries(info)) {
    if (typeof v === 'object') continue;
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = String(v);
    dl.append(dt, dd);
  }
  const limits = $('#limits tbody');
  limits.replaceChildren();
  for (const [k, v] of Object.entries(info.limits ?? {})) {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td></td><td class="mono"></td>';
    tr.children[0].textContent = k;
    tr.children[1].textContent = String(v);
    limits.append(tr);
  }
}

function parseMetrics(text) {
  const out = { rejected: {} };
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const [, name, labels, value] = match;
    const number = Number(value);
    if (name === 'axon_events_rejected_total') {
      const code = /code="(\d+)"/.exec(labels ?? '')?.[1];
      if (code) out.rejected[code] = number;
    } else if (!labels) out[name] = number;
  }
  return out;
}

const series = { connections: [], events: [], deliveries: [], db: [] };
let lastMetrics = null;

async function pollMetrics() {
  try {
    const response = await fetch('/metrics', { cache: 'no-store' });
    if (!response.ok) throw new Error(`/metrics: HTTP ${response.status}`);
    const now = performance.now();
    const m = parseMetrics(await response.text());
    if (lastMetrics) {
      const seconds = (now - lastMetrics.at) / 1000;
      push('events', Math.max(0, (m.axon_events_accepted_total - lastMetrics.m.axon_events_accepted_total) / seconds));
      push('deliveries', Math.max(0, (m.axon_fanout_deliveries_total - lastMetrics.m.axon_fanout_deliveries_total) / seconds));
    }
    push('connections', m.axon_connections ?? 0);
    push('db', m.axon_database_bytes ?? 0);
    lastMetrics = { at: now, m };
    $('#v-connections').textContent = fmt(m.axon_connections);
    $('#v-events').textContent = fmt(series.events.at(-1));
    $('#v-deliveries').textContent = fmt(series.deliveries.at(-1));
    $('#v-db').textContent = bytesText(m.axon_database_bytes);
    const tbody = $('#rejected tbody');
    tbody.replaceChildren();
    const codes = Object.keys(m.rejected).sort();
    if (codes.length === 0) {
      const tr = document.createElement('tr');
      tr.innerHTML = '<td colspan="3" class="note">none</td>';
      tbody.append(tr);
    }
    for (const code of codes) {
      const tr = document.createElement('tr');
      tr.innerHTML = '<td></td><td></td><td class="mono"></td>';
      tr.children[0].textContent = code;
      tr.children[1].textContent = CODE_WORDS[code] ?? '';
      tr.children[2].textContent = fmt(m.rejected[code]);
      tbody.append(tr);
    }
    for (const name of Object.keys(series)) drawChart($(`#c-${name}`), series[name]);
  } catch (error) {
    // The relay may be restarting; the next poll retries.
    $('#v-connections').textContent = 'unreachable';
  }
}

function push(name, value) {
  const list = series[name];
  list.push(Number.isFinite(value) ? value : 0);
  if (list.length > 90) list.shift();
}

const fmt = (n) => (n === undefined || n === null || Number.isNaN(n) ? '–' : n >= 100 ? Math.round(n).toLocaleString('en') : Number(n.toFixed(1)).toString());
function bytesText(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function drawChart(canvas, values) {
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = '#2a333d';
  ctx.beginPath();
  ctx.moveTo(0, height - 0.5);
  ctx.lineTo(width, height - 0.5);
  ctx.stroke();
  if (values.length < 2) return;
  const max = Math.max(1, ...values);
  ctx.strokeStyle = '#4fb3ff';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / 89) * width;
    const y = height - 3 - (v / max) * (height - 8);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// ---------------------------------------------------------------------------
// Key

function setKey(key, { remember = $('#key-remember').checked } = {}) {
  state.key = key;
  try {
    if (key && remember) localStorage.setItem(STORAGE_KEY, bytesToHex(key.secretBytes()));
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* storage unavailable */
  }
  renderKey();
  connectRelay();
}

function renderKey() {
  const key = state.key;
  const remembered = (() => {
    try {
      return localStorage.getItem(STORAGE_KEY) !== null;
    } catch {
      return false;
    }
  })();
  $('#key-status').innerHTML = key
    ? 'Public key: <code class="mono" id="key-public"></code>'
    : 'No key loaded. Generate one or load an <code>axon keygen</code> key file.';
  if (key) $('#key-public').textContent = key.publicHex;
  $('#key-storage').textContent = !key
    ? ''
    : remembered
      ? 'The secret key is kept in this browser (localStorage) and survives a reload. Untick the box to remove it.'
      : 'The secret key is held in this page’s memory only: reloading or closing the page forgets it.';
  $('#key-remember').checked = remembered;
  $('#key-download').disabled = !key;
  $('#key-forget').disabled = !key;
}

$('#key-generate').onclick = () => setKey(Key.generate());
$('#key-file').onchange = async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    setKey(Key.fromKeyFile(await file.text()));
  } catch (error) {
    showError(error, `key file ${file.name}`);
  }
  event.target.value = '';
};
$('#key-hex-load').onclick = () => {
  try {
    setKey(Key.fromKeyFile($('#key-hex').value));
    $('#key-hex').value = '';
  } catch (error) {
    showError(error, 'key');
  }
};
$('#key-remember').onchange = () => {
  if (state.key) {
    try {
      if ($('#key-remember').checked) localStorage.setItem(STORAGE_KEY, bytesToHex(state.key.secretBytes()));
      else localStorage.removeItem(STORAGE_KEY);
    } catch (error) {
      showError(error, 'localStorage');
    }
  }
  renderKey();
};
$('#key-forget').onclick = () => {
  try {
    localStorage.removeItem(STORAGE_KEY);
  } catch {
    /* ignore */
  }
  setKey(null, { remember: false });
};
$('#key-download').onclick = () => {
  const blob = new Blob([state.key.toKeyFile()], { type: 'text/plain' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `axon-${state.key.publicHex.slice(0, 8)}.key`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
};

// ---------------------------------------------------------------------------
// Events: filter, live table, detail, publish

function parseTime(text) {
  text = text.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text);
  const match = /^(\d+)\s*([smhd])$/.exec(text);
  if (!match) throw new TypeError(`"${text}": a time is unix seconds or a duration ago like 2h`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
  return Math.floor(Date.now() / 1000) - Number(match[1]) * unit;
}

const splitList = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

function readFilter() {
  const form = $('#filter-form');
  const filter = {};
  const kinds = splitList(form.kinds.value);
  if (kinds.length) {
    filter.kinds = kinds.map((k) => {
      if (!/^\d+$/.test(k)) throw new TypeError(`kind "${k}" is not a number`);
      return Number(k);
    });
  }
  const authors = splitList(form.authors.value);
  if (authors.length) filter.authors = authors;
  const tags = splitList(form.tags.value);
  if (tags.length) {
    filter.tags = {};
    for (const tag of tags) {
      const at = tag.indexOf('=');
      if (at < 1) throw new TypeError(`tag filter "${tag}" must be name=value`);
      (filter.tags[tag.slice(0, at)] ??= []).push(tag.slice(at + 1));
    }
  }
  const since = parseTime(form.since.value);
  if (since !== undefined) filter.since = since;
  const until = parseTime(form.until.value);
  if (until !== undefined) filter.until = until;
  if (form.limit.value.trim()) {
    if (!/^\d+$/.test(form.limit.value.trim())) throw new TypeError('limit must be a number');
    filter.limit = Number(form.limit.value.trim());
  }
  return filter;
}

async function startSubscription() {
  if (!state.relay) return;
  let filter;
  try {
    filter = readFilter();
  } catch (error) {
    showError(error, 'filter');
    return;
  }
  const previous = state.subscription;
  state.subscription = null;
  previous?.return();
  clearEvents();
  const relay = state.relay;
  let subscription;
  try {
    subscription = relay.subscribe([filter], { resume: true })[Symbol.asyncIterator]();
  } catch (error) {
    showError(error, 'filter');
    return;
  }
  state.subscription = subscription;
  $('#events-counts').textContent = 'Loading stored events…';
  try {
    for (;;) {
      const { value, done } = await subscription.next();
      if (done || state.subscription !== subscription) break;
      if (value === END_OF_STORED) {
        state.stored = state.received;
        queueRender();
        continue;
      }
      addEvent(value);
    }
  } catch (error) {
    if (state.subscription === subscription) {
      state.subscription = null;
      $('#events-counts').textContent = `Subscription ended: ${describeError(error)}`;
      if (error.code !== 403 && error.code !== 401) showError(error, 'subscription');
    }
  }
}

function clearEvents() {
  state.events = [];
  state.received = 0;
  state.dropped = 0;
  state.stored = null;
  state.selected = null;
  $('#events-table tbody').replaceChildren();
  queueRender();
}

function addEvent(event) {
  state.received += 1;
  state.events.push(event);
  if (state.events.length > MAX_ROWS) {
    state.events.splice(0, state.events.length - MAX_ROWS);
  }
  queueRender();
}

function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  // A timer, not requestAnimationFrame: it also runs (throttled) in a background tab.
  setTimeout(renderEvents, 100);
}

// Renders at most ten times a second and only the newest MAX_ROWS events, so thousands of
// events per second never freeze the page.
function renderEvents() {
  state.renderQueued = false;
  const shown = state.events.length;
  const phase = state.stored === null ? 'loading stored events' : `${state.stored.toLocaleString('en')} stored, then live`;
  $('#events-counts').textContent =
    `${state.received.toLocaleString('en')} events received (${phase}); showing the newest ${shown.toLocaleString('en')}` +
    (state.paused ? ' — display paused' : '');
  if (state.paused) return;
  const tbody = $('#events-table tbody');
  const rows = document.createDocumentFragment();
  for (let i = state.events.length - 1; i >= 0; i--) rows.append(row(state.events[i]));
  tbody.replaceChildren(rows);
}

function row(event) {
  const tr = document.createElement('tr');
  tr.dataset.id = event.idHex;
  if (state.selected === event) tr.className = 'selected';
  const cells = [
    event.seq ?? '',
    new Date(event.created_at * 1000).toISOString().replace('T', ' ').slice(0, 19),
    event.kind,
    short(event.pubkeyHex),
    event.tags.map((t) => t.join('=')).join(' '),
    event.kind >= 2000 && event.kind < 3000 ? `(encrypted, ${event.content.length} bytes)` : event.text.slice(0, 120),
  ];
  for (const value of cells) {
    const td = document.createElement('td');
    td.textContent = String(value);
    tr.append(td);
  }
  tr.onclick = () => selectEvent(event);
  return tr;
}

function selectEvent(event) {
  state.selected = event;
  const aside = $('#event-detail');
  aside.replaceChildren();
  const add = (label, value) => {
    const h = document.createElement('h3');
    h.textContent = label;
    const pre = document.createElement('pre');
    pre.textContent = value;
    aside.append(h, pre);
  };
  add('id', event.idHex);
  add('seq', String(event.seq));
  add('author (pubkey)', event.pubkeyHex);
  add('created_at', `${event.created_at} (${new Date(event.created_at * 1000).toISOString()})`);
  add('kind', String(event.kind));
  add('tags', event.tags.length ? event.tags.map((t) => JSON.stringify(t)).join('\n') : '(none)');
  add(`content (${event.content.length} bytes)`, event.text);
  add('content (hex)', bytesToHex(event.content).slice(0, 4096));
  add('sig', event.sigHex);
  add('signature', event.verify() ? 'valid (checked in this page)' : 'INVALID');
  queueRender();
}

$('#filter-form').onsubmit = (event) => {
  event.preventDefault();
  if (!state.relay) {
    showError(new Error('load a key first (Key tab)'), 'subscribe');
    return;
  }
  startSubscription();
};
$('#events-pause').onclick = () => {
  state.paused = !state.paused;
  $('#events-pause').textContent = state.paused ? 'Resume display' : 'Pause';
  queueRender();
};
$('#events-clear').onclick = () => clearEvents();

function parseDuration(text) {
  text = text.trim();
  if (!text) return undefined;
  const match = /^(\d+)\s*([smhd]?)$/.exec(text);
  if (!match) throw new TypeError(`"${text}" is not a duration like 30s, 10m, 2h, 1d`);
  return Number(match[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2]]);
}

$('#publish-form').onsubmit = async (event) => {
  event.preventDefault();
  const form = event.target;
  const out = $('#publish-result');
  try {
    if (!state.relay) throw new Error('load a key first (Key tab)');
    const kind = form.kind.value.trim();
    if (!/^\d+$/.test(kind)) throw new TypeError(`kind "${kind}" is not a number`);
    const tags = splitList(form.tags.value).map((t) => {
      const at = t.indexOf('=');
      return at < 0 ? [t] : [t.slice(0, at), t.slice(at + 1)];
    });
    const result = await state.relay.publish({
      kind: Number(kind),
      content: form.content.value,
      tags,
      expiresIn: parseDuration(form.expires.value),
    });
    out.className = 'note ok';
    out.textContent = result.duplicate
      ? `Already stored (409 duplicate): ${result.idHex}`
      : `Published ${result.idHex} with seq ${result.seq}`;
  } catch (error) {
    out.className = 'note bad';
    out.textContent = `Not published: ${describeError(error)}`;
    showError(error, 'publish');
  }
};

// ---------------------------------------------------------------------------
// Admin

async function refreshAdmin() {
  const relay = state.relay;
  if (!relay) {
    $('#admin-note').textContent = 'Load an admin key to manage the allowlist.';
    return;
  }
  try {
    const log = await relay.adminLog();
    const allowed = new Map();
    for (const event of log) {
      for (const tag of event.tags) {
        if (tag[0] !== 'p') continue;
        if (event.kind === 9000) {
          if (!allowed.has(tag[1])) allowed.set(tag[1], event);
        } else allowed.delete(tag[1]);
      }
    }
    $('#admin-note').textContent = log.length
      ? `${allowed.size} key(s) allowed at run time; ${log.length} admin event(s) in the log.`
      : 'The admin log is empty, or this key is not an admin (admin events are visible only to admins).';
    const tbody = $('#allowlist tbody');
    tbody.replaceChildren();
    for (const key of allowed.keys()) {
      const tr = document.createElement('tr');
      tr.dataset.key = key;
      const td = document.createElement('td');
      td.className = 'mono';
      td.textContent = key;
      const action = document.createElement('td');
      const button = document.createElement('button');
      button.textContent = 'Revoke';
      button.className = 'revoke';
      button.onclick = () => adminAction('revoke', key);
      action.append(button);
      tr.append(td, action);
      tbody.append(tr);
    }
    const audit = $('#audit tbody');
    audit.replaceChildren();
    for (const event of [...log].reverse()) {
      const tr = document.createElement('tr');
      const cells = [
        event.seq,
        new Date(event.created_at * 1000).toISOString().replace('T', ' ').slice(0, 19),
        event.kind === 9000 ? 'allow' : event.kind === 9001 ? 'revoke' : String(event.kind),
        short(event.pubkeyHex),
        event.tags.filter((t) => t[0] === 'p').map((t) => t[1]).join(', '),
      ];
      for (const value of cells) {
        const td = document.createElement('td');
        td.className = 'mono';
        td.textContent = String(value);
        tr.append(td);
      }
      audit.append(tr);
    }
  } catch (error) {
    showError(error, 'admin log');
  }
}

async function adminAction(action, key) {
  try {
    if (!state.relay) throw new Error('load an admin key first (Key tab)');
    await state.relay[action](key);
    await refreshAdmin();
  } catch (error) {
    showError(error, action);
  }
}

$('#allow-form').onsubmit = (event) => {
  event.preventDefault();
  const key = $('#allow-key').value.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(key)) {
    showError(new TypeError('a public key is 64 hex characters'), 'allow');
    return;
  }
  $('#allow-key').value = '';
  adminAction('allow', key);
};
$('#admin-refresh').onclick = () => refreshAdmin();

// ---------------------------------------------------------------------------
// Start

async function main() {
  try {
    state.info = await fetchInfo(wsUrl);
    renderInfo(state.info);
  } catch (error) {
    showError(error, 'info document');
  }
  pollMetrics();
  setInterval(pollMetrics, 2000);
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    /* storage unavailable */
  }
  if (saved) {
    try {
      setKey(Key.fromHex(saved), { remember: true });
    } catch {
      localStorage.removeItem(STORAGE_KEY);
    }
  } else renderKey();
}

main();
