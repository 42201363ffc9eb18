// palisade's chat page in headless Chromium (Debian's, driven by playwright-core; no
// browser download, no network beyond 127.0.0.1). Started by tests/api/browser.rs with
// a palisade on BASE whose mock model answers with an XSS payload, and users alice
// (employee), hannah (HR). Exits non-zero, naming the failed check, if anything is off.
//
// Environment: BASE, ALICE_PASSWORD, HANNAH_PASSWORD, ARTIFACTS (screenshots), CHROMIUM.
import { chromium } from 'playwright-core';
import { webcrypto } from 'node:crypto';
import { mkdirSync } from 'node:fs';

const { BASE, ALICE_PASSWORD, HANNAH_PASSWORD, ARTIFACTS } = process.env;
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
  const seen = { urls: [], tokens: [], proofs: [], errors: [] };
  page.on('request', (r) => {
    seen.urls.push(r.url());
    const proof = r.headers().dpop;
    const auth = r.headers().authorization;
    if (proof && auth) seen.proofs.push({ method: r.method(), url: r.url(), proof, token: auth.split(' ')[1] });
  });
  page.on('response', async (r) => {
    if (/\/auth\/(login|refresh)$/.test(new URL(r.url()).pathname) && r.ok()) {
      try { seen.tokens.push((await r.json()).access_token); } catch { /* a redirect or empty body */ }
    }
  });
  page.on('pageerror', (e) => seen.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') seen.errors.push(m.text()); });
  return { page, seen };
}

async function signIn(page, user, password, base = BASE) {
  await page.goto(base);
  await page.getByLabel('Username').waitFor();
  await page.getByLabel('Username').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('#who-name', { hasText: user }).waitFor();
}

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
await page.getByLabel('Username').focus();
await page.keyboard.type('alice');
await page.keyboard.press('Tab');
check(await page.evaluate(() => document.activeElement.id) === 'password', 'Tab moves from username to password');
await page.keyboard.type(ALICE_PASSWORD);
await page.keyboard.press('Enter');
await page.locator('#who-name', { hasText: 'alice' }).waitFor();
check(true, 'signed in with the keyboard alone');

// Ask; the streamed answer arrives with citations, as text.
await page.getByLabel('Your question').fill('How many vacation days do we get?');
await page.keyboard.press('Enter');
const answer = page.locator('#messages li.assistant').last();
await answer.locator('.citation').first().waitFor({ timeout: 15000 });
const answerText = await answer.textContent();
check(answerText.includes('Vacation is 30 days'), `the streamed answer is shown: ${answerText}`);
check(answerText.includes('<img src=x onerror='), 'the model output is rendered as text, markup and all');
check(await page.locator('#messages img, #messages script').count() === 0, 'no element was made from model output');
check(await page.evaluate(() => window.__pwned) === undefined, 'the XSS payload did not execute');
// The policy in force: an inline script injected into the DOM is refused by the browser.
check(await page.evaluate(() => {
  const s = document.createElement('script');
  s.textContent = 'window.__inline = 1';
  document.body.append(s);
  return window.__inline;
}) === undefined, 'the CSP blocks an inline script');

await answer.locator('.citation').first().click();
await page.locator('#passage-text', { hasText: 'Employees get 30 days of vacation' }).waitFor();
check(true, 'a citation opens the cited document');
await page.screenshot({ path: `${ARTIFACTS}/chat.png`, fullPage: true });

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
const captured = seen.proofs.filter((p) => p.method === 'GET').pop();
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

// The HR user sees the HR document; two tabs of one browser share the session (a
// concurrent refresh is waited out).
const hr = await browser.newContext();
const { page: hrPage } = await openPage(hr);
await signIn(hrPage, 'hannah', HANNAH_PASSWORD);
await hrPage.getByRole('button', { name: 'Documents' }).click();
await hrPage.locator('#document-list', { hasText: 'Salary bands' }).waitFor();
check(true, 'the HR user sees the HR document');
await hrPage.screenshot({ path: `${ARTIFACTS}/documents.png`, fullPage: true });
const tab2 = await hr.newPage();
await Promise.all([hrPage.reload(), tab2.goto(BASE)]);
await hrPage.locator('#who-name', { hasText: 'hannah' }).waitFor();
await tab2.locator('#who-name', { hasText: 'hannah' }).waitFor();
check(true, 'two tabs loading at once both stay signed in');

// A phone-sized screen.
const phone = await browser.newContext({ viewport: { width: 390, height: 844 } });
const { page: phonePage } = await openPage(phone);
await signIn(phonePage, 'hannah', HANNAH_PASSWORD);
const overflow = await phonePage.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
check(!overflow, 'no horizontal scrolling on a phone-sized viewport');
await phonePage.screenshot({ path: `${ARTIFACTS}/phone.png`, fullPage: true });

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

// A deployment with dpop = "required" and server nonces: the page answers the
// use_dpop_nonce challenge and works on.
const strict = await browser.newContext();
const { page: strictPage, seen: strictSeen } = await openPage(strict);
await signIn(strictPage, 'alice', process.env.STRICT_ALICE_PASSWORD, process.env.STRICT_BASE);
await strictPage.getByRole('button', { name: 'Documents' }).click();
await strictPage.locator('#document-list li').first().waitFor();
check(strictSeen.proofs.length > 0, 'with dpop = "required" and server nonces the page signs in and works');

const blocked = seen.errors.filter((e) => e.includes('Content Security Policy'));
check(blocked.length >= 1, 'the browser reported the blocked inline script');
const unexpected = seen.errors.filter((e) => !e.includes('Content Security Policy') && !e.includes('401'));
check(unexpected.length === 0, `no other script errors: ${unexpected.join(' | ')}`);
await browser.close();
console.log('ALL BROWSER CHECKS PASSED');
