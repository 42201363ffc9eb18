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
// * Model output is Markdown, rendered by marked and then sanitized by DOMPurify (both
//   vendored, served from this origin): no raw HTML, no element that loads anything by
//   itself (images, media, frames, styles), links that open only on a click, in a new
//   tab, without a referrer. Documents are shown as text. The page's
//   Content-Security-Policy forbids inline and foreign scripts and images anyway.
// * Nothing outlives the session that made it: signing out (here or everywhere), a
//   session ended elsewhere, or another user signing in clears every thread, message,
//   document, draft and cache this page holds, and the DPoP key pair.

import { Marked } from '/vendor/marked.esm.js';
import DOMPurify from '/vendor/purify.es.mjs';
import hljs from '/vendor/highlight.min.js';

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

/** Forgets the key pair: the next sign-in makes a new one. */
async function forgetKey() {
  dpop = null;
  dpopNonce = null;
  await idb('readwrite', (s) => s.delete('key')).catch(() => {});
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
// `body` is JSON; `bytes` (with `type`) is sent as it is; `signal` aborts the call.
async function api(method, path, body, { raw = false, bytes, type, signal } = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    if (!access) await refresh();
    const headers = {};
    if (access.type === 'DPoP') {
      headers.Authorization = `DPoP ${access.token}`;
      headers.DPoP = await proof(method, path.split('?')[0], access.token);
    } else {
      headers.Authorization = `Bearer ${access.token}`;
    }
    let payload;
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    } else if (bytes !== undefined) {
      headers['Content-Type'] = type;
      payload = bytes;
    }
    const resp = await fetch(path, { method, headers, body: payload, signal });
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

// ---- rendering ------------------------------------------------------------------

const escapeHtml = (t) => t.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// Raw HTML in an answer is shown as the text it is; an image becomes a note naming its
// address (never an <img>: fetching it would send whatever the URL carries — the
// markdown-image exfiltration of chat UIs).
const markdown = new Marked({ gfm: true, breaks: true });
markdown.use({
  renderer: {
    html({ text }) { return escapeHtml(text); },
    image({ href, text }) {
      return `<span class="image-ref">[image${text ? `: ${escapeHtml(text)}` : ''}${href ? ` — ${escapeHtml(href)}` : ''}]</span>`;
    },
  },
});
hljs.configure({ ignoreUnescapedHTML: true });

const SANITIZE = {
  RETURN_DOM_FRAGMENT: true,
  ALLOWED_TAGS: ['p', 'br', 'hr', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'strong', 'em', 'del', 's', 'code', 'pre',
    'blockquote', 'ul', 'ol', 'li', 'a', 'table', 'thead', 'tbody', 'tr', 'th', 'td', 'span', 'input', 'sup', 'sub'],
  ALLOWED_ATTR: ['href', 'title', 'class', 'align', 'start', 'type', 'checked', 'disabled'],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
};
// Task-list checkboxes only; links open in a new tab only on a click, show where they
// go, and send no referrer.
DOMPurify.addHook('uponSanitizeElement', (node, data) => {
  if (data.tagName === 'input' && node.getAttribute && node.getAttribute('type') !== 'checkbox') node.remove();
});
DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'INPUT') node.setAttribute('disabled', '');
  if (node.tagName === 'A') {
    const href = node.getAttribute('href');
    if (!href) return;
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer nofollow');
    node.setAttribute('referrerpolicy', 'no-referrer');
    node.setAttribute('title', href);
  }
});

/** Markdown → a sanitized fragment: highlighted code with copy buttons, links marked. */
function renderMarkdown(text) {
  const frag = DOMPurify.sanitize(markdown.parse(text || ''), SANITIZE);
  for (const a of frag.querySelectorAll('a[href]')) {
    let host = '';
    try { host = new URL(a.getAttribute('href')).host; } catch { /* mailto: */ }
    if (host && a.textContent.trim() !== a.getAttribute('href')) a.append(el('span', ` (${host})`, { class: 'link-host' }));
  }
  for (const code of frag.querySelectorAll('pre > code')) {
    hljs.highlightElement(code);
    const pre = code.parentElement;
    const copy = el('button', 'Copy code', { type: 'button', class: 'copy-code' });
    copy.addEventListener('click', () => copyText(code.textContent, copy));
    pre.before(copy);
  }
  return frag;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    const was = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = was; }, 1500);
  } catch {
    notice('The browser did not allow copying.');
  }
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
      await showSignIn('Your session has ended. Please sign in again.');
    } else if (e.name !== 'AbortError') {
      notice(e.message || 'Something went wrong.');
    }
  }
}

let me = null;
let thread = null; // { id, title }
let streaming = null; // the AbortController of the answer being streamed
let searchTimer = null;
let uploadWatch = null;

/** Everything this page holds about whoever was signed in: gone. */
function forgetEverything() {
  if (streaming) streaming.abort();
  streaming = null;
  access = null;
  clearTimeout(refreshTimer);
  clearTimeout(searchTimer);
  clearTimeout(uploadWatch);
  me = null;
  thread = null;
  for (const id of ['messages', 'thread-list', 'document-list', 'session-list', 'passage-text', 'passage-doc', 'upload-status']) {
    $(id).replaceChildren();
  }
  $('who-name').textContent = '';
  $('conversation-title').textContent = 'New conversation';
  for (const id of ['question', 'thread-search', 'upload-title']) $(id).value = '';
  $('upload-form').reset();
  $('acl-options').replaceChildren();
  $('passage').hidden = true;
  $('upload').hidden = true;
  setStreaming(false);
}

async function showSignIn(message) {
  forgetEverything();
  $('app').hidden = true;
  $('who').hidden = true;
  $('signin').hidden = false;
  notice(message || '');
  $('username').focus();
}

async function showApp() {
  me = await api('GET', '/auth/me');
  $('who-name').textContent = me.username;
  $('who').hidden = false;
  $('signin').hidden = true;
  $('app').hidden = false;
  await loadThreads();
  showView('chat');
  $('question').focus();
}

function showView(name) {
  for (const b of document.querySelectorAll('.tab')) b.setAttribute('aria-pressed', String(b.dataset.view === name));
  for (const v of ['chat', 'documents', 'sessions']) $(`view-${v}`).hidden = v !== name;
  if (name === 'documents') return guarded(loadDocuments);
  if (name === 'sessions') return guarded(loadSessions);
  return undefined;
}

// ---- conversations ------------------------------------------------------------------

async function loadThreads() {
  const q = $('thread-search').value.trim();
  const { threads } = await api('GET', q ? `/v1/threads?q=${encodeURIComponent(q)}` : '/v1/threads');
  const list = $('thread-list');
  list.replaceChildren();
  if (!threads.length) list.append(el('li', q ? 'No conversation matches.' : 'No conversations yet.', { class: 'empty' }));
  for (const t of threads) {
    const b = el('button', t.title || 'Untitled', { type: 'button', 'data-thread': t.id });
    if (thread && thread.id === t.id) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => guarded(() => openThread(t.id)));
    list.append(item(b));
  }
  $('thread-actions').hidden = !thread;
}

function citationsOf(citations) {
  const box = el('div', null, { class: 'citations' });
  for (const c of citations || []) {
    const b = el('button', c.title, { type: 'button', class: 'citation' });
    b.addEventListener('click', () => guarded(() => openPassage(c.document_id, c.chunk_id)));
    box.append(b);
  }
  return box;
}

/** A message: the user's as text, the model's as sanitized Markdown with its actions. */
function bubble(role, text, citations) {
  const li = el('li', null, { class: role });
  const body = el('div', null, { class: 'body' });
  li.append(body);
  li.dataset.text = text || '';
  paint(li);
  if (citations && citations.length) li.append(citationsOf(citations));
  if (role === 'assistant') li.append(answerActions(li));
  $('messages').append(li);
  return li;
}

function paint(li) {
  const body = li.querySelector('.body');
  if (li.classList.contains('assistant')) body.replaceChildren(renderMarkdown(li.dataset.text));
  else body.textContent = li.dataset.text;
}

function answerActions(li) {
  const box = el('div', null, { class: 'actions' });
  const copy = el('button', 'Copy', { type: 'button', class: 'copy' });
  copy.addEventListener('click', () => copyText(li.dataset.text, copy));
  const again = el('button', 'Regenerate', { type: 'button', class: 'regenerate' });
  again.addEventListener('click', () => guarded(regenerate));
  box.append(copy, again);
  return box;
}

async function openThread(id) {
  const t = await api('GET', `/v1/threads/${encodeURIComponent(id)}`);
  thread = { id: t.id, title: t.title };
  $('conversation-title').textContent = t.title || 'Conversation';
  $('messages').replaceChildren();
  for (const m of t.messages) {
    if (m.role === 'user' || m.role === 'assistant') {
      const li = bubble(m.role, m.redacted ? 'This answer drew on a document you may no longer read.' : (m.content || ''), m.citations);
      if (m.redacted) li.classList.add('redacted');
      if (m.stopped) markStopped(li);
    }
  }
  closeThreadsOnPhone();
  await loadThreads();
  $('question').focus();
}

function newThread() {
  thread = null;
  $('conversation-title').textContent = 'New conversation';
  $('messages').replaceChildren();
  closeThreadsOnPhone();
  $('question').focus();
  return loadThreads();
}

async function renameThread() {
  if (!thread) return;
  const title = window.prompt('Rename the conversation', thread.title || '');
  if (title === null || !title.trim()) return;
  const t = await api('PATCH', `/v1/threads/${encodeURIComponent(thread.id)}`, { title: title.trim() });
  thread.title = t.title;
  $('conversation-title').textContent = t.title;
  await loadThreads();
}

async function deleteThread() {
  if (!thread) return;
  if (!window.confirm(`Delete "${thread.title || 'this conversation'}"? This cannot be undone.`)) return;
  await api('DELETE', `/v1/threads/${encodeURIComponent(thread.id)}`);
  await newThread();
}

async function openPassage(documentId, chunkId) {
  const d = await api('GET', `/v1/documents/${encodeURIComponent(documentId)}`);
  $('passage-doc').textContent = d.title;
  const text = d.text ?? 'You manage this document but may not read it.';
  const pre = $('passage-text');
  pre.replaceChildren();
  let passage = null;
  if (chunkId && d.text) {
    const r = await api('GET', `/v1/documents/${encodeURIComponent(documentId)}/passages/${encodeURIComponent(chunkId)}`).catch(() => null);
    passage = r && r.text;
  }
  const at = passage ? text.indexOf(passage) : -1;
  if (at >= 0) {
    const mark = el('mark', passage);
    pre.append(text.slice(0, at), mark, text.slice(at + passage.length));
    $('passage').hidden = false;
    mark.scrollIntoView({ block: 'center' });
  } else {
    pre.textContent = text;
    $('passage').hidden = false;
  }
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

function setStreaming(on) {
  $('ask').hidden = on;
  $('stop').hidden = !on;
  for (const b of document.querySelectorAll('.regenerate')) b.disabled = on;
}

// `again`: the thread's last question asked again, for a new answer (regenerate).
async function ask(question, { again = false } = {}) {
  if (!thread) {
    const t = await api('POST', '/v1/threads', { title: question.slice(0, 60) });
    thread = { id: t.id, title: t.title };
    $('conversation-title').textContent = t.title;
  }
  bubble('user', question);
  const answer = bubble('assistant', '');
  answer.setAttribute('aria-busy', 'true');
  const controller = new AbortController();
  streaming = controller;
  setStreaming(true);
  let frame = 0;
  const repaint = () => { frame = 0; paint(answer); };
  try {
    const path = `/v1/threads/${encodeURIComponent(thread.id)}/${again ? 'regenerate' : 'messages'}`;
    const resp = await api('POST', path, again ? { stream: true } : { content: question, stream: true },
      { raw: true, signal: controller.signal });
    if (!resp.ok) {
      answer.remove();
      throw new Error((await resp.json().catch(() => null))?.error?.message || `HTTP ${resp.status}`);
    }
    for await (const { event, data } of sse(resp)) {
      if (event === 'delta') {
        answer.dataset.text += data.content;
        if (!frame) frame = requestAnimationFrame(repaint);
      } else if (event === 'done') {
        answer.dataset.text = data.message.content;
        paint(answer);
        if (data.message.citations?.length) answer.querySelector('.actions').before(citationsOf(data.message.citations));
      } else if (event === 'error') throw new Error(`The answer failed (${data.error.code}).`);
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
    // Stopped: what came is kept, and said to be partial.
    if (frame) cancelAnimationFrame(frame);
    paint(answer);
    markStopped(answer);
  } finally {
    if (streaming === controller) streaming = null;
    answer.setAttribute('aria-busy', 'false');
    setStreaming(false);
  }
  await loadThreads();
}

function markStopped(li) {
  li.classList.add('stopped');
  li.querySelector('.actions').before(el('p', 'Stopped before the answer was complete.', { class: 'stopped-note' }));
}

function stop() {
  if (streaming) streaming.abort();
}

/** A new answer to the last question: it and its answers give way to the new ones. */
async function regenerate() {
  const questions = [...$('messages').querySelectorAll('li.user')];
  const last = questions[questions.length - 1];
  if (!last || streaming) return;
  const text = last.dataset.text;
  while (last.nextElementSibling) last.nextElementSibling.remove();
  last.remove();
  await ask(text, { again: true });
}

// ---- documents ----------------------------------------------------------------------

function stateLabel(d) {
  if (d.state === 'ready' || !d.state) return '';
  if (d.state === 'embedding' && d.progress && d.progress.total) {
    return ` (indexing, ${Math.floor((100 * d.progress.done) / d.progress.total)}%)`;
  }
  return d.state === 'failed' ? ' (indexing failed)' : ' (waiting to be indexed)';
}

async function loadDocuments() {
  const { documents } = await api('GET', '/v1/documents');
  const list = $('document-list');
  list.replaceChildren();
  if (!documents.length) list.append(el('li', 'No documents.', { class: 'empty' }));
  for (const d of documents) {
    const b = el('button', d.title + stateLabel(d), { type: 'button', class: 'document' });
    b.addEventListener('click', () => guarded(async () => { showView('chat'); await openPassage(d.id); }));
    list.append(item(b));
  }
  // Writers may add documents, readable by what they themselves hold.
  const writer = me.can_write_documents === true;
  $('upload').hidden = !writer;
  if (writer && !$('acl-options').childElementCount) aclOptions();
}

function aclOptions() {
  const box = $('acl-options');
  box.replaceChildren();
  const choices = [['public', 'Everyone in the organisation', 'public']];
  for (const r of me.roles || []) choices.push([`role:${r}`, `Role ${r}`, 'roles']);
  for (const g of me.groups || []) choices.push([`group:${g}`, `Group ${g}`, 'groups']);
  choices.push(['user:me', 'Only me', 'users']);
  choices.forEach(([value, label, kind], i) => {
    const id = `acl-${i}`;
    const input = el('input', null, { type: 'checkbox', id, value, 'data-kind': kind });
    box.append(item(input));
    box.lastChild.append(el('label', label, { for: id }));
  });
}

function chosenAcl() {
  const acl = { roles: [], groups: [], users: [], public: false };
  for (const i of $('acl-options').querySelectorAll('input:checked')) {
    const v = i.value;
    if (v === 'public') acl.public = true;
    else if (v === 'user:me') acl.users.push(me.subject);
    else if (v.startsWith('role:')) acl.roles.push(v.slice(5));
    else if (v.startsWith('group:')) acl.groups.push(v.slice(6));
  }
  return acl;
}

async function upload() {
  const file = $('upload-file').files[0];
  const title = $('upload-title').value.trim() || (file && file.name.replace(/\.[^.]+$/, ''));
  if (!file) throw new Error('Choose a file to upload.');
  const acl = chosenAcl();
  if (!acl.public && !acl.roles.length && !acl.groups.length && !acl.users.length) {
    throw new Error('Choose who may read the document.');
  }
  const status = $('upload-status');
  status.replaceChildren(el('span', `Reading ${file.name}…`));
  let text;
  if (/\.pdf$/i.test(file.name)) {
    const resp = await api('POST', '/v1/documents/text', undefined,
      { raw: true, bytes: await file.arrayBuffer(), type: 'application/pdf' });
    if (!resp.ok) throw new Error((await resp.json().catch(() => null))?.error?.message || 'The PDF could not be read.');
    text = (await resp.json()).text;
  } else {
    text = await file.text();
  }
  const resp = await api('POST', '/v1/documents', { title, text, acl }, { raw: true });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(body?.error?.message || `HTTP ${resp.status}`);
  $('upload-form').reset();
  const bar = el('progress', null, { max: '100', value: '0', 'aria-label': `Indexing ${title}` });
  const label = el('span', `${title}: waiting to be indexed`);
  status.replaceChildren(label, bar);
  const watch = async () => {
    const d = await api('GET', resp.headers.get('Location'));
    if (d.state === 'embedding' && d.progress?.total) {
      bar.value = Math.floor((100 * d.progress.done) / d.progress.total);
      label.textContent = `${title}: indexing, ${d.progress.done} of ${d.progress.total} passages`;
    }
    if (d.state === 'ready') {
      bar.value = 100;
      label.textContent = `${title}: ready (${d.chunks} passage${d.chunks === 1 ? '' : 's'})`;
      await loadDocuments();
      return;
    }
    if (d.state === 'failed') {
      label.textContent = `${title}: indexing failed`;
      return;
    }
    uploadWatch = setTimeout(() => guarded(watch), 500);
  };
  await watch();
}

// ---- sessions and signing in --------------------------------------------------------

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
      if (s.current) {
        await forgetKey();
        return showSignIn('You signed out this session.');
      }
      return loadSessions();
    }));
    li.append(b);
    list.append(li);
  }
}

async function signIn(username, password) {
  // Whoever was here before leaves nothing behind, not even the key.
  forgetEverything();
  await forgetKey();
  const resp = await tokenRequest('/auth/login', {
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!resp.ok) {
    const body = await resp.clone().json().catch(() => null);
    const code = body?.error?.code;
    if (code === 'origin_mismatch') {
      throw new Error(`This page is served from ${location.origin}, but ${body.error.message}`);
    }
    if (code === 'invalid_dpop_proof') {
      throw new Error(`palisade refused this page's proof of key possession (is ${location.origin} the address it is configured for?).`);
    }
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
  await forgetKey();
  await showSignIn(everywhere ? 'You signed out everywhere.' : 'You signed out.');
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

// ---- layout -------------------------------------------------------------------------

const phone = window.matchMedia('(max-width: 720px)');

function closeThreadsOnPhone() {
  if (phone.matches) toggleThreads(false);
}

function toggleThreads(open) {
  $('threads').classList.toggle('open', open);
  $('threads-toggle').setAttribute('aria-expanded', String(open));
}

function wire() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(() => signIn($('username').value, $('password').value));
  });
  $('ask-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('question').value.trim();
    if (!q || streaming) return;
    $('question').value = '';
    guarded(() => ask(q));
  });
  $('question').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); $('ask-form').requestSubmit(); }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && streaming) { e.preventDefault(); stop(); }
  });
  $('stop').addEventListener('click', stop);
  $('new-thread').addEventListener('click', () => guarded(newThread));
  $('rename-thread').addEventListener('click', () => guarded(renameThread));
  $('delete-thread').addEventListener('click', () => guarded(deleteThread));
  $('thread-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => guarded(loadThreads), 250);
  });
  $('threads-toggle').addEventListener('click', () => toggleThreads(!$('threads').classList.contains('open')));
  $('passage-close').addEventListener('click', () => { $('passage').hidden = true; $('question').focus(); });
  $('sign-out').addEventListener('click', () => guarded(() => signOut(false)));
  $('sign-out-all').addEventListener('click', () => guarded(() => signOut(true)));
  $('upload-form').addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(upload);
  });
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showView(b.dataset.view));
  // Leaving the page empties it, so that a back/forward-cache snapshot holds nothing; a
  // page restored from that cache starts over (the session is checked again).
  window.addEventListener('pagehide', () => { forgetEverything(); $('app').hidden = true; });
  window.addEventListener('pageshow', (e) => { if (e.persisted) window.location.reload(); });
  // Back on the tab: a session ended elsewhere is noticed now, not at the next click.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && me) guarded(() => api('GET', '/auth/me'));
  });
}

async function start() {
  wire();
  ssoButtons().catch(() => {});
  try {
    await refresh(); // the HttpOnly cookie, if this browser has a session
  } catch {
    await showSignIn(); // no session here: just the form
    return;
  }
  await guarded(showApp);
}

start();
