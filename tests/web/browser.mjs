// The web page, driven in headless Chromium (Debian's, through playwright-core) against a
// real `filestore serve` whose upload chunk size is 64 KiB. run.sh starts the server and
// sets FILESTORE_URL; SCREENSHOT says where to save the picture.
//
// Every step waits for what the page shows (elements, classes, attributes), never for time.
// The first failing step stops the run: later steps build on earlier ones.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.FILESTORE_URL;
if (!BASE) throw new Error('FILESTORE_URL is not set (run tests/web/run.sh)');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const HERE = path.dirname(new URL(import.meta.url).pathname);
const SCREENSHOT = process.env.SCREENSHOT || path.join(HERE, 'screenshot.png');
const FAILURE_SHOT = path.join(HERE, 'failure.png');
const CHUNK = 64 * 1024; // FILESTORE_SESSIONS__CHUNK_SIZE set by run.sh
const PASSWORD = 'correct horse battery staple';
const XSS_NAME = '<img src=x onerror=alert(1)>.txt';
const XSS_DIR = '"><svg onload=alert(2)>';

const sha1 = (b) => createHash('sha1').update(b).digest('hex');
const reEscape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const exact = (s) => new RegExp('^' + reEscape(s) + '$');

// ------------------------------------------------------------------ a tiny step runner

let passed = 0;
const problems = []; // things that must never happen on the page (errors, dialogs, CSP)
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
  } catch (e) {
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
    throw Object.assign(new Error(`step failed: ${name}`), { reported: true });
  }
  if (problems.length) {
    console.log(`FAIL ${name}: the page misbehaved:\n  ${problems.join('\n  ')}`);
    throw Object.assign(new Error(`step failed: ${name}`), { reported: true });
  }
  passed++;
  console.log(`ok   ${name} (${Date.now() - t0} ms)`);
}

// ------------------------------------------------------------------ page helpers

function watch(page, who) {
  const requests = [];
  page.on('request', (r) => requests.push({ method: r.method(), url: new URL(r.url()) }));
  page.on('pageerror', (e) => problems.push(`${who}: uncaught error: ${e.message}`));
  page.on('console', (m) => {
    if (/content security policy/i.test(m.text())) problems.push(`${who}: CSP violation: ${m.text()}`);
  });
  page.on('dialog', async (d) => {
    problems.push(`${who}: unexpected ${d.type()} dialog: ${d.message()}`);
    await d.dismiss();
  });
  page.setDefaultTimeout(20_000);
  return {
    requests,
    mark: () => requests.length,
    since: (m) => requests.slice(m),
  };
}

const entry = (page, name) =>
  page.locator('#entries tr.entry').filter({ has: page.locator('.entry-name', { hasText: exact(name) }) });

const uploadRow = (page, name) =>
  page.locator('#uploads li.upload').filter({ has: page.locator('.upload-name', { hasText: exact(name) }) });

// Waits for the upload of `name` to end; returns its status text (throws if it failed).
async function uploadFinished(page, name) {
  const row = uploadRow(page, name);
  await row.and(page.locator('.done, .failed, .cancelled')).waitFor();
  const status = await row.locator('.status').textContent();
  assert.match(await row.getAttribute('class'), /\bdone\b/, `upload of ${name} did not succeed: ${status}`);
  assert.equal(await row.locator('progress').evaluate((p) => p.value), 100, 'progress bar at 100');
  assert.equal(await row.locator('.pct').textContent(), '100%');
  return status;
}

async function upload(page, name, buffer) {
  await page.setInputFiles('#file-input', { name, mimeType: 'application/octet-stream', buffer });
}

async function answerDialog(page, value) {
  const dlg = page.locator('dialog#ask[open]');
  await dlg.waitFor();
  if (value !== undefined) await page.fill('#ask-input', value);
  await page.click('#ask-ok');
  await dlg.waitFor({ state: 'detached' });
}

async function downloadOf(page, name) {
  const [dl] = await Promise.all([page.waitForEvent('download'), entry(page, name).locator('.op-download').click()]);
  const failure = await dl.failure();
  assert.equal(failure, null, `download of ${name} failed: ${failure}`);
  return { name: dl.suggestedFilename(), url: new URL(dl.url()), bytes: await readFile(await dl.path()) };
}

async function usage(page) {
  return page.evaluate(() => ({
    bytes: Number(document.getElementById('usage-bytes').dataset.bytes),
    stored: Number(document.getElementById('usage-stored').dataset.bytes),
    saved: Number(document.getElementById('usage-saved').dataset.bytes),
    savedText: document.getElementById('usage-saved').textContent,
  }));
}

async function waitUsage(page, pred, arg) {
  await page.waitForFunction(pred, arg);
  return usage(page);
}

async function signUp(page, username) {
  await page.goto(BASE + '/');
  await page.locator('#auth-view').waitFor();
  await page.click('#auth-switch');
  await page.locator('#auth-title', { hasText: 'Create an account' }).waitFor();
  await page.fill('#username', username);
  await page.fill('#password', PASSWORD);
  await page.click('#auth-submit');
  await page.locator('#drive-view').waitFor();
  await page.locator('#whoami', { hasText: exact(username) }).waitFor();
}

const partsIn = (reqs) =>
  reqs.filter((r) => r.method === 'PUT' && /^\/api\/v1\/uploads\/[^/]+\/parts\/\d+$/.test(r.url.pathname))
    .map((r) => Number(r.url.pathname.split('/').pop())).sort((a, b) => a - b);
const putsIn = (reqs) => reqs.filter((r) => r.method === 'PUT');
const instantsIn = (reqs) => reqs.filter((r) => r.method === 'POST' && r.url.pathname === '/api/v1/instant');

// ------------------------------------------------------------------ the scenario

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
  ],
});
console.log(`chromium ${browser.version()}, server ${BASE}`);

const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 900 } });
const page = await ctx.newPage();
const log = watch(page, 'alice');
const alice = 'alice-' + randomBytes(3).toString('hex');
const hello = Buffer.from('Hello from the browser test, ' + randomBytes(8).toString('hex') + '\n');
const big = randomBytes(300 * 1024); // five chunks of 64 KiB (the last one short)
const resumable = randomBytes(4 * CHUNK - 1000); // four chunks
let failed = false;

try {
  await step('the page loads with its security headers and no inline code', async () => {
    const resp = await page.goto(BASE + '/');
    assert.equal(resp.status(), 200);
    const h = resp.headers();
    assert.match(h['content-type'], /^text\/html/);
    assert.match(h['content-security-policy'], /script-src 'self'/);
    assert.doesNotMatch(h['content-security-policy'], /unsafe-inline|unsafe-eval/);
    assert.equal(h['x-content-type-options'], 'nosniff');
    assert.equal(h['x-frame-options'], 'DENY');
    assert.equal(h['referrer-policy'], 'no-referrer');
    await page.locator('#auth-view').waitFor();
    assert.equal(await page.locator('script:not([src])').count(), 0);
    assert.equal(await page.evaluate(() => window.filestore.settings.chunkSize), CHUNK, 'chunk size from the server');
  });

  await step('the incremental SHA-1 of sha1.js agrees with crypto.subtle', async () => {
    const bad = await page.evaluate(async () => {
      const out = [];
      for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 65536, 100003]) {
        const b = new Uint8Array(n);
        for (let i = 0; i < n; i++) b[i] = (i * 131 + n) & 0xff;
        const want = window.FilestoreSha1.toHex(new Uint8Array(await crypto.subtle.digest('SHA-1', b)));
        const h = new window.FilestoreSha1.Sha1();
        for (let i = 0; i < n; i += 777) h.update(b.subarray(i, i + 777));
        const got = h.hexDigest();
        if (got !== want) out.push(`${n}: ${got} != ${want}`);
      }
      return out;
    });
    assert.deepEqual(bad, []);
  });

  await step('sign up', async () => {
    await signUp(page, alice);
    await page.locator('#empty').waitFor();
    const u = await waitUsage(page, () => document.getElementById('usage-bytes').textContent !== '–');
    assert.equal(u.bytes, 0);
  });

  await step('sign out and sign in again (the token survives a reload)', async () => {
    await page.click('#signout');
    await page.locator('#auth-view').waitFor();
    await page.locator('#auth-title', { hasText: 'Sign in' }).waitFor();
    await page.fill('#username', alice);
    await page.fill('#password', 'wrong password!');
    await page.click('#auth-submit');
    await page.locator('#auth-error', { hasText: /./ }).waitFor();
    await page.fill('#password', PASSWORD);
    await page.click('#auth-submit');
    await page.locator('#drive-view').waitFor();
    await page.reload();
    await page.locator('#whoami', { hasText: exact(alice) }).waitFor();
  });

  await step('upload a small file: one PUT with a progress bar', async () => {
    const m = log.mark();
    await upload(page, 'hello.txt', hello);
    const status = await uploadFinished(page, 'hello.txt');
    assert.equal(status, 'Done');
    await entry(page, 'hello.txt').waitFor();
    const reqs = log.since(m);
    assert.deepEqual(putsIn(reqs).map((r) => r.url.pathname), ['/api/v1/files/hello.txt']);
    assert.equal(instantsIn(reqs).length, 2, 'asked for an instant upload, answered the challenge, then sent it');
    assert.equal(await entry(page, 'hello.txt').locator('td.size').getAttribute('title'), `${hello.length} bytes`);
  });

  await step('upload a file larger than one chunk: five parts, then complete', async () => {
    const m = log.mark();
    await upload(page, 'big.bin', big);
    const status = await uploadFinished(page, 'big.bin');
    assert.equal(status, 'Done (5 parts)');
    await entry(page, 'big.bin').waitFor();
    const reqs = log.since(m);
    assert.deepEqual(partsIn(reqs), [1, 2, 3, 4, 5]);
    assert.ok(reqs.some((r) => r.method === 'POST' && /\/complete$/.test(r.url.pathname)), 'completed');
    assert.equal(putsIn(reqs).length, 5, 'no whole-file PUT');
  });

  await step('an interrupted chunked upload resumes after a reload, sending only the missing parts', async () => {
    // One part at a time and no retry, so that exactly parts 1 and 2 reach the server.
    await page.evaluate(() => Object.assign(window.filestore.settings, { partRetries: 1, partsInFlight: 1 }));
    await page.route('**/api/v1/uploads/*/parts/3', (route) => route.abort('connectionreset'));
    await upload(page, 'resume.bin', resumable);
    const row = uploadRow(page, 'resume.bin');
    await row.and(page.locator('.failed')).waitFor();
    await page.unroute('**/api/v1/uploads/*/parts/3');
    // Parts 1 and 2 are on the server; 4 was never started.
    await page.reload();
    const pending = page.locator('#pending-list li', { hasText: '/resume.bin' });
    await pending.waitFor();
    assert.match(await pending.textContent(), /2 of 4 parts on the server/);
    // The resumed file is hashed by sha1.js: it must find the same session.
    await page.evaluate(() => { window.filestore.settings.subtleHashMax = 0; });
    const m = log.mark();
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), pending.locator('.op-resume').click()]);
    await chooser.setFiles({ name: 'resume.bin', mimeType: 'application/octet-stream', buffer: resumable });
    const status = await uploadFinished(page, 'resume.bin');
    assert.equal(status, 'Done (resumed: 2 of 4 parts were already there)');
    assert.deepEqual(partsIn(log.since(m)), [3, 4]);
    await entry(page, 'resume.bin').waitFor();
    await page.locator('#pending').waitFor({ state: 'hidden' });
  });

  await step('the same content again is an instant upload, and the storage view shows the dedup saving', async () => {
    const m = log.mark();
    await upload(page, 'big-copy.bin', big);
    const status = await uploadFinished(page, 'big-copy.bin');
    assert.match(status, /instant upload/);
    await entry(page, 'big-copy.bin').waitFor();
    assert.deepEqual(putsIn(log.since(m)), [], 'no bytes sent');
    const want = 2 * big.length + hello.length + resumable.length;
    const u = await waitUsage(page, (w) => Number(document.getElementById('usage-bytes').dataset.bytes) === w, want);
    assert.equal(u.stored, want - big.length);
    assert.equal(u.saved, big.length);
    assert.match(u.savedText, /^300 KiB \(\d+%\)$/);
  });

  await step('a file named like markup is shown literally and runs nothing', async () => {
    await upload(page, XSS_NAME, Buffer.from('not an image\n'));
    await uploadFinished(page, XSS_NAME);
    const row = entry(page, XSS_NAME);
    await row.waitFor();
    assert.equal(await row.locator('.entry-name').textContent(), XSS_NAME);
    assert.equal(await page.locator('#entries img, #uploads img').count(), 0, 'no element made from the name');
    assert.equal(await uploadRow(page, XSS_NAME).locator('.upload-name').textContent(), XSS_NAME);
  });

  await step('a folder named like markup, in the listing and the breadcrumbs', async () => {
    await page.click('#new-folder');
    await answerDialog(page, XSS_DIR);
    await entry(page, XSS_DIR).locator('a.entry-name').click();
    await page.locator('#breadcrumbs a[aria-current]', { hasText: exact(XSS_DIR) }).waitFor();
    await page.locator('#empty').waitFor();
    assert.equal(await page.locator('#breadcrumbs svg, #entries svg').count(), 0);
    await page.click('#breadcrumbs a.crumb >> nth=0');
    await entry(page, 'hello.txt').waitFor();
  });

  await step('create a folder and move a file into it', async () => {
    await page.click('#new-folder');
    await answerDialog(page, 'docs');
    await entry(page, 'docs').waitFor();
    assert.equal(await entry(page, 'docs').getAttribute('data-kind'), 'dir');
    await entry(page, 'hello.txt').locator('.op-move').click();
    await answerDialog(page, '/docs');
    await entry(page, 'hello.txt').waitFor({ state: 'detached' });
    await entry(page, 'docs').locator('a.entry-name').click();
    await page.locator('#breadcrumbs a[aria-current]', { hasText: exact('docs') }).waitFor();
    await entry(page, 'hello.txt').waitFor();
    assert.match(page.url(), /#\/docs$/);
  });

  await step('rename a file', async () => {
    await entry(page, 'hello.txt').locator('.op-rename').click();
    await answerDialog(page, 'greeting.txt');
    await entry(page, 'greeting.txt').waitFor();
    await entry(page, 'hello.txt').waitFor({ state: 'detached' });
  });

  await step('download a file and check its bytes', async () => {
    const d = await downloadOf(page, 'greeting.txt');
    assert.equal(d.name, 'greeting.txt');
    assert.ok(d.bytes.equals(hello), 'downloaded bytes differ from the uploaded ones');
  });

  await step('download the chunked uploads (in memory, and streamed through a download link)', async () => {
    await page.click('#breadcrumbs a.crumb >> nth=0');
    await entry(page, 'big.bin').waitFor();
    const a = await downloadOf(page, 'big.bin');
    assert.equal(sha1(a.bytes), sha1(big));
    const r = await downloadOf(page, 'resume.bin');
    assert.equal(sha1(r.bytes), sha1(resumable));
    await page.evaluate(() => { window.filestore.settings.blobDownloadMax = 0; });
    const m = log.mark();
    const s = await downloadOf(page, 'big.bin');
    assert.equal(sha1(s.bytes), sha1(big));
    assert.ok(log.since(m).some((q) => q.url.pathname === '/file/downloadurl'), 'used /file/downloadurl');
    assert.equal(s.url.pathname, '/file/download');
    assert.ok(s.url.searchParams.has('ticket') && !s.url.searchParams.has('token'), 'a ticket, not the token');
    await page.evaluate(() => { window.filestore.settings.blobDownloadMax = 32 * 1024 * 1024; });
  });

  await step('another user uploads the same bytes: instant, after proving possession', async () => {
    const ctx2 = await browser.newContext();
    const page2 = await ctx2.newPage();
    const log2 = watch(page2, 'bob');
    try {
      await signUp(page2, 'bob-' + randomBytes(3).toString('hex'));
      await upload(page2, 'mine.bin', big);
      const status = await uploadFinished(page2, 'mine.bin');
      assert.match(status, /instant upload/);
      const reqs = log2.since(0);
      assert.equal(instantsIn(reqs).length, 2, 'challenge, then proof');
      assert.deepEqual(putsIn(reqs), [], 'no bytes sent');
      await entry(page2, 'mine.bin').waitFor();
      // Bob sees only his own file.
      assert.equal(await page2.locator('#entries tr.entry').count(), 1);
    } finally {
      await ctx2.close();
    }
  });

  await step('screenshot', async () => {
    await page.reload();
    await entry(page, 'big-copy.bin').waitFor();
    await page.waitForFunction(() => Number(document.getElementById('usage-saved').dataset.bytes) > 0);
    await upload(page, 'notes.txt', Buffer.from('a last small file\n'));
    await uploadFinished(page, 'notes.txt');
    await upload(page, 'big-again.bin', big);
    await uploadFinished(page, 'big-again.bin');
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    console.log(`     screenshot: ${SCREENSHOT}`);
  });

  await step('delete a file and a folder, after confirming', async () => {
    for (const name of ['big-again.bin', 'big-copy.bin']) {
      await entry(page, name).locator('.op-delete').click();
      await answerDialog(page);
      await entry(page, name).waitFor({ state: 'detached' });
    }
    // Cancelling keeps the entry.
    await entry(page, 'docs').locator('.op-delete').click();
    await page.locator('dialog#ask[open]').waitFor();
    await page.click('#ask-cancel');
    await page.locator('dialog#ask[open]').waitFor({ state: 'detached' });
    assert.equal(await entry(page, 'docs').count(), 1);
    await entry(page, 'docs').locator('.op-delete').click();
    await answerDialog(page);
    await entry(page, 'docs').waitFor({ state: 'detached' });
    const u = await waitUsage(page, () => Number(document.getElementById('usage-saved').dataset.bytes) === 0);
    assert.equal(u.saved, 0);
  });

  await step('sign out', async () => {
    await page.click('#signout');
    await page.locator('#auth-view').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('filestore.session')), null);
  });
} catch (e) {
  failed = true;
  if (!e.reported) console.log(`FAIL ${e.stack || e}`);
  await page.screenshot({ path: FAILURE_SHOT, fullPage: true }).then(
    () => console.log(`     page at the failure: ${FAILURE_SHOT}`),
    () => {},
  );
} finally {
  await browser.close();
}

console.log(`web: ${passed} passed, ${failed ? 1 : 0} failed`);
process.exit(failed ? 1 : 0);
