// palisade's reference chat page.
//
// Token handling, the pattern this page exists to show:
// * The access token lives in one variable of this module, never in localStorage,
//   sessionStorage, IndexedDB or a readable cookie. The refresh token is an HttpOnly
//   cookie this script cannot read; POST /auth/refresh turns it into an access token on
//   load and shortly before expiry. Two tabs refreshing at once: the loser gets 409
//   refresh_in_progress and retries (the winner's response carries the new cookie).
// * Tokens are sender-constrained (DPoP, RFC 9449): a non-extractable ECDSA P-256 key
//   made with WebCrypto (kept in IndexedDB as a CryptoKey, never exported) signs a fresh
//   proof for every request; a copied token is useless without it.
// * Model output and documents are rendered as text (textContent), never as HTML; the
//   page's Content-Security-Policy forbids inline and foreign scripts anyway.

const enc = new TextEncoder();

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// ---- the DPoP key -----------------------------------------------------------------

const KEY_DB = 'palisade-dpop';

function idb(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(KEY_DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore('keys');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction('keys', mode);
      const req = fn(tx.objectStore('keys'));
      tx.oncomplete = () => { open.result.close(); resolve(req && req.result); };
      tx.onerror = () => reject(tx.error);
    };
  });
}

let dpop = null; // { keys: CryptoKeyPair, jwk: public JWK }
let dpopNonce = null;

async function dpopKey() {
  if (dpop) return dpop;
  let keys = await idb('readonly', (s) => s.get('key')).catch(() => null);
  if (!keys) {
    // extractable: false — the private key can sign but never leave WebCrypto.
    keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
    await idb('readwrite', (s) => s.put(keys, 'key'));
  }
  const pub = await crypto.subtle.exportKey('jwk', keys.publicKey);
  dpop = { keys, jwk: { kty: pub.kty, crv: pub.crv, x: pub.x, y: pub.y } };
  return dpop;
}

async function proof(method, path, token) {
  const { keys, jwk } = await dpopKey();
  const header = { typ: 'dpop+jwt', alg: 'ES256', jwk };
  const claims = {
    jti: b64url(crypto.getRandomValues(new Uint8Array(16))),
    htm: method,
    htu: location.origin + path,
    iat: Math.floor(Date.now() / 1000),
  };
  if (token) claims.ath = b64url(await crypto.subtle.digest('SHA-256', enc.encode(token)));
  if (dpopNonce) claims.nonce = dpopNonce;
  const input = `${b64url(enc.encode(JSON.stringify(header)))}.${b64url(enc.encode(JSON.stringify(claims)))}`;
  // WebCrypto's ECDSA signature is r‖s, exactly JWS ES256.
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, keys.privateKey, enc.encode(input));
  return `${input}.${b64url(sig)}`;
}

// ---- tokens -----------------------------------------------------------------------

let access = null; // { token, type, expiresAt }
let refreshTimer = null;

class SessionEnded extends Error {}

function adopt(body) {
  access = { token: body.access_token, type: body.token_type, expiresAt: Date.now() + body.expires_in * 1000 };
  clearTimeout(refreshTimer);
  // Renew a minute before expiry (or halfway through a short lifetime).
  const lead = Math.min(60_000, (body.expires_in * 1000) / 2);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), body.expires_in * 1000 - lead);
}

function noteNonce(resp) {
  const n = resp.headers.get('DPoP-Nonce');
  if (n) dpopNonce = n;
}

async function errorCode(resp) {
  try { return (await resp.clone().json()).error.code; } catch { return null; }
}

async function tokenRequest(path, init) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = { ...(init.headers || {}), DPoP: await proof('POST', path) };
    const resp = await fetch(path, { ...init, method: 'POST', headers, credentials: 'same-origin' });
    noteNonce(resp);
    if (resp.status === 401 && (await errorCode(resp)) === 'use_dpop_nonce') continue;
    return resp;
  }
  throw new Error('the server keeps asking for a new DPoP nonce');
}

let refreshing = null;

// POST /auth/refresh with the HttpOnly cookie. One at a time per tab; a concurrent
// tab's rotation (409) is waited out and retried.
function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      for (let attempt = 0; attempt < 6; attempt++) {
        const resp = await tokenRequest('/auth/refresh', {});
        if (resp.ok) { adopt(await resp.json()); return; }
        if (resp.status === 409) { await new Promise((r) => setTimeout(r, 250 * (attempt + 1))); continue; }
        access = null;
        throw new SessionEnded();
      }
      throw new SessionEnded();
    })().finally(() => { refreshing = null; });
  }
  return refreshing;
}

// An API call with the current token and a fresh proof; one refresh on 401.
async function api(method, path, body, { raw = false } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (!access) await refresh();
    const headers = {};
    if (access.type === 'DPoP') {
      headers.Authorization = `DPoP ${access.token}`;
      headers.DPoP = await proof(method, path.split('?')[0], access.token);
    } else {
      headers.Authorization = `Bearer ${access.token}`;
    }
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    noteNonce(resp);
    if (resp.status === 401) {
      if ((await errorCode(resp)) === 'use_dpop_nonce') continue;
      access = null; // expired or revoked: the next round refreshes (or ends the session)
      continue;
    }
    if (raw) return resp;
    if (!resp.ok) throw new Error((await resp.json().catch(() => null))?.error?.message || `HTTP ${resp.status}`);
    return resp.status === 204 ? null : resp.json();
  }
  throw new SessionEnded();
}

// ---- the page -----------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, text, attrs = {}) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text; // text, never HTML
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function item(child) {
  const li = el('li');
  li.append(child);
  return li;
}

function notice(text) {
  $('notice').textContent = text || '';
  $('notice').hidden = !text;
}

async function guarded(fn) {
  try {
    notice('');
    await fn();
  } catch (e) {
    if (e instanceof SessionEnded) {
      showSignIn('Your session has ended. Please sign in again.');
    } else {
      notice(e.message || 'Something went wrong.');
    }
  }
}

function showSignIn(message) {
  access = null;
  clearTimeout(refreshTimer);
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  notice(message || '');
  $('username').focus();
}

let me = null;
let thread = null;

async function showApp() {
  me = await api('GET', '/auth/me');
  $('who-name').textContent = me.username;
  $('who').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  await loadThreads();
  showView('chat');
}

function showView(name) {
  for (const b of document.querySelectorAll('.tab')) b.setAttribute('aria-pressed', String(b.dataset.view === name));
  for (const v of ['chat', 'documents', 'sessions']) $(`view-${v}`).hidden = v !== name;
  if (name === 'documents') return guarded(loadDocuments);
  if (name === 'sessions') return guarded(loadSessions);
  return undefined;
}

async function loadThreads() {
  const { threads } = await api('GET', '/v1/threads');
  const list = $('thread-list');
  list.replaceChildren();
  for (const t of threads) {
    const b = el('button', t.title || 'Untitled', { type: 'button', 'data-thread': t.id });
    if (thread && thread.id === t.id) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => guarded(() => openThread(t.id)));
    list.append(item(b));
  }
}

function citationsOf(citations) {
  const box = el('div', null, { class: 'citations' });
  for (const c of citations || []) {
    const b = el('button', c.title, { type: 'button', class: 'citation' });
    b.addEventListener('click', () => guarded(() => openPassage(c.document_id)));
    box.append(b);
  }
  return box;
}

function bubble(role, text, citations) {
  const li = el('li', text, { class: role });
  if (citations && citations.length) li.append(citationsOf(citations));
  $('messages').append(li);
  return li;
}

async function openThread(id) {
  const t = await api('GET', `/v1/threads/${encodeURIComponent(id)}`);
  thread = { id: t.id, title: t.title };
  $('conversation-title').textContent = t.title || 'Conversation';
  $('messages').replaceChildren();
  for (const m of t.messages) {
    if (m.role === 'user' || m.role === 'assistant') bubble(m.role, m.content || '', m.citations);
  }
  await loadThreads();
  $('question').focus();
}

async function openPassage(documentId) {
  const d = await api('GET', `/v1/documents/${encodeURIComponent(documentId)}`);
  $('passage-doc').textContent = d.title;
  $('passage-text').textContent = d.text ?? 'You manage this document but may not read it.';
  $('passage').hidden = false;
  $('passage-close').focus();
}

// Server-sent events from a fetch body: `event:` and `data:` lines, blank-line framed.
async function* sse(resp) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message';
      let data = '';
      for (const line of frame.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data += line.slice(5).trim();
      }
      yield { event, data: data ? JSON.parse(data) : null };
    }
  }
}

async function ask(question) {
  if (!thread) {
    const t = await api('POST', '/v1/threads', { title: question.slice(0, 60) });
    thread = { id: t.id, title: t.title };
    $('conversation-title').textContent = t.title;
  }
  bubble('user', question);
  const answer = bubble('assistant', '');
  answer.setAttribute('aria-busy', 'true');
  const resp = await api('POST', `/v1/threads/${encodeURIComponent(thread.id)}/messages`, { content: question, stream: true }, { raw: true });
  if (!resp.ok) {
    answer.remove();
    throw new Error((await resp.json().catch(() => null))?.error?.message || `HTTP ${resp.status}`);
  }
  let text = '';
  for await (const { event, data } of sse(resp)) {
    if (event === 'delta') { text += data.content; answer.textContent = text; }
    else if (event === 'citations') answer.append(citationsOf(data.citations || data));
    else if (event === 'done') {
      answer.textContent = data.message.content;
      if (data.message.citations?.length) answer.append(citationsOf(data.message.citations));
    } else if (event === 'error') throw new Error(`The answer failed (${data.error.code}).`);
  }
  answer.setAttribute('aria-busy', 'false');
  await loadThreads();
}

async function loadDocuments() {
  const { documents } = await api('GET', '/v1/documents');
  const list = $('document-list');
  list.replaceChildren();
  if (!documents.length) list.append(el('li', 'No documents.'));
  for (const d of documents) {
    const pending = d.state === 'ready' ? ''
      : d.state === 'embedding' && d.progress && d.progress.total
        ? ` (indexing, ${Math.floor((100 * d.progress.done) / d.progress.total)}%)`
        : ` (${d.state === 'failed' ? 'indexing failed' : 'waiting to be indexed'})`;
    const b = el('button', d.title + pending, { type: 'button', class: 'document' });
    b.addEventListener('click', () => guarded(async () => { showView('chat'); await openPassage(d.id); }));
    list.append(item(b));
  }
}

async function loadSessions() {
  const { sessions } = await api('GET', '/auth/sessions');
  const list = $('session-list');
  list.replaceChildren();
  for (const s of sessions) {
    const li = el('li');
    const label = `${s.current ? 'This browser' : (s.user_agent || 'Unknown client')} — since ${new Date(s.created_at).toLocaleString()}`;
    li.append(el('span', label));
    const b = el('button', 'Sign out this session', { type: 'button' });
    b.addEventListener('click', () => guarded(async () => {
      await api('DELETE', `/auth/sessions/${encodeURIComponent(s.id)}`);
      if (s.current) return showSignIn('You signed out this session.');
      return loadSessions();
    }));
    li.append(b);
    list.append(li);
  }
}

async function signIn(username, password) {
  const resp = await tokenRequest('/auth/login', {
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!resp.ok) {
    const code = await errorCode(resp);
    throw new Error(code === 'too_many_requests' ? 'Too many attempts; wait a moment.' : 'Wrong username or password.');
  }
  adopt(await resp.json());
  $('password').value = '';
  await showApp();
}

async function signOut(everywhere) {
  // The refresh cookie rides along (same-origin fetch), so the server ends this
  // session even if the access token has expired.
  await api('POST', everywhere ? '/auth/logout-all' : '/auth/logout', {}).catch(() => {});
  showSignIn(everywhere ? 'You signed out everywhere.' : 'You signed out.');
}

async function ssoButtons() {
  const resp = await fetch('/auth/oidc/providers');
  if (!resp.ok) return;
  const { providers } = await resp.json();
  const list = $('sso-list');
  list.replaceChildren();
  for (const p of providers) {
    const a = el('a', `Sign in with ${p.name}`, { href: `/auth/oidc/login?provider=${encodeURIComponent(p.name)}&return_to=/` });
    list.append(item(a));
  }
  $('sso').hidden = providers.length === 0;
}

function wire() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(() => signIn($('username').value, $('password').value));
  });
  $('ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('question').value.trim();
    if (!q) return;
    $('question').value = '';
    guarded(() => ask(q));
  });
  $('question').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); $('ask-form').requestSubmit(); }
  });
  $('new-thread').addEventListener('click', () => {
    thread = null;
    $('conversation-title').textContent = 'New conversation';
    $('messages').replaceChildren();
    guarded(loadThreads);
    $('question').focus();
  });
  $('passage-close').addEventListener('click', () => { $('passage').hidden = true; });
  $('sign-out').addEventListener('click', () => guarded(() => signOut(false)));
  $('sign-out-all').addEventListener('click', () => guarded(() => signOut(true)));
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showView(b.dataset.view));
}

async function start() {
  wire();
  ssoButtons().catch(() => {});
  try {
    await refresh(); // the HttpOnly cookie, if this browser has a session
  } catch {
    showSignIn(); // no session here: just the form
    return;
  }
  await guarded(showApp);
}

start();
