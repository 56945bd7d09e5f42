// The official Socket.IO Admin UI as tally serves it at /admin/, in headless
// Chromium: it loads with no request leaving the server and no
// Content-Security-Policy violation, logs in, shows the connected clients
// moving as tally pages connect, and disconnects one of them.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, afterEach, before, describe, test } from 'node:test';

import { launchBrowser } from './browser.mjs';
import { WAIT_MS, makeDir, passwordHash, removeDir, startServer } from '../js/server.mjs';

const SHOTS = new URL('./screenshots/', import.meta.url).pathname;
const LIMIT = { timeout: 90_000 };
const PASSWORD = 'correct horse battery staple';

let browser;
let server;
let dir;
let contexts = [];

before(async () => {
  browser = await launchBrowser();
  await mkdir(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  await Promise.all(contexts.map((context) => context.close()));
  await server?.kill();
  if (dir) await removeDir(dir);
  contexts = [];
});

async function newPage() {
  // Wide enough that the UI keeps its navigation drawer open.
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  context.setDefaultTimeout(WAIT_MS);
  contexts.push(context);
  return context.newPage();
}

/** Resolves once the dashboard's Clients card (WebSocket plus long-polling) shows `count`. */
const clientsShown = (ui, count) =>
  ui.waitForFunction((count) => {
    const card = [...document.querySelectorAll('.v-card')].find((card) =>
      card.querySelector('.v-card__title')?.textContent.trim().startsWith('Clients'),
    );
    const shown = [...(card?.querySelectorAll('h2') ?? [])]
      .map((h2) => Number(h2.textContent.trim()))
      .reduce((a, b) => a + b, 0);
    return shown === count;
  }, count);

/** Opens a page of the UI from its navigation drawer. */
const navigate = (ui, name) => ui.locator('nav').getByText(name, { exact: true }).click();

describe('the Socket.IO Admin UI', () => {
  test('logs in, sees clients connect, and disconnects one', LIMIT, async () => {
    dir = await makeDir();
    server = await startServer(dir, [
      '--admin',
      '--admin-user',
      'ops',
      '--admin-password-hash',
      passwordHash(PASSWORD),
      '--admin-mode',
      'development',
    ]);
    // A tally page is open before the UI, so the UI's first list of
    // sockets has namespace `/` in it and selects it.
    const tallyPage = async () => {
      const page = await newPage();
      await page.goto(server.url);
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected');
      return page;
    };
    const pages = [await tallyPage()];

    const ui = await newPage();
    const foreign = [];
    const violations = [];
    ui.on('request', (request) => {
      if (!request.url().startsWith(server.url)) foreign.push(request.url());
    });
    ui.on('console', (message) => {
      if (/Content Security Policy/i.test(message.text())) violations.push(message.text());
    });

    await ui.goto(`${server.url}/admin`);
    assert.equal(new URL(ui.url()).pathname, '/admin/');
    // Pre-set to this server, the UI tries at once, is refused for want of
    // a password, and asks for one.
    assert.equal(await ui.getByLabel('Server URL').inputValue(), server.url);
    await ui.getByLabel('Username').fill('ops');
    await ui.getByLabel('Password').fill('wrong');
    await ui.getByRole('button', { name: 'Connect' }).click();
    await ui.getByText('Invalid credentials').waitFor();
    await ui.getByLabel('Password').fill(PASSWORD);
    await ui.getByRole('button', { name: 'Connect' }).click();
    await ui.getByLabel('Password').waitFor({ state: 'hidden' });
    // The session id arrived after the connection and was kept.
    await ui.waitForFunction(() => /^[0-9a-f]{32}$/.test(localStorage.getItem('session_id') ?? ''));

    // The tally page and the UI itself; then a second page joins (the
    // counts come with server_stats, every 2 s).
    await clientsShown(ui, 2);
    pages.push(await tallyPage());
    await clientsShown(ui, 3);
    await ui.screenshot({ path: `${SHOTS}admin-dashboard.png` });

    // Disconnect the first socket listed.
    await navigate(ui, 'Sockets');
    const row = ui.locator('tbody tr:has(button)').first();
    await row.waitFor();
    const sid = (await row.locator('td').first().textContent()).trim();
    assert.match(sid, /^[A-Za-z0-9_-]{16}$/);
    await row.locator('button:has(i.mdi-logout)').click();
    // The click also opens the socket's page, which marks it disconnected
    // when the server reports it gone.
    await ui.waitForFunction(
      () => [...document.querySelectorAll('.v-chip')].some((chip) => chip.textContent.trim() === 'disconnected'),
    );
    await ui.screenshot({ path: `${SHOTS}admin-disconnected.png` });
    // tally's page comes back by itself after a server disconnect: a new
    // socket, so the old id is gone from the list for good.
    await navigate(ui, 'Sockets');
    await ui.waitForFunction(
      (gone) =>
        document.querySelectorAll('tbody tr:has(button)').length === 2 &&
        ![...document.querySelectorAll('tbody tr')].some((tr) => tr.textContent.includes(gone)),
      sid,
    );
    for (const page of pages) {
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected');
    }

    assert.deepEqual(foreign, [], 'every file comes from tally, none from a CDN');
    assert.deepEqual(violations, [], 'the UI runs under its Content-Security-Policy');
  });
});
