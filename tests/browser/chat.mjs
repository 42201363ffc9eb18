// palisade's chat page in headless Chromium (Debian's, driven by playwright-core; no
// browser download, no network beyond 127.0.0.1). Started by tests/api/browser.rs with
// a palisade on BASE whose mock model answers with an XSS payload, and users alice
// (employee), hannah (HR). Exits non-zero, naming the failed check, if anything is off.
//
// Environment: BASE, ALICE_PASSWORD, HANNAH_PASSWORD, ADAM_PASSWORD, ARTIFACTS
// (screenshots), CHROMIUM, MOCK_BASE (the stand-in's control), STRICT_BASE and
// STRICT_ALICE_PASSWORD (dpop = "required" with nonces), OPEN_PORT and
// OPEN_ALICE_PASSWORD (no public_origin).
import { chromium } from 'playwright-core';
import { webcrypto } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';

const { BASE, ALICE_PASSWORD, HANNAH_PASSWORD, ADAM_PASSWORD, ARTIFACTS, MOCK_BASE } = process.env;
const AXE = readFileSync(new URL('./node_modules/axe-core/axe.min.js', import.meta.url), 'utf8');
mkdirSync(ARTIFACTS, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** A page that records every request URL, DPoP proof and issued access token. */
async function openPage(context) {
  const page = await context.newPage();
  const seen = { urls: [], answered: [], tokens: [], proofs: [], errors: [] };
  page.on('request', (r) => {
    seen.urls.push(r.url());
    const proof = r.headers().dpop;
    const auth = r.headers().authorization;
    if (proof && auth) seen.proofs.push({ method: r.method(), url: r.url(), proof, token: auth.split(' ')[1] });
  });
  page.on('response', async (r) => {
    seen.answered.push(r.url());
    if (/\/auth\/(login|refresh)$/.test(new URL(r.url()).pathname) && r.ok()) {
      try { seen.tokens.push((await r.json()).access_token); } catch { /* a redirect or empty body */ }
    }
  });
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') seen.errors.push(m.text()); });
  return { page, seen };
}

async function signIn(page, user, password, base = BASE) {
  if (base) await page.goto(base);
  await page.getByLabel('Username').waitFor();
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('#who-name', { hasText: user }).waitFor();
}

/** axe-core in the page: no serious or critical violation. */
async function axeCheck(page, what) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] }))
    .violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 3) })));
  const bad = found.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  check(bad.length === 0, `axe-core: no serious or critical violation on ${what}${bad.length ? `: ${JSON.stringify(bad)}` : ''}`);
}

/** Both colour schemes of the view on screen: axe-core on each, a screenshot of each. */
async function everyScheme(page, what, shot) {
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    await axeCheck(page, `${what} (${scheme})`);
    if (shot) {
      await page.screenshot({ path: `${ARTIFACTS}/${shot}${scheme === 'dark' ? '-dark' : ''}.png`, fullPage: true });
    }
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

const mock = {
  delay: (ms) => fetch(`${MOCK_BASE}/__mock/chunk_delay`, { method: 'POST', body: String(ms) }),
  stats: async () => (await fetch(`${MOCK_BASE}/__mock/stats`)).json(),
};

const alice = await browser.newContext();
const { page, seen } = await openPage(alice);

// The page and its policy.
const first = await page.goto(BASE);
const csp = first.headers()['content-security-policy'];
check(csp.includes("default-src 'self'") && csp.includes("script-src 'self'") && csp.includes("object-src 'none'")
  && csp.includes("base-uri 'none'") && csp.includes("frame-ancestors 'none'"), `a strict CSP on the page: ${csp}`);
check(first.headers()['x-frame-options'] === 'DENY', 'X-Frame-Options: DENY');

// Keyboard only: the username field has focus, Tab moves on, Enter submits.
await page.getByLabel('Username').waitFor();
await everyScheme(page, 'the sign-in view', null);
await page.screenshot({ path: `${ARTIFACTS}/signin.png` });
await page.getByLabel('Username').focus();
await page.keyboard.type('alice');
await page.keyboard.press('Tab');
check(await page.evaluate(() => document.activeElement.id) === 'password', 'Tab moves from username to password');
await page.keyboard.type(ALICE_PASSWORD);
await page.keyboard.press('Enter');
await page.locator('#who-name', { hasText: 'alice' }).waitFor();
check(true, 'signed in with the keyboard alone');
check(await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'question', null, { timeout: 5000 })
  .then(() => true, () => false), 'after sign-in the focus is in the question box');

// Shift+Enter breaks the line; Enter (below) sends.
await page.getByLabel('Your question').fill('line one');
await page.keyboard.press('Shift+Enter');
await page.keyboard.type('line two');
check(await page.getByLabel('Your question').inputValue() === 'line one\nline two'
  && await page.locator('#messages li').count() === 0, 'Shift+Enter breaks the line and sends nothing');

// Ask; the streamed answer arrives with citations, rendered as sanitized Markdown.
await alice.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
await page.getByLabel('Your question').fill('How many vacation days do we get?');
await page.keyboard.press('Enter');
const answer = page.locator('#messages li.assistant').last();
await answer.locator('.citation').first().waitFor({ timeout: 15000 });
const answerText = await answer.textContent();
check(answerText.includes('Vacation is 30 days'), `the streamed answer is shown: ${answerText}`);
check(answerText.includes('<img src=x onerror='), 'raw HTML in the answer is shown as text');
check(await page.locator('#messages img, #messages script, #messages iframe, #messages style').count() === 0,
  'no image, script, frame or style element was made from model output');
check(await page.evaluate(() => window.__pwned) === undefined, 'the XSS payload did not execute');
check(await answer.locator('h2', { hasText: 'Summary' }).count() === 1 && await answer.locator('li strong').count() === 1,
  'Markdown headings, lists and emphasis render');
check(await answer.locator('pre code.hljs').count() === 1 && await answer.locator('pre code .hljs-built_in, pre code span').count() > 0,
  'a code block is highlighted');
check(await answer.locator('table td', { hasText: 'vacation' }).count() === 1, 'a table renders');
check(answerText.includes('[image: chart — https://evil.example/leak?q=SECRET-CANARY-77]'),
  'an image is shown as a note naming its address, never loaded');
const link = answer.locator('a', { hasText: 'the policy' });
check(await link.getAttribute('href') === 'https://evil.example/policy' && await link.getAttribute('target') === '_blank'
  && (await link.getAttribute('rel')).includes('noopener') && (await link.getAttribute('rel')).includes('noreferrer')
  && await link.getAttribute('title') === 'https://evil.example/policy' && (await link.textContent()).includes('(evil.example)'),
  'a link shows its target and opens only on a click, in a new tab, without opener or referrer');
const leaked = seen.urls.filter((u) => new URL(u).origin !== new URL(BASE).origin);
check(leaked.length === 0, `no request left the page for another host (${leaked.join(', ')})`);
// The policy in force: an inline script injected into the DOM is refused by the browser.
check(await page.evaluate(() => {
  const s = document.createElement('script');
  s.textContent = 'window.__inline = 1';
  document.body.append(s);
  return window.__inline;
}) === undefined, 'the CSP blocks an inline script');
// And an image injected anyway (past the sanitizer) would not load from elsewhere.
const imgBlocked = await page.evaluate(() => new Promise((resolve) => {
  const i = document.createElement('img');
  i.onerror = () => resolve(true);
  i.onload = () => resolve(false);
  i.src = 'https://evil.example/direct.png';
  document.body.append(i);
}));
check(imgBlocked && !seen.answered.some((u) => u.includes('evil.example')), 'the CSP stops a remote image even if one got into the page');
await page.evaluate(() => document.querySelectorAll('body > img').forEach((i) => i.remove()));

await answer.getByRole('button', { name: 'Copy', exact: true }).click();
const copied = await page.evaluate(() => navigator.clipboard.readText());
check(copied.includes('![chart](https://evil.example/leak') && copied.includes('```python'), 'Copy puts the answer\'s Markdown on the clipboard');

await answer.locator('.citation').first().click();
await page.locator('#passage-text', { hasText: 'Employees get 30 days of vacation' }).waitFor();
check((await page.locator('#passage-text mark').textContent()).includes('30 days of vacation'), 'a citation opens the document with the cited passage highlighted');
await everyScheme(page, 'the chat with an answer', 'chat');

// Stop: Escape ends the stream; the upstream call is cancelled within a second; what
// came is kept and marked.
await page.getByRole('button', { name: 'Close' }).click();
await mock.delay(150);
const before = await mock.stats();
await page.getByLabel('Your question').fill('Tell me everything about vacation.');
await page.keyboard.press('Enter');
const partial = page.locator('#messages li.assistant').last();
// Stopped once the first sentence is on screen (waiting for a word of it could stop
// before the rest of the sentence arrives on a busy machine).
await partial.locator('.body', { hasText: 'Vacation is 30 days' }).waitFor({ timeout: 15000 });
check(await page.getByRole('button', { name: 'Stop' }).isVisible(), 'a Stop button shows while the answer streams');
await page.keyboard.press('Escape');
const stoppedAt = Date.now();
let after = await mock.stats();
while (after.cancelled <= before.cancelled && Date.now() - stoppedAt < 3000) {
  await new Promise((r) => setTimeout(r, 20));
  after = await mock.stats();
}
const tookMs = Date.now() - stoppedAt;
check(after.cancelled > before.cancelled && tookMs < 1000, `stopping closed the upstream stream (after ${tookMs} ms)`);
await mock.delay(5);
await partial.locator('.stopped-note').waitFor();
check((await partial.textContent()).includes('Vacation is 30 days') && !(await partial.textContent()).includes('| vacation | 30 |'),
  'the partial answer is kept and marked as stopped');
check(await page.getByRole('button', { name: 'Send' }).isVisible(), 'Send is back after stopping');
// Kept by the server as well: the thread, opened again, shows the stopped answer.
let reopened = false;
for (const until = Date.now() + 5000; !reopened && Date.now() < until;) {
  await page.locator('#thread-list button[aria-current=true]').click();
  await page.locator('#messages li.assistant').first().waitFor();
  reopened = await page.locator('#messages li.assistant.stopped .stopped-note').count() === 1;
  if (!reopened) await new Promise((r) => setTimeout(r, 200));
}
check(reopened, 'the stopped answer is stored, marked, and shown again when the thread is reopened');

// Regenerate replaces the last (here: the stopped) answer, on the page and in the thread.
const answersBefore = await page.locator('#messages li.assistant').count();
check(await page.locator('#messages li.assistant .regenerate:visible').count() === 1, 'Regenerate is offered on the last answer only');
await page.locator('#messages li.assistant').last().getByRole('button', { name: 'Regenerate' }).click();
await page.locator('#messages > li.assistant:last-child[aria-busy="false"] .citation').first().waitFor({ timeout: 15000 });
check(await page.locator('#messages li.assistant').count() === answersBefore && await page.locator('#messages li.stopped').count() === 0,
  'Regenerate replaces the last answer');
await page.locator('#thread-list button[aria-current=true]').click();
await page.locator('#messages li.assistant').first().waitFor();
check(await page.locator('#messages li.assistant').count() === answersBefore && await page.locator('#messages li.stopped').count() === 0
  && await page.locator('#messages li.user', { hasText: 'Tell me everything about vacation.' }).count() === 1,
  'reopened, the thread holds the new answer in place of the old');

// Rename, search, and (later) delete the conversation.
page.once('dialog', (d) => d.accept('Vacation planning'));
await page.getByRole('button', { name: 'Rename' }).click();
await page.locator('#conversation-title', { hasText: 'Vacation planning' }).waitFor();
await page.locator('#thread-list', { hasText: 'Vacation planning' }).waitFor();
check(true, 'a conversation is renamed');
await page.getByLabel('Search conversations').fill('no-such-words-anywhere');
await page.locator('#thread-list', { hasText: 'No conversation matches.' }).waitFor();
check(await page.locator('#thread-list button').count() === 0, 'a search without match says so');
await page.getByLabel('Search conversations').fill('everything about');
await page.locator('#thread-list button', { hasText: 'Vacation planning' }).waitFor();
check(await page.locator('#thread-list button').count() === 1, 'search finds the conversation by one of its questions');
await page.getByLabel('Search conversations').fill('');
await page.locator('#thread-list button', { hasText: 'Vacation planning' }).waitFor();

// Reload: still signed in, through the HttpOnly refresh cookie alone.
await page.reload();
await page.locator('#who-name', { hasText: 'alice' }).waitFor();
check(true, 'a reload keeps the session (refresh cookie)');
const storage = await page.evaluate(() => ({
  local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
}));
check(storage.local === 0 && storage.session === 0, 'localStorage and sessionStorage are empty');
check(!storage.cookie.includes('palisade_refresh'), 'the refresh cookie is invisible to scripts');
const refreshCookie = (await alice.cookies()).find((c) => c.name === '__Host-palisade_refresh');
check(refreshCookie && refreshCookie.httpOnly && refreshCookie.sameSite === 'Strict', 'the refresh cookie is HttpOnly and SameSite=Strict');
check(seen.tokens.length >= 2, 'tokens were issued (login and refresh)');
check(seen.urls.every((u) => seen.tokens.every((t) => !u.includes(t))), 'no request URL carries a token');
check(seen.proofs.length > 0 && seen.proofs.every((p) => p.proof.split('.').length === 3), 'every API call carries a DPoP proof');

// The key is a non-extractable CryptoKey in IndexedDB.
const keyFacts = await page.evaluate(() => new Promise((resolve) => {
  const open = indexedDB.open('palisade-dpop', 1);
  open.onsuccess = () => {
    const get = open.result.transaction('keys').objectStore('keys').get('key');
    get.onsuccess = async () => {
      const k = get.result.privateKey;
      let exported = true;
      try { await crypto.subtle.exportKey('jwk', k); } catch { exported = false; }
      resolve({ type: k.type, extractable: k.extractable, exported });
    };
  };
}));
check(keyFacts.type === 'private' && keyFacts.extractable === false && keyFacts.exported === false,
  `the DPoP private key cannot be exported: ${JSON.stringify(keyFacts)}`);

// The employee does not see the HR document.
await page.getByRole('button', { name: 'Documents' }).click();
await page.locator('#document-list', { hasText: 'Vacation policy' }).waitFor();
check(await page.locator('#view-chat').isHidden() && await page.locator('#view-sessions').isHidden(),
  'one view at a time: the chat is hidden while the documents show');
check(!(await page.locator('#document-list').textContent()).includes('Salary bands'), 'the employee does not see the HR document');
check(await page.locator('#upload').isHidden(), 'a reader is offered no upload');
await everyScheme(page, 'the documents view', null);
await page.getByRole('button', { name: 'Sessions' }).click();
await page.locator('#session-list li').first().waitFor();
await everyScheme(page, 'the sessions view', 'sessions');

// An access token copied out of the page and replayed from outside the browser.
const token = seen.tokens[seen.tokens.length - 1];
async function outside(method, path, headers) {
  const r = await fetch(`${BASE}${path}`, { method, headers });
  let code = null;
  try { code = (await r.json()).error.code; } catch { /* no body */ }
  return { status: r.status, challenge: r.headers.get('www-authenticate') || '', code };
}
function refused(r, error, what) {
  check(r.status === 401 && r.challenge.startsWith('DPoP') && r.challenge.includes(`error="${error}"`) && r.code === error,
    `${what} → 401 ${error} (${r.status} ${r.challenge})`);
}
refused(await outside('GET', '/auth/me', { Authorization: `Bearer ${token}` }), 'invalid_token', 'the token as a bearer token');
refused(await outside('GET', '/auth/me', { Authorization: `DPoP ${token}` }), 'invalid_dpop_proof', 'the token without a proof');
const thief = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
const thiefJwk = await webcrypto.subtle.exportKey('jwk', thief.publicKey);
async function thiefProof(method, path, tok, iat = Math.floor(Date.now() / 1000)) {
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: thiefJwk.x, y: thiefJwk.y } };
  const claims = { jti: b64url(webcrypto.getRandomValues(new Uint8Array(16))), htm: method, htu: `${BASE}${path}`, iat,
    ath: b64url(await webcrypto.subtle.digest('SHA-256', new TextEncoder().encode(tok))) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, thief.privateKey, new TextEncoder().encode(input));
  return `${input}.${b64url(new Uint8Array(sig))}`;
}
refused(await outside('GET', '/auth/me', { Authorization: `DPoP ${token}`, DPoP: await thiefProof('GET', '/auth/me', token) }),
  'invalid_dpop_proof', 'a proof from another key');
refused(await outside('GET', '/auth/me', { Authorization: `DPoP ${token}`, DPoP: await thiefProof('GET', '/auth/me', token, Math.floor(Date.now() / 1000) - 600) }),
  'invalid_dpop_proof', 'an expired proof');
const captured = seen.proofs.filter((p) => p.method === 'GET' && new URL(p.url).pathname === '/v1/threads').pop();
const capturedPath = new URL(captured.url).pathname;
const capturedAuth = { Authorization: `DPoP ${captured.token}`, DPoP: captured.proof };
refused(await outside('GET', capturedPath, capturedAuth), 'invalid_dpop_proof', `the page's own proof replayed (GET ${capturedPath})`);
refused(await outside('GET', capturedPath === '/auth/me' ? '/v1/threads' : '/auth/me', capturedAuth), 'invalid_dpop_proof', 'the page\'s proof for another URL');
refused(await outside('POST', capturedPath, capturedAuth), 'invalid_dpop_proof', 'the page\'s proof for another method');

// The page's own calls keep working.
await page.getByRole('button', { name: 'Chat' }).click();
await page.getByRole('button', { name: 'New conversation' }).click();
await page.getByLabel('Your question').fill('And how many sick days?');
await page.getByRole('button', { name: 'Send' }).click();
await page.locator('#messages li.assistant').last().locator('.citation').first().waitFor({ timeout: 15000 });
check(true, "the page's own calls keep working after the replays");

// Delete a conversation.
await page.locator('#thread-list button', { hasText: 'Vacation planning' }).click();
await page.locator('#conversation-title', { hasText: 'Vacation planning' }).waitFor();
page.once('dialog', (d) => d.accept());
await page.getByRole('button', { name: 'Delete' }).click();
await page.locator('#conversation-title', { hasText: 'New conversation' }).waitFor();
check(await page.locator('#thread-list button', { hasText: 'Vacation planning' }).waitFor({ state: 'detached', timeout: 5000 })
  .then(() => true, () => false), 'a deleted conversation leaves the list');

// A writer uploads a document (Markdown) readable by everyone and follows its
// indexing; a reader then finds it.
const writer = await browser.newContext();
const { page: adamPage } = await openPage(writer);
await signIn(adamPage, 'adam', ADAM_PASSWORD);
await adamPage.getByRole('button', { name: 'Documents' }).click();
await adamPage.locator('#upload').waitFor();
const choices = await adamPage.locator('#acl-options label').allTextContents();
check(choices.includes('Everyone in the organisation') && choices.includes('Role admin') && choices.includes('Only me')
  && !choices.some((c) => c.includes('hr')), `the ACL picker offers what the writer holds: ${choices.join(', ')}`);
await adamPage.getByLabel('Title').fill('Parking rules');
await adamPage.getByLabel('File (text, Markdown or PDF)').setInputFiles({
  name: 'parking.md', mimeType: 'text/markdown',
  buffer: Buffer.from('# Parking\n\nThe parking garage opens at seven; bicycles go in the basement.\n'),
});
await adamPage.getByLabel('Everyone in the organisation').check();
await adamPage.getByRole('button', { name: 'Upload' }).click();
await adamPage.locator('#upload-status', { hasText: 'Parking rules: ready' }).waitFor({ timeout: 30000 });
check(await adamPage.locator('#upload-status progress').evaluate((p) => p.value) === 100, 'the upload shows its indexing progress to the end');
await everyScheme(adamPage, 'the documents view with the upload form', 'upload');
await page.getByRole('button', { name: 'Documents' }).click();
await page.locator('#document-list', { hasText: 'Parking rules' }).waitFor();
check(true, 'a reader finds the uploaded document');

// The HR user sees the HR document; two tabs of one browser share the session (a
// concurrent refresh is waited out).
const hr = await browser.newContext();
const { page: hrPage } = await openPage(hr);
await signIn(hrPage, 'hannah', HANNAH_PASSWORD);
await hrPage.getByRole('button', { name: 'Documents' }).click();
await hrPage.locator('#document-list', { hasText: 'Salary bands' }).waitFor();
check(true, 'the HR user sees the HR document');
await hrPage.screenshot({ path: `${ARTIFACTS}/documents.png`, fullPage: true });
await hrPage.getByRole('button', { name: 'Chat' }).click();
const tab2 = await hr.newPage();
await Promise.all([hrPage.reload(), tab2.goto(BASE)]);
await hrPage.locator('#who-name', { hasText: 'hannah' }).waitFor();
await tab2.locator('#who-name', { hasText: 'hannah' }).waitFor();
check(true, 'two tabs loading at once both stay signed in');

// A phone-sized screen: the answer and the question first, the list behind a button.
const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true });
const { page: phonePage } = await openPage(phone);
await phonePage.goto(BASE);
await phonePage.getByLabel('Username').waitFor();
await phonePage.screenshot({ path: `${ARTIFACTS}/phone-signin.png`, fullPage: true });
await signIn(phonePage, 'hannah', HANNAH_PASSWORD, null);
await phonePage.getByLabel('Your question').fill('How many vacation days?');
await phonePage.getByRole('button', { name: 'Send' }).click();
await phonePage.locator('#messages li.assistant .citation').first().waitFor({ timeout: 15000 });
const overflow = await phonePage.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
check(!overflow, 'no horizontal scrolling on a phone-sized viewport');
check(await phonePage.locator('#threads').isHidden(), 'on a phone the conversation list is collapsed');
const qBox = await phonePage.getByLabel('Your question').boundingBox();
check(qBox && qBox.y < 844 * 2, `the question box comes early on a phone (y = ${qBox && qBox.y})`);
await everyScheme(phonePage, 'the chat on a phone', 'phone');
await phonePage.getByRole('button', { name: 'Conversations' }).first().click();
await phonePage.locator('#threads').waitFor({ state: 'visible' });
await phonePage.screenshot({ path: `${ARTIFACTS}/phone-threads.png`, fullPage: true });
check(true, 'the conversation list opens behind its button');
await phonePage.getByRole('button', { name: 'Documents' }).click();
await phonePage.locator('#document-list', { hasText: 'Salary bands' }).waitFor();
await everyScheme(phonePage, 'the documents view on a phone', 'phone-documents');
await phonePage.getByRole('button', { name: 'Sessions' }).click();
await phonePage.locator('#session-list li').first().waitFor();
await everyScheme(phonePage, 'the sessions view on a phone', 'phone-sessions');
check(!(await phonePage.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)),
  'no horizontal scrolling in the other views on a phone');

// Sign out everywhere from one browser: the other lands on sign-in at its next action.
const other = await browser.newContext();
const { page: otherPage } = await openPage(other);
await signIn(otherPage, 'alice', ALICE_PASSWORD);
await page.getByRole('button', { name: 'Sessions' }).click();
await page.getByRole('button', { name: 'Sign out everywhere' }).click();
await page.locator('#signin').waitFor({ state: 'visible' });
await otherPage.getByRole('button', { name: 'Documents' }).click();
await otherPage.locator('#signin').waitFor({ state: 'visible' });
check((await otherPage.locator('#notice').textContent()).includes('session has ended'), 'the other browser is told its session ended');
const leftover = await otherPage.evaluate(() => ({
  threads: document.getElementById('thread-list').childElementCount,
  messages: document.getElementById('messages').childElementCount,
  documents: document.getElementById('document-list').childElementCount,
  name: document.getElementById('who-name').textContent,
}));
check(JSON.stringify(leftover) === JSON.stringify({ threads: 0, messages: 0, documents: 0, name: '' }),
  `a session ended elsewhere leaves nothing on the page: ${JSON.stringify(leftover)}`);

// Two people, one tab: alice signs out, hannah signs in. Nothing of alice's is in the
// page, its lists, or its history.
const shared = await browser.newContext();
const { page: kiosk } = await openPage(shared);
await signIn(kiosk, 'alice', ALICE_PASSWORD);
await kiosk.getByLabel('Your question').fill('Private question from alice about her review');
await kiosk.keyboard.press('Enter');
await kiosk.locator('#messages li.assistant .citation').first().waitFor({ timeout: 15000 });
await kiosk.getByLabel('Your question').fill('An unsent draft by alice');
await kiosk.getByRole('button', { name: 'Sign out', exact: true }).click();
await kiosk.locator('#signin').waitFor({ state: 'visible' });
const keyGone = await kiosk.evaluate(() => new Promise((resolve) => {
  const open = indexedDB.open('palisade-dpop', 1);
  open.onsuccess = () => {
    const get = open.result.transaction('keys').objectStore('keys').get('key');
    get.onsuccess = () => resolve(get.result === undefined);
  };
}));
check(keyGone, 'signing out forgets the DPoP key pair');
await signIn(kiosk, 'hannah', HANNAH_PASSWORD, null);
const traces = ['Private question from alice', 'An unsent draft by alice', 'alice'];
const dom = async () => kiosk.evaluate(() => document.documentElement.outerHTML + document.getElementById('question').value);
let html = await dom();
check(traces.every((t) => !html.includes(t)), 'after another user signs in, no text of the last one is anywhere in the DOM');
await kiosk.locator('#thread-list li').first().waitFor();
check(await kiosk.locator('#thread-list button', { hasText: 'Private question' }).count() === 0,
  "the new user's conversation list holds hers, none of the last user's");
await kiosk.goBack().catch(() => null);
html = await kiosk.evaluate(() => document.documentElement.outerHTML).catch(() => '');
check(traces.every((t) => !html.includes(t)), 'Back shows nothing of the last user');
await kiosk.goForward().catch(() => null);
html = await kiosk.evaluate(() => document.documentElement.outerHTML).catch(() => '');
check(traces.every((t) => !html.includes(t)), 'Forward again (the back/forward cache) shows nothing of the last user');

// Origins: the configured origin at another address is told so (not "wrong password");
// without public_origin both loopback names of a non-default port just work.
const elsewhere = await browser.newContext();
const { page: wrongPage } = await openPage(elsewhere);
const misnamed = BASE.replace('localhost', '127.0.0.1');
await wrongPage.goto(misnamed);
await wrongPage.getByLabel('Username').fill('alice');
await wrongPage.getByLabel('Password').fill(ALICE_PASSWORD);
await wrongPage.getByRole('button', { name: 'Sign in', exact: true }).click();
await wrongPage.locator('#notice', { hasText: 'configured for' }).waitFor();
const said = await wrongPage.locator('#notice').textContent();
check(said.includes(`served from ${misnamed}`) && said.includes(`configured for ${BASE}`) && !said.includes('Wrong username'),
  `a page at the wrong address says so: ${said}`);
for (const host of ['127.0.0.1', 'localhost']) {
  const ctx = await browser.newContext();
  const { page: p } = await openPage(ctx);
  await signIn(p, 'alice', process.env.OPEN_ALICE_PASSWORD, `http://${host}:${process.env.OPEN_PORT}`);
  check(true, `without public_origin, sign-in works at http://${host}:${process.env.OPEN_PORT}`);
  await ctx.close();
}

// A deployment with dpop = "required" and server nonces: the page answers the
// use_dpop_nonce challenge and works on.
const strict = await browser.newContext();
const { page: strictPage, seen: strictSeen } = await openPage(strict);
await signIn(strictPage, 'alice', process.env.STRICT_ALICE_PASSWORD, process.env.STRICT_BASE);
await strictPage.getByRole('button', { name: 'Documents' }).click();
await strictPage.locator('#document-list li').first().waitFor();
check(strictSeen.proofs.length > 0, 'with dpop = "required" and server nonces the page signs in and works');

// An MCP client's sign-in, as its user sees it: palisade's consent page (readable, no
// axe-core violation, on a desktop and a phone), a wrong password said so, then Allow
// sends the browser to the client's loopback address with a code and the state.
{
  const redirect = 'http://127.0.0.1:9/callback';
  const reg = await (await fetch(`${BASE}/oauth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'Claude Desktop', redirect_uris: [redirect] }),
  })).json();
  check(Boolean(reg.client_id), 'an MCP client registers itself');
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const url = `${BASE}/oauth/authorize?response_type=code&client_id=${encodeURIComponent(reg.client_id)}`
    + `&redirect_uri=${encodeURIComponent(redirect)}&code_challenge=${'E'.repeat(43)}&code_challenge_method=S256&state=st-7`;
  await page.goto(url);
  check((await page.locator('h1').textContent()).includes('Claude Desktop wants to use palisade'), 'the consent page names the application');
  check((await page.locator('.where').textContent()).includes('127.0.0.1:9'), 'and where the answer goes');
  await axeCheck(page, 'the consent page');
  await page.screenshot({ path: `${ARTIFACTS}/consent.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const fits = await page.evaluate(() => document.documentElement.scrollWidth <= 390);
  check(fits, 'the consent page fits a 390 px phone without sideways scrolling');
  await page.screenshot({ path: `${ARTIFACTS}/consent-phone.png`, fullPage: true });
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill('not her password');
  await page.getByRole('button', { name: 'Allow' }).click();
  await page.locator('.error', { hasText: 'Wrong username or password' }).waitFor();
  check(true, 'a wrong password on the consent page is said so, on the page');
  await page.getByLabel('Username').fill('alice');
  await page.getByLabel('Password').fill(ALICE_PASSWORD);
  const [sent] = await Promise.all([
    page.waitForRequest((r) => r.url().startsWith(redirect)),
    page.getByRole('button', { name: 'Allow' }).click(),
  ]);
  const answer = new URL(sent.url());
  check(answer.searchParams.get('code') && answer.searchParams.get('state') === 'st-7' && answer.searchParams.get('iss'),
    'Allow sends the browser to the application with a code, the state and the issuer');
  await ctx.close();
}

// Signed in to the chat page already: the consent page only asks to allow.
{
  const redirect = 'http://127.0.0.1:9/callback';
  const reg = await (await fetch(`${BASE}/oauth/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'Cursor', redirect_uris: [redirect] }),
  })).json();
  const ctx = await browser.newContext();
  const { page } = await openPage(ctx);
  await signIn(page, 'alice', ALICE_PASSWORD);
  await page.goto(`${BASE}/oauth/authorize?response_type=code&client_id=${encodeURIComponent(reg.client_id)}`
    + `&redirect_uri=${encodeURIComponent(redirect)}&code_challenge=${'F'.repeat(43)}&code_challenge_method=S256&state=st-8`);
  const body = await page.locator('main').textContent();
  check(body.includes('Signed in as alice') && (await page.getByLabel('Password').count()) === 0,
    'signed in on the chat page, the consent page only asks to allow');
  const [sent] = await Promise.all([
    page.waitForRequest((r) => r.url().startsWith(redirect)),
    page.getByRole('button', { name: 'Allow' }).click(),
  ]);
  check(new URL(sent.url()).searchParams.get('code'), 'and Allow answers with a code');
  await ctx.close();
}

const blocked = seen.errors.filter((e) => e.includes('Content Security Policy'));
check(blocked.length >= 1, 'the browser reported the blocked inline script');
const unexpected = seen.errors.filter((e) => !e.includes('Content Security Policy') && !e.includes('401')
  && !e.includes('evil.example/direct.png'));
check(unexpected.length === 0, `no other script errors: ${unexpected.join(' | ')}`);
await browser.close();
console.log('ALL BROWSER CHECKS PASSED');
