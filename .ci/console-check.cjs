// The console (`GET /`) in headless Chromium, as .ci/console-check sets it up: 3,450 local
// contacts, a push that succeeded, a pull, and a push of 3,000 contacts still running.
// At 1280×800 and 390×844, anonymous and then signed in through the page's own form, the key
// facts must be visible, nothing may overflow the window, table rows must not wrap on a wide
// window, and the live part must refresh without a reload. Exits non-zero naming what failed.
'use strict';
const path = require('node:path');
const { chromium } = require(path.join(process.env.PLAYWRIGHT_MODULES, 'playwright-core'));

const url = process.env.CONSOLE_URL;
const token = process.env.CONSOLE_TOKEN;
const shots = process.env.CONSOLE_SCREENSHOTS;
const failures = [];

function check(ok, what) {
  if (!ok) failures.push(what);
}

async function visible(page, selector, what, size) {
  const el = page.locator(selector).first();
  const shown = await el.isVisible().catch(() => false);
  check(shown, `${size}: ${what} (${selector}) is not visible`);
  if (!shown) return;
  const box = await el.boundingBox();
  const width = page.viewportSize().width;
  check(box && box.x >= 0 && box.x + box.width <= width + 1,
    `${size}: ${what} (${selector}) does not fit the window's width`);
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent().catch(() => '')) || '';
}

async function anonymous(page, size) {
  await visible(page, '#connection', 'the connection', size);
  check((await text(page, '#connection')).includes('HubSpot is connected to account'),
    `${size}: the connection does not say which account`);
  await visible(page, '#contacts-total', 'the contacts total', size);
  check((await text(page, '#contacts-total')).trim() === '3,450',
    `${size}: contacts total is "${await text(page, '#contacts-total')}", not 3,450`);
  for (const id of ['linked', 'not-pushed', 'changed', 'failed', 'tombstoned']) {
    await visible(page, `#contacts-${id}`, `contacts ${id}`, size);
  }
  await visible(page, '#push-card progress', 'the running push\'s progress bar', size);
  check(/ of 3,000 /.test(await text(page, '#push-card .progress-text')),
    `${size}: the running push does not say "of 3,000": ${await text(page, '#push-card .progress-text')}`);
  check((await text(page, '#push-card')).includes('Last success'),
    `${size}: the push card has no last success`);
  check((await text(page, '#pull-card')).includes('Last success'),
    `${size}: the pull card has no last success`);
  await visible(page, '#webhook-pulls', 'the webhook pull line', size);
  await visible(page, '#jobs', 'the recent jobs', size);
  const rows = await page.locator('#jobs tbody tr').count();
  check(rows >= 3, `${size}: ${rows} recent jobs listed, expected at least 3`);
  await visible(page, 'a[href="/api-docs"]', 'the link to the API docs', size);
  await visible(page, 'a[href="/metrics"]', 'the link to the metrics', size);
  check((await text(page, '#failures')).includes('sign in'),
    `${size}: an anonymous visitor is not told to sign in for failed records`);
  check(await page.locator('#disconnect').count() === 0,
    `${size}: an anonymous visitor sees the disconnect button`);
}

async function layout(page, size) {
  const overflow = await page.evaluate(
    () => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `${size}: the page is ${overflow}px wider than the window`);
  if (page.viewportSize().width >= 1000) {
    // One line per job: no timestamp or count wraps on a wide window.
    const heights = await page.$$eval('#jobs tbody tr', (rows) =>
      rows.map((r) => r.getBoundingClientRect().height));
    const tall = heights.filter((h) => h > 48);
    check(tall.length === 0, `${size}: ${tall.length} job rows wrap (heights ${heights.join(', ')})`);
  }
}

async function refreshes(page, size) {
  await page.evaluate(() => { window.__notReloaded = true; });
  const before = await text(page, '#stamp');
  let after = before;
  for (let i = 0; i < 30 && after === before; i++) {
    await page.waitForTimeout(500);
    after = await text(page, '#stamp');
  }
  check(after !== before, `${size}: the live part did not refresh within 15 s`);
  check(await page.evaluate(() => window.__notReloaded === true),
    `${size}: the page reloaded instead of refreshing its live part`);
}

async function signedIn(page, size) {
  await page.fill('input[name="token"]', token);
  await Promise.all([page.waitForNavigation(), page.click('#login button[type="submit"]')]);
  await visible(page, '#logout', 'the sign-out button', size);
  await visible(page, '#disconnect', 'the disconnect button', size);
  check(!(await text(page, '#failures')).includes('sign in'),
    `${size}: the signed-in operator is still asked to sign in for failed records`);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'],
  });
  try {
    for (const [width, height] of [[1280, 800], [390, 844]]) {
      const size = `${width}x${height}`;
      const context = await browser.newContext({ viewport: { width, height } });
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
      await page.goto(url, { waitUntil: 'load' });
      await anonymous(page, size);
      await layout(page, size);
      await refreshes(page, size);
      if (shots) await page.screenshot({ path: path.join(shots, `console-${size}.png`), fullPage: true });
      await signedIn(page, size);
      await layout(page, size);
      if (shots) await page.screenshot({ path: path.join(shots, `console-${size}-operator.png`), fullPage: true });
      check(errors.length === 0, `${size}: the page logged errors: ${errors.join(' | ')}`);
      await context.close();
    }
  } finally {
    await browser.close();
  }
  if (failures.length > 0) {
    console.error(`console-check: ${failures.length} failed:\n  ${failures.join('\n  ')}`);
    process.exit(1);
  }
  console.log('console-check: the console shows its key facts at 1280x800 and 390x844');
})().catch((e) => {
  console.error(`console-check: ${e.stack || e}`);
  process.exit(1);
});
