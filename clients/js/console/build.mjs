// Builds the web console into one self-contained HTML file, console/dist/console.html,
// which the relay embeds (src/relay/console.rs): index.html with console.css and the
// esbuild bundle of app.mjs (the axon-client library included) inlined. No CDN.
//
//   node console/build.mjs          write dist/console.html
//   node console/build.mjs --check  fail if dist/console.html differs from its sources

import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'dist', 'console.html');

const result = await build({
  entryPoints: [path.join(here, 'app.mjs')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  write: false,
  // Node-only code paths (Key.load/save, the `ws` fallback) are dynamic imports never
  // taken in a browser.
  external: ['ws', 'node:*'],
  logLevel: 'warning',
});
const js = result.outputFiles[0].text.replaceAll('</script', '<\\/script');
const css = readFileSync(path.join(here, 'console.css'), 'utf8');
const html = readFileSync(path.join(here, 'index.html'), 'utf8')
  .replace('/*CSS*/', () => css)
  .replace('/*JS*/', () => js);

if (process.argv.includes('--check')) {
  let committed = '';
  try {
    committed = readFileSync(out, 'utf8');
  } catch {
    /* missing */
  }
  if (committed !== html) {
    console.error(`${path.relative(process.cwd(), out)} does not match its sources: run \`npm run build:console\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log(`${path.relative(process.cwd(), out)} matches its sources (${html.length} bytes)`);
} else {
  writeFileSync(out, html);
  console.log(`wrote ${path.relative(process.cwd(), out)} (${html.length} bytes)`);
}
