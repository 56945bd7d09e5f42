// The tally page in a real headless Chromium (Debian's package, driven by
// playwright-core) against the real server binary: live updates between
// pages, reconnection, long-polling only, keyboard use, names and the
// leaderboard, and screenshots of the main states.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, afterEach, before, describe, test } from 'node:test';

import { launchBrowser } from './browser.mjs';
import { WAIT_MS, makeDir, removeDir, startExample, startServer } from '../js/server.mjs';

const SHOTS = new URL('./screenshots/', import.meta.url).pathname;
const LIMIT = { timeout: 90_000 };

let browser;
let servers = [];
let dirs = [];
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
  await Promise.all(servers.map((server) => server.kill()));
  await Promise.all(dirs.map(removeDir));
  contexts = [];
  servers = [];
  dirs = [];
});

async function serve({ dir, args = [], addr } = {}) {
  if (!dir) {
    dir = await makeDir();
    dirs.push(dir);
  }
  const server = await startServer(dir, args, addr ? { addr } : undefined);
  servers.push(server);
  return server;
}

/** A fresh browser profile (its own localStorage); `options` as Playwright's newContext. */
async function newContext(options = {}) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(WAIT_MS);
  contexts.push(context);
  return context;
}

/** Opens the page and waits until it is connected and shows a total. */
async function openPage(server, context) {
  const page = await (context ?? (await newContext())).newPage();
  await page.goto(server.url);
  await waitForStatus(page, 'connected');
  await page.waitForFunction(() => /\d/.test(document.getElementById('total').textContent));
  return page;
}

const waitForStatus = (page, state) =>
  page.waitForFunction((s) => document.getElementById('status').dataset.state === s, state);

const totalOf = async (page) => Number((await page.textContent('#total')).replace(/\D/g, ''));

const waitForTotal = (page, total) =>
  page.waitForFunction(
    (t) => Number(document.getElementById('total').textContent.replace(/\D/g, '')) === t,
    total,
  );

describe('the tally page', () => {
  test('a click in one page reaches another; 100 rapid clicks end exact', LIMIT, async () => {
    const server = await serve();
    const a = await openPage(server);
    const b = await openPage(server);
    assert.equal(await totalOf(b), 0);

    // Time from the click in A to the new total showing in B, measured in B's
    // own clock so page-to-page scheduling does not count.
    const seen = b.evaluate(
      () =>
        new Promise((resolve) => {
          const el = document.getElementById('total');
          new MutationObserver(() => resolve(performance.now() + performance.timeOrigin)).observe(el, {
            childList: true,
            characterData: true,
            subtree: true,
          });
        }),
    );
    const clickedAt = await a.evaluate(() => {
      const at = performance.now() + performance.timeOrigin;
      document.getElementById('click').click();
      return at;
    });
    const latency = (await seen) - clickedAt;
    // Reported, not asserted: timing belongs to the benchmarks.
    console.log(`click in page A → total in page B: ${latency.toFixed(1)} ms`);
    await waitForTotal(b, 1);

    for (let i = 0; i < 100; i++) await a.click('#click');
    await waitForTotal(a, 101);
    await waitForTotal(b, 101);
  });

  test('reconnects by itself after the server restarts', LIMIT, async () => {
    const first = await serve();
    const page = await openPage(first);
    await page.click('#click');
    await page.click('#click');
    await waitForTotal(page, 2);

    assert.deepEqual(await first.stop('SIGTERM'), { code: 0, signal: null });
    await waitForStatus(page, 'reconnecting');

    // Same port and database: the page's own retries must find it.
    const addr = new URL(first.url).host;
    const second = await serve({ dir: dirs[0], addr });
    assert.equal(second.url, first.url);
    await waitForStatus(page, 'connected');
    await waitForTotal(page, 2);
    await page.click('#click');
    await waitForTotal(page, 3);
  });

  test('works over long-polling when WebSocket is not offered or not available', LIMIT, async () => {
    // A server that offers no WebSocket, and a browser without WebSocket (as
    // behind a proxy that blocks it) against a server that offers both.
    const pollingOnly = await serve({ args: ['--transports', 'polling'] });
    const both = await serve();
    for (const [server, browserHasWebSocket] of [[pollingOnly, true], [both, false]]) {
      const context = await newContext();
      if (!browserHasWebSocket) {
        await context.addInitScript(() => Object.defineProperty(window, 'WebSocket', { value: undefined }));
      }
      const sockets = [];
      context.on('page', (p) => p.on('websocket', (ws) => sockets.push(ws.url())));
      const a = await openPage(server, context);
      const b = await openPage(server, context);
      await a.click('#click');
      await waitForTotal(b, 1);
      await b.click('#click');
      await waitForTotal(a, 2);
      assert.deepEqual(sockets, [], 'no WebSocket was opened: the pages talk over long-polling');
    }
  });

  test('is usable with the keyboard and announces the count', LIMIT, async () => {
    const server = await serve();
    const page = await openPage(server);
    // The first Tab stop is the click button.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'click');
    await page.keyboard.press('Space');
    await waitForTotal(page, 1);
    await page.keyboard.press('Enter');
    await waitForTotal(page, 2);
    const live = await page.evaluate(() => document.getElementById('total').closest('[aria-live]')?.getAttribute('aria-live'));
    assert.equal(live, 'polite');
  });

  test('names: your count, the live leaderboard, and names shown as text', LIMIT, async () => {
    const server = await serve({ args: ['--leaderboard-interval', '100ms'] });
    const context = await newContext();
    const page = await openPage(server, context);

    // An invalid name shows the server's rule.
    await page.fill('#username', '<b>x</b>');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.getElementById('username-error').textContent.includes('1 to 32'));

    await page.fill('#username', 'Ada');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => !document.getElementById('you-line').hidden);
    await waitForStatus(page, 'connected');
    for (let i = 0; i < 3; i++) await page.click('#click');
    await page.waitForFunction(() => document.getElementById('you').textContent === '3');
    await page.waitForFunction(() => document.querySelector('#leaderboard li.me')?.textContent.includes('Ada'));

    // A second tab of the same user (same profile, so same stored session)
    // sees its count move live.
    const tab = await openPage(server, context);
    await tab.waitForFunction(() => document.getElementById('you').textContent === '3');
    await page.click('#click');
    await tab.waitForFunction(() => document.getElementById('you').textContent === '4');

    // Another user whose name looks like HTML: it can only be shown as text.
    const other = await openPage(server);
    await other.evaluate(async () => {
      // Through the API, as another backend might; the server refuses it.
      const response = await fetch('/api/session', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: '<img src=x onerror=alert(1)>' }),
      });
      if (response.status !== 422) throw new Error(`expected 422, got ${response.status}`);
    });
    await other.fill('#username', 'bob');
    await other.click('#login button[type=submit]');
    await other.waitForFunction(() => !document.getElementById('you-line').hidden);
    await waitForStatus(other, 'connected');
    await other.click('#click');
    await page.waitForFunction(() => document.querySelectorAll('#leaderboard li').length === 2);
    assert.equal(await page.locator('#leaderboard b, #leaderboard img').count(), 0);

    await page.click('#logout');
    await page.waitForFunction(() => document.getElementById('you-line').hidden);
    assert.equal(await page.evaluate(() => localStorage.getItem('tally.session')), null);
  });

  test('screenshots on desktop and phone, light and dark', LIMIT, async () => {
    const server = await serve();
    for (const name of ['Ada', 'grace', 'linus']) {
      const page = await openPage(server);
      await page.fill('#username', name);
      await page.click('#login button[type=submit]');
      await page.waitForFunction(() => !document.getElementById('you-line').hidden);
      await waitForStatus(page, 'connected');
      for (let i = 0; i < name.length; i++) await page.click('#click');
      await page.close();
    }
    const shots = [
      ['desktop-light', { viewport: { width: 1280, height: 900 }, colorScheme: 'light' }],
      ['desktop-dark', { viewport: { width: 1280, height: 900 }, colorScheme: 'dark' }],
      ['phone-light', { viewport: { width: 390, height: 844 }, colorScheme: 'light', isMobile: true, hasTouch: true, deviceScaleFactor: 2 }],
      ['phone-dark', { viewport: { width: 390, height: 844 }, colorScheme: 'dark', isMobile: true, hasTouch: true, deviceScaleFactor: 2 }],
    ];
    for (const [name, options] of shots) {
      const page = await openPage(server, await newContext({ ...options, reducedMotion: 'reduce' }));
      // Signed in and clicking, so the pictures show "you", a highlighted
      // leaderboard line and a moving sparkline.
      await page.fill('#username', 'Ada');
      await page.click('#login button[type=submit]');
      await page.waitForFunction(() => !document.getElementById('you-line').hidden);
      await waitForStatus(page, 'connected');
      for (let i = 0; i < 5; i++) await page.click('#click');
      await page.waitForFunction(() => document.getElementById('rate').textContent !== '0');
      await page.waitForFunction(() => document.querySelectorAll('#leaderboard li.me').length === 1);
      await page.screenshot({ path: `${SHOTS}${name}.png`, fullPage: true });
      // The button is big enough to hit with a thumb.
      const box = await page.locator('#click').boundingBox();
      assert.ok(box.height >= 48 && box.width >= 48, `button is ${box.width}×${box.height}`);
    }
  });
});

describe('security headers', () => {
  test('both pages run under a strict Content-Security-Policy without violating it', LIMIT, async () => {
    const server = await serve();
    const context = await newContext();
    for (const path of ['/', '/c/secure']) {
      const page = await context.newPage();
      const violations = [];
      page.on('console', (message) => {
        if (/Content Security Policy|CSP violation/.test(message.text())) violations.push(message.text());
      });
      await page.addInitScript(() => {
        document.addEventListener('securitypolicyviolation', (event) => {
          console.error(`CSP violation: ${event.violatedDirective} ${event.blockedURI}`);
        });
      });
      const response = await page.goto(`${server.url}${path}`);
      const headers = response.headers();
      assert.match(headers['content-security-policy'], /default-src 'none'/);
      assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
      assert.equal(headers['x-content-type-options'], 'nosniff');
      assert.equal(headers['referrer-policy'], 'no-referrer');
      await waitForStatus(page, 'connected');
      if (path === '/') {
        await page.click('#click');
        await waitForTotal(page, 1);
      }
      assert.deepEqual(violations, [], `${path}: ${violations.join('; ')}`);
    }
    const api = await fetch(`${server.url}/api/leaderboard`);
    assert.equal(api.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(api.headers.get('referrer-policy'), 'no-referrer');
  });
});

describe('the page under rate limits', () => {
  test('clicking faster than allowed shows "slow down" and the total stays exact', LIMIT, async () => {
    const server = await serve({ args: ['--click-limit', '2:3'] });
    const page = await openPage(server);
    for (let i = 0; i < 12; i++) await page.click('#click');
    await page.waitForFunction(() => !document.getElementById('slow-down').hidden);
    // The page ends on what the server counted, never on the optimistic
    // clicks. Wait (bounded) until the server has answered all twelve.
    let counted = '';
    const deadline = Date.now() + WAIT_MS;
    while (!/^tally_events_received_total\{event="click"\} 12$/m.test(counted)) {
      assert.ok(Date.now() < deadline, `not all clicks answered:\n${counted}`);
      counted = await (await fetch(`${server.url}/metrics`)).text();
    }
    const total = Number(counted.match(/^tally_clicks_total (\d+)/m)[1]);
    assert.ok(total >= 3 && total < 12, `${total} clicks counted`);
    await waitForTotal(page, total);
  });
});

describe('a conversation page', () => {
  /** Opens /c/<id> signed in as `name` (through the page's own form) and waits until it has joined. */
  async function openConversation(server, id, name) {
    const context = await newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/c/${id}`);
    await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected');
    if (name) {
      await page.fill('#username', name);
      await page.click('#login button[type=submit]');
      await page.waitForFunction(() => !document.getElementById('compose').hidden);
      await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected');
    }
    return page;
  }

  const messageTexts = (page) =>
    page.$$eval('#messages li .content', (items) => items.map((item) => item.textContent));

  test('two pages exchange messages; HTML stays text; a reload shows the history', LIMIT, async () => {
    const server = await serve();
    const ada = await openConversation(server, 'lobby', 'ada');
    const bob = await openConversation(server, 'lobby', 'bob');
    await ada.waitForFunction(() => document.getElementById('online').textContent === '2');

    // Time from pressing Enter in A to the message showing in B, in B's clock.
    const seen = bob.evaluate(
      () =>
        new Promise((resolve) => {
          new MutationObserver(() => resolve(performance.now() + performance.timeOrigin)).observe(
            document.getElementById('messages'),
            { childList: true },
          );
        }),
    );
    await ada.fill('#content', 'hello <b>bob</b> <img src=x onerror="window.pwned=1">');
    const sentAt = await ada.evaluate(() => {
      const at = performance.now() + performance.timeOrigin;
      document.getElementById('compose').requestSubmit();
      return at;
    });
    const latency = (await seen) - sentAt;
    // Reported, not asserted: timing belongs to the benchmarks.
    console.log(`message in page A → page B: ${latency.toFixed(1)} ms`);
    assert.deepEqual(await messageTexts(bob), ['hello <b>bob</b> <img src=x onerror="window.pwned=1">']);
    assert.equal(await bob.locator('#messages b, #messages img').count(), 0, 'rendered as text');
    assert.equal(await bob.evaluate(() => window.pwned), undefined);
    assert.equal(await ada.inputValue('#content'), '', 'the box is cleared once the message is stored');

    // Bob types: Ada sees it. Bob answers; both see both, in order.
    await bob.type('#content', 'hi');
    await ada.waitForFunction(() => document.getElementById('typing').textContent.includes('bob is typing'));
    await bob.press('#content', 'Enter');
    await ada.waitForFunction(() => document.querySelectorAll('#messages li').length === 2);
    assert.deepEqual((await messageTexts(ada))[1], 'hi');

    // The conversation's counter is shared and separate from the global one.
    for (let i = 0; i < 3; i++) await ada.click('#click');
    await bob.waitForFunction(() => document.getElementById('room-total').textContent === '3');
    await bob.waitForFunction(() => document.getElementById('global').textContent === '3');

    // A refused message shows the server's reason.
    await ada.fill('#content', 'x'.repeat(1999) + '\u0007');
    await ada.press('#content', 'Enter');
    await ada.waitForFunction(() => document.getElementById('compose-error').textContent.includes('control characters'));

    // Reload: the history and the counter come back from the server.
    await bob.reload();
    await bob.waitForFunction(() => document.querySelectorAll('#messages li').length === 2);
    assert.deepEqual(await messageTexts(bob), ['hello <b>bob</b> <img src=x onerror="window.pwned=1">', 'hi']);
    await bob.waitForFunction(() => document.getElementById('room-total').textContent === '3');
    await ada.waitForFunction(() => document.getElementById('online').textContent === '2');

    // A message sent while a page is away is caught up when it comes back.
    await bob.context().setOffline(true);
    await ada.fill('#content', 'while you were away');
    await ada.press('#content', 'Enter');
    await ada.waitForFunction(() => document.querySelectorAll('#messages li').length === 3);
    await bob.context().setOffline(false);
    await bob.waitForFunction(() => document.querySelectorAll('#messages li').length === 3, null, { timeout: 60_000 });
    assert.equal((await messageTexts(bob))[2], 'while you were away');
    await bob.screenshot({ path: `${SHOTS}conversation.png`, fullPage: true });
  });

  test('a token that expires while the page is open is renewed without a disconnect', LIMIT, async () => {
    // Tokens live 3 s, so the page renews every second (its floor); the
    // first token is long gone by the time four renewals were received.
    const server = await serve({ args: ['--token-ttl', '3s'] });
    const ada = await openConversation(server, 'renewals', 'ada');
    const metric = async (pattern) => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      return Number(text.match(pattern)?.[1] ?? 0);
    };
    const deadline = Date.now() + 30_000;
    while ((await metric(/^tally_events_received_total\{event="refresh"\} (\d+)$/m)) < 4) {
      assert.ok(Date.now() < deadline, 'the conversation page renews its token with `refresh`');
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    assert.equal(
      await metric(/^tally_socket_disconnects_total\{reason="server_disconnect"\} (\d+)$/m),
      0,
      'no socket was closed for an expired token',
    );
    assert.equal(await ada.evaluate(() => document.getElementById('status').dataset.state), 'connected');
    // Still signed in, on the same connection: posting works.
    await ada.fill('#content', 'still here');
    await ada.press('#content', 'Enter');
    await ada.waitForFunction(() => document.querySelectorAll('#messages li').length === 1);
    assert.equal(await ada.evaluate(() => document.getElementById('compose').hidden), false);
  });

  test('a catch-up of several pages misses nothing, with live messages arriving during it', LIMIT, async () => {
    // Three messages per page: ten missed messages take four pages, and
    // the messages ada keeps sending meanwhile arrive live between them.
    const server = await serve({ args: ['--history-size', '3'] });
    const ada = await openConversation(server, 'catchup', 'ada');
    const bob = await openConversation(server, 'catchup', 'bob');
    const count = (page) => page.evaluate(() => document.querySelectorAll('#messages li').length);
    const send = async (text) => {
      await ada.fill('#content', text);
      await ada.press('#content', 'Enter');
      await ada.waitForFunction((t) => [...document.querySelectorAll('#messages li .content')].some((el) => el.textContent === t), text);
    };
    await send('m00');
    await bob.waitForFunction(() => document.querySelectorAll('#messages li').length === 1);

    await bob.context().setOffline(true);
    for (let i = 1; i <= 10; i++) await send(`m${String(i).padStart(2, '0')}`);
    await bob.context().setOffline(false);
    for (let i = 11; i <= 15; i++) await send(`m${String(i).padStart(2, '0')}`);
    await bob.waitForFunction(() => document.querySelectorAll('#messages li').length === 16, null, { timeout: 60_000 });
    const expected = Array.from({ length: 16 }, (_, i) => `m${String(i).padStart(2, '0')}`);
    assert.deepEqual(await messageTexts(bob), expected, 'every message, once, in order');
    assert.equal(await count(ada), 16);
  });

  test('the main page opens a conversation; anonymous visitors read but cannot post', LIMIT, async () => {
    const server = await serve();
    const page = await openPage(server);
    await page.fill('#conversation', 'book-club');
    await page.click('#open-conversation button[type=submit]');
    await page.waitForURL(/\/c\/book-club$/);
    await page.waitForFunction(() => document.getElementById('status').dataset.state === 'connected');
    assert.equal(await page.textContent('#conversation-name'), 'book-club');
    assert.equal(await page.isHidden('#compose'), true, 'no message box without a name');
    const invalid = await fetch(`${server.url}/c/not%20valid`);
    assert.equal(invalid.status, 404);
  });
});

describe('the page inside a host application', () => {
  test('works under /tally with the host signing users in', LIMIT, async () => {
    const dir = await makeDir();
    dirs.push(dir);
    const server = await startExample(dir);
    servers.push(server);

    // Sign in on the host's own page; it sends the browser on to /tally/.
    const page = await (await newContext()).newPage();
    await page.goto(server.url);
    await page.fill('input[name=username]', 'Ada');
    await page.click('button');
    await page.waitForURL(`${server.url}/tally/`);
    await waitForStatus(page, 'connected');

    // The host's cookie identified the socket: no tally sign-in form.
    await page.waitForFunction(() => document.getElementById('me-name').textContent === 'Ada');
    assert.equal(await page.isVisible('#login'), false);
    assert.equal(await page.isVisible('#logout'), false);

    for (let i = 0; i < 3; i++) await page.click('#click');
    await waitForTotal(page, 3);
    await page.waitForFunction(() => document.getElementById('you').textContent === '3');
    await page.waitForFunction(() => document.querySelectorAll('#leaderboard li.me').length === 1);

    // A second, anonymous visitor sees the same total live.
    const other = await (await newContext()).newPage();
    await other.goto(`${server.url}/tally`);
    assert.equal(new URL(other.url()).pathname, '/tally/', 'redirected to the trailing slash');
    await waitForStatus(other, 'connected');
    await waitForTotal(other, 3);
    await page.click('#click');
    await waitForTotal(other, 4);
    assert.equal(await other.isVisible('#login'), true, 'anonymous visitors still see the form');
  });
});
