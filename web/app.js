// The filestore web page: sign up, sign in, browse, upload (instant with proof, single PUT,
// or resumable chunks), download, rename, move, delete, and storage used vs stored.
//
// It speaks only the JSON API (/api/v1, described by /api/v1/openapi.json) with the bearer
// token kept in sessionStorage, plus /file/downloadurl for streamed downloads of large
// files. Names from the server are only ever put into the page with textContent and DOM
// properties, never parsed as HTML.
(function () {
  'use strict';

  var KiB = 1024, MiB = 1024 * KiB;

  function metaNumber(name, fallback) {
    var m = document.querySelector('meta[name="' + name + '"]');
    var n = m ? Number(m.content) : NaN;
    return Number.isFinite(n) && n > 0 ? n : fallback;
  }

  // Tunables; the browser test changes some of them to reach every code path with small files.
  var settings = {
    // The server's chunk size: files up to this size go in one PUT, larger ones in chunks.
    chunkSize: metaNumber('filestore-chunk-size', 5 * MiB),
    maxUpload: metaNumber('filestore-max-upload', Infinity),
    // Up to this size a file is hashed by crypto.subtle in one piece; above it, by the
    // incremental SHA-1 of sha1.js (crypto.subtle would need the whole file in memory).
    subtleHashMax: 64 * MiB,
    hashSliceSize: 4 * MiB,
    // Up to this size a download is fetched with the token and saved from memory; larger
    // files go through a short-lived link (/file/downloadurl) that the browser streams.
    blobDownloadMax: 32 * MiB,
    partsInFlight: 3,
    partRetries: 4,
    pageSize: 200,
  };

  var TOKEN_KEY = 'filestore.session';
  var state = {
    token: null,
    username: null,
    dir: '/',
    entries: [],
    next: null,
    listSeq: 0,
    uploading: Promise.resolve(),
    activeUploads: new Set(), // ids of upload sessions this page is sending now
  };

  var $ = function (id) { return document.getElementById(id); };

  // ---------------------------------------------------------------- small helpers

  function el(tag, props, children) {
    var e = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        if (k === 'text') e.textContent = props[k];
        else if (k === 'class') e.className = props[k];
        else if (k === 'dataset') Object.assign(e.dataset, props[k]);
        else if (k.slice(0, 2) === 'on') e.addEventListener(k.slice(2), props[k]);
        else e[k] = props[k];
      });
    }
    (children || []).forEach(function (c) { if (c) e.append(c); });
    return e;
  }

  function formatBytes(n) {
    if (!Number.isFinite(n)) return '–';
    if (n < 1024) return n + ' B';
    var units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var v = n, u = -1;
    do { v /= 1024; u++; } while (v >= 1024 && u < units.length - 1);
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ' + units[u];
  }

  function formatTime(s) {
    var d = new Date(s);
    return isNaN(d) ? '' : d.toLocaleString();
  }

  // '/a/b' from parts; every path the page handles is absolute and normalised.
  function normPath(p) {
    return '/' + String(p).split('/').filter(function (s) { return s !== ''; }).join('/');
  }

  function joinPath(dir, name) {
    return dir === '/' ? '/' + name : dir + '/' + name;
  }

  function parentOf(path) {
    var i = path.lastIndexOf('/');
    return i <= 0 ? '/' : path.slice(0, i);
  }

  function baseName(path) {
    return path.slice(path.lastIndexOf('/') + 1);
  }

  // A path as URL segments, each percent-encoded: '/a b/c?' -> '/a%20b/c%3F'.
  function urlPath(path) {
    return path.split('/').filter(function (s) { return s !== ''; })
      .map(function (s) { return '/' + encodeURIComponent(s); }).join('');
  }

  function validName(name) {
    if (!name || name === '.' || name === '..') return 'A name cannot be empty, “.” or “..”.';
    if (name.indexOf('/') >= 0 || name.indexOf('\0') >= 0) return 'A name cannot contain “/”.';
    if (new TextEncoder().encode(name).length > 255) return 'A name is at most 255 bytes long.';
    return null;
  }

  // ---------------------------------------------------------------- API

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }
  ApiError.prototype = Object.create(Error.prototype);
  ApiError.prototype.name = 'ApiError';

  function authHeaders(extra) {
    var h = Object.assign({}, extra || {});
    if (state.token) h.Authorization = 'Bearer ' + state.token;
    return h;
  }

  async function errorFrom(resp) {
    var code = 'http_' + resp.status, message = resp.status + ' ' + resp.statusText;
    try {
      var body = await resp.json();
      if (body && body.error) { code = body.error.code || code; message = body.error.message || message; }
      else if (body && body.msg) { message = body.msg; }
    } catch (_) { /* not JSON */ }
    return new ApiError(resp.status, code, message);
  }

  function sessionExpired() {
    signedOut('Your session has ended. Please sign in again.');
  }

  // A JSON API call; resolves to the parsed body (null for 204), rejects with ApiError.
  async function api(method, path, body, opts) {
    opts = opts || {};
    var init = { method: method, headers: authHeaders(), cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    var resp;
    try {
      resp = await fetch('/api/v1' + path, init);
    } catch (e) {
      throw new ApiError(0, 'network', 'The server could not be reached (' + e.message + ').');
    }
    if (!resp.ok) {
      var err = await errorFrom(resp);
      if (resp.status === 401 && state.token && !opts.noSignout) sessionExpired();
      throw err;
    }
    if (resp.status === 204) return null;
    var text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  // A request with upload progress (fetch has none): resolves to the parsed JSON body.
  function xhrSend(method, url, body, headers, onProgress, onXhr) {
    return new Promise(function (resolve, reject) {
      var x = new XMLHttpRequest();
      x.open(method, url);
      Object.keys(headers).forEach(function (k) { x.setRequestHeader(k, headers[k]); });
      x.upload.onprogress = function (ev) { if (onProgress) onProgress(ev.loaded); };
      x.onload = function () {
        var body = null;
        try { body = x.responseText ? JSON.parse(x.responseText) : null; } catch (_) { /* not JSON */ }
        if (x.status >= 200 && x.status < 300) return resolve(body);
        var e = body && body.error ? body.error : {};
        reject(new ApiError(x.status, e.code || 'http_' + x.status, e.message || x.status + ' ' + x.statusText));
      };
      x.onerror = function () { reject(new ApiError(0, 'network', 'The connection to the server failed.')); };
      x.onabort = function () { reject(new ApiError(0, 'aborted', 'Cancelled.')); };
      if (onXhr) onXhr(x);
      x.send(body);
    });
  }

  // ---------------------------------------------------------------- hashing

  function hasSubtle() {
    return !!(window.crypto && window.crypto.subtle && window.isSecureContext);
  }

  function hex(buf) {
    return FilestoreSha1.toHex(new Uint8Array(buf));
  }

  async function sha1OfBuffer(buf) {
    if (hasSubtle()) return hex(await crypto.subtle.digest('SHA-1', buf));
    return FilestoreSha1.sha1Hex(buf);
  }

  // SHA-1 of a whole File, reporting progress(bytesHashed).
  async function sha1OfFile(file, progress) {
    if (file.size <= settings.subtleHashMax && hasSubtle()) {
      var all = await file.arrayBuffer();
      var d = hex(await crypto.subtle.digest('SHA-1', all));
      progress(file.size);
      return d;
    }
    var h = new FilestoreSha1.Sha1();
    for (var off = 0; off < file.size; off += settings.hashSliceSize) {
      var piece = await file.slice(off, Math.min(off + settings.hashSliceSize, file.size)).arrayBuffer();
      h.update(piece);
      progress(Math.min(off + settings.hashSliceSize, file.size));
    }
    return h.hexDigest();
  }

  // The answer to an instant-upload challenge: SHA-1(nonce as ASCII || the asked range).
  async function proofFor(file, challenge) {
    var nonce = new TextEncoder().encode(challenge.nonce);
    var range = new Uint8Array(await file.slice(challenge.offset, challenge.offset + challenge.length).arrayBuffer());
    var both = new Uint8Array(nonce.length + range.length);
    both.set(nonce, 0);
    both.set(range, nonce.length);
    return sha1OfBuffer(both);
  }

  // ---------------------------------------------------------------- messages and dialogs

  var messageTimer = null;
  function say(text, kind) {
    var m = $('message');
    m.textContent = text;
    m.className = 'message ' + (kind || 'info');
    m.hidden = false;
    clearTimeout(messageTimer);
    if (kind !== 'error') messageTimer = setTimeout(function () { m.hidden = true; }, 6000);
  }

  function sayError(prefix, e) {
    say(prefix + ': ' + (e && e.message ? e.message : String(e)), 'error');
  }

  // A modal question. With `input`, resolves to the entered text (or null); without, to
  // true/false.
  function ask(opts) {
    var dlg = $('ask');
    $('ask-title').textContent = opts.title;
    $('ask-text').textContent = opts.text || '';
    $('ask-text').hidden = !opts.text;
    $('ask-label').hidden = opts.input === undefined;
    $('ask-label-text').textContent = opts.label || '';
    var input = $('ask-input');
    input.value = opts.input !== undefined ? opts.input : '';
    $('ask-ok').textContent = opts.ok || 'OK';
    $('ask-ok').className = opts.danger ? 'danger' : 'primary';
    return new Promise(function (resolve) {
      function finish(value) {
        $('ask-form').removeEventListener('submit', onSubmit);
        $('ask-cancel').removeEventListener('click', onCancel);
        dlg.removeEventListener('cancel', onCancel);
        if (dlg.open) dlg.close();
        resolve(value);
      }
      function onSubmit(ev) { ev.preventDefault(); finish(opts.input !== undefined ? input.value : true); }
      function onCancel(ev) { ev.preventDefault(); finish(opts.input !== undefined ? null : false); }
      $('ask-form').addEventListener('submit', onSubmit);
      $('ask-cancel').addEventListener('click', onCancel);
      dlg.addEventListener('cancel', onCancel);
      dlg.showModal();
      if (opts.input !== undefined) {
        input.focus();
        // Select the name without its extension, as file managers do.
        var dot = opts.selectStem ? input.value.lastIndexOf('.') : -1;
        input.setSelectionRange(0, dot > 0 ? dot : input.value.length);
      } else {
        $('ask-ok').focus();
      }
    });
  }

  // ---------------------------------------------------------------- sign in / out

  var authMode = 'signin';

  function setAuthMode(mode) {
    authMode = mode;
    var up = mode === 'signup';
    $('auth-title').textContent = up ? 'Create an account' : 'Sign in';
    $('auth-submit').textContent = up ? 'Create account' : 'Sign in';
    $('auth-switch-text').textContent = up ? 'Have an account?' : 'No account yet?';
    $('auth-switch').textContent = up ? 'Sign in' : 'Create one';
    $('password').autocomplete = up ? 'new-password' : 'current-password';
    $('password').minLength = up ? 8 : 0;
    $('auth-error').textContent = '';
  }

  function show(view) {
    $('loading').hidden = true;
    $('auth-view').hidden = view !== 'auth';
    $('drive-view').hidden = view !== 'drive';
    $('account').hidden = view !== 'drive';
  }

  function signedOut(reason) {
    state.token = null;
    state.username = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('entries').replaceChildren();
    $('uploads').replaceChildren();
    $('password').value = '';
    setAuthMode('signin');
    $('auth-error').textContent = reason || '';
    show('auth');
  }

  async function onAuthSubmit(ev) {
    ev.preventDefault();
    var username = $('username').value.trim();
    var password = $('password').value;
    $('auth-error').textContent = '';
    $('auth-submit').disabled = true;
    try {
      if (authMode === 'signup') {
        await api('POST', '/auth/signup', { username: username, password: password });
      }
      var s = await api('POST', '/auth/signin', { username: username, password: password }, { noSignout: true });
      state.token = s.token;
      state.username = s.username;
      sessionStorage.setItem(TOKEN_KEY, JSON.stringify({ token: s.token, username: s.username }));
      $('password').value = '';
      await enterDrive();
    } catch (e) {
      $('auth-error').textContent = e.message || String(e);
    } finally {
      $('auth-submit').disabled = false;
    }
  }

  async function onSignout() {
    try { await api('POST', '/auth/signout', undefined, { noSignout: true }); } catch (_) { /* gone anyway */ }
    signedOut('');
  }

  async function enterDrive() {
    $('whoami').textContent = state.username;
    show('drive');
    await Promise.all([navigate(dirFromHash()), refreshUsage(), refreshPending()]);
  }

  // ---------------------------------------------------------------- browsing

  function dirFromHash() {
    var h = location.hash.replace(/^#/, '');
    try {
      return normPath(h.split('/').map(decodeURIComponent).join('/'));
    } catch (_) {
      return '/';
    }
  }

  function hashFor(dir) {
    return '#' + (dir === '/' ? '/' : urlPath(dir));
  }

  function renderBreadcrumbs(dir) {
    var nav = $('breadcrumbs');
    var parts = dir.split('/').filter(Boolean);
    var items = [el('a', { href: '#/', text: 'My files', class: 'crumb' })];
    var acc = '';
    parts.forEach(function (p) {
      acc += '/' + p;
      items.push(el('span', { class: 'sep', text: '/' }));
      items.push(el('a', { href: hashFor(acc), text: p, class: 'crumb' }));
    });
    items[items.length - 1].setAttribute('aria-current', 'page');
    nav.replaceChildren.apply(nav, items);
  }

  async function navigate(dir) {
    state.dir = dir;
    renderBreadcrumbs(dir);
    await loadList(false);
  }

  async function loadList(more) {
    var seq = ++state.listSeq;
    var dir = state.dir;
    var q = '?limit=' + settings.pageSize + (more && state.next ? '&after=' + encodeURIComponent(state.next) : '');
    try {
      var page = await api('GET', '/list' + urlPath(dir) + q);
      if (seq !== state.listSeq) return; // a newer listing was asked for meanwhile
      state.entries = more ? state.entries.concat(page.entries) : page.entries;
      state.next = page.next || null;
      renderEntries();
    } catch (e) {
      if (seq !== state.listSeq) return;
      if (e.status === 404 && dir !== '/') {
        say('The folder ' + dir + ' does not exist (any more).', 'error');
        location.hash = '#/';
        return;
      }
      if (e.status !== 401) sayError('Could not list ' + dir, e);
    }
  }

  function refresh() {
    return Promise.all([loadList(false), refreshUsage()]);
  }

  function renderEntries() {
    var rows = state.entries.slice().sort(function (a, b) {
      if (a.kind !== b.kind) return a.kind === 'dir' ? -1 : 1;
      return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
    }).map(entryRow);
    var tbody = $('entries');
    tbody.replaceChildren.apply(tbody, rows);
    $('empty').hidden = rows.length > 0;
    $('more').hidden = !state.next;
  }

  function entryRow(e) {
    var isDir = e.kind === 'dir';
    var nameCell = el('td', { class: 'name' });
    var icon = el('span', { class: 'icon ' + (isDir ? 'icon-dir' : 'icon-file'), ariaHidden: 'true' });
    var label = isDir
      ? el('a', { href: hashFor(e.path), text: e.name, class: 'entry-name', title: e.name })
      : el('button', { type: 'button', text: e.name, class: 'entry-name link', title: 'Download ' + e.name,
        onclick: function () { download(e); } });
    nameCell.append(icon, label);
    var ops = el('td', { class: 'ops' }, [
      isDir ? null : el('button', { type: 'button', text: 'Download', class: 'op-download', onclick: function () { download(e); } }),
      el('button', { type: 'button', text: 'Rename', class: 'op-rename', onclick: function () { renameEntry(e); } }),
      el('button', { type: 'button', text: 'Move', class: 'op-move', onclick: function () { moveEntry(e); } }),
      el('button', { type: 'button', text: 'Delete', class: 'op-delete danger', onclick: function () { deleteEntry(e); } }),
    ]);
    var tr = el('tr', { class: 'entry ' + e.kind, dataset: { kind: e.kind } }, [
      nameCell,
      el('td', { class: 'size', text: isDir ? '' : formatBytes(e.size), title: isDir ? '' : e.size + ' bytes' }),
      el('td', { class: 'mtime', text: formatTime(e.mtime) }),
      ops,
    ]);
    tr.dataset.name = e.name; // an attribute value: never parsed as markup
    return tr;
  }

  async function refreshUsage() {
    try {
      var me = await api('GET', '/me');
      var used = me.usage.bytes, stored = me.usage.stored_bytes, saved = Math.max(0, used - stored);
      setBytes('usage-bytes', used);
      setBytes('usage-stored', stored);
      setBytes('usage-saved', saved);
      if (used > 0) $('usage-saved').textContent += ' (' + Math.round((saved / used) * 100) + '%)';
    } catch (e) {
      if (e.status !== 401) sayError('Could not read storage use', e);
    }
  }

  function setBytes(id, n) {
    var e = $(id);
    e.textContent = formatBytes(n);
    e.dataset.bytes = String(n);
    e.title = n + ' bytes';
  }

  // ---------------------------------------------------------------- entry operations

  async function mkdir() {
    var name = await ask({ title: 'New folder', label: 'Name', input: '', ok: 'Create' });
    if (name === null) return;
    name = name.trim();
    var bad = validName(name);
    if (bad) return say(bad, 'error');
    try {
      await api('POST', '/dirs' + urlPath(joinPath(state.dir, name)));
      say('Created folder ' + name + '.');
      await loadList(false);
    } catch (e) {
      if (e.status !== 401) sayError('Could not create ' + name, e);
    }
  }

  async function renameEntry(e) {
    var name = await ask({ title: 'Rename', text: e.path, label: 'New name', input: e.name, ok: 'Rename', selectStem: e.kind === 'file' });
    if (name === null || name === e.name) return;
    var bad = validName(name);
    if (bad) return say(bad, 'error');
    await moveTo(e, joinPath(parentOf(e.path), name), 'Renamed');
  }

  async function moveEntry(e) {
    var dest = await ask({ title: 'Move', text: e.path, label: 'To folder', input: parentOf(e.path), ok: 'Move' });
    if (dest === null) return;
    dest = normPath(dest.trim());
    if (dest === parentOf(e.path)) return;
    await moveTo(e, joinPath(dest, e.name), 'Moved');
  }

  async function moveTo(e, to, verb) {
    try {
      await api('POST', '/move', { from: e.path, to: to });
      say(verb + ' ' + e.name + ' to ' + to + '.');
      await loadList(false);
    } catch (err) {
      if (err.status === 401) return;
      var why = err.code === 'already_exists' ? 'there is already an entry ' + to
        : err.code === 'not_found' ? 'the folder ' + parentOf(to) + ' does not exist'
          : err.message;
      say(verb.replace(/d$/, '') + ' failed: ' + why + '.', 'error');
    }
  }

  async function deleteEntry(e) {
    var isDir = e.kind === 'dir';
    var ok = await ask({
      title: 'Delete ' + (isDir ? 'folder' : 'file') + '?',
      text: isDir ? e.path + ' and everything in it will be deleted.' : e.path + ' will be deleted.',
      ok: 'Delete',
      danger: true,
    });
    if (!ok) return;
    try {
      await api('DELETE', '/files' + urlPath(e.path) + (isDir ? '?recursive=true' : ''));
      say('Deleted ' + e.name + '.');
      await refresh();
    } catch (err) {
      if (err.status !== 401) sayError('Could not delete ' + e.name, err);
    }
  }

  function saveUrl(url, name) {
    var a = el('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  }

  async function download(e) {
    try {
      if (e.size <= settings.blobDownloadMax) {
        var resp = await fetch('/api/v1/files' + urlPath(e.path), { headers: authHeaders(), cache: 'no-store' });
        if (!resp.ok) {
          if (resp.status === 401) sessionExpired();
          throw await errorFrom(resp);
        }
        var blob = await resp.blob();
        var url = URL.createObjectURL(blob);
        saveUrl(url, e.name);
        setTimeout(function () { URL.revokeObjectURL(url); }, 60 * 1000);
        return;
      }
      // Large: a short-lived link that needs no token, which the browser downloads itself.
      var r = await fetch('/file/downloadurl?filehash=' + encodeURIComponent(e.sha1), {
        headers: authHeaders(), cache: 'no-store',
      });
      if (!r.ok) throw await errorFrom(r);
      var link = new URL((await r.text()).trim(), location.href);
      if (link.protocol !== 'http:' && link.protocol !== 'https:') throw new Error('unexpected download link');
      saveUrl(link.href, e.name);
    } catch (err) {
      if (err.status !== 401) sayError('Could not download ' + e.name, err);
    }
  }

  // ---------------------------------------------------------------- uploads

  function pendingKey() { return 'filestore.pending.' + state.username; }

  function loadPending() {
    try { return JSON.parse(localStorage.getItem(pendingKey()) || '[]'); } catch (_) { return []; }
  }

  function savePending(list) {
    if (list.length) localStorage.setItem(pendingKey(), JSON.stringify(list));
    else localStorage.removeItem(pendingKey());
  }

  function rememberPending(p) {
    savePending(loadPending().filter(function (x) { return x.id !== p.id; }).concat([p]));
  }

  function forgetPending(id) {
    savePending(loadPending().filter(function (x) { return x.id !== id; }));
  }

  // Lists chunked uploads this browser started and did not finish, still alive on the server.
  async function refreshPending() {
    var list = loadPending(), alive = [];
    for (var i = 0; i < list.length; i++) {
      try {
        var s = await api('GET', '/uploads/' + encodeURIComponent(list[i].id));
        alive.push(Object.assign({}, list[i], { received: s.received.length, chunks: s.chunk_count }));
      } catch (e) {
        if (e.status === 401) return;
        if (e.status !== 404) alive.push(list[i]); // keep it on a transient error
      }
    }
    savePending(alive.map(function (p) { return { id: p.id, path: p.path, name: p.name, size: p.size, sha1: p.sha1 }; }));
    var ul = $('pending-list');
    ul.replaceChildren.apply(ul, alive.filter(function (p) { return !state.activeUploads.has(p.id); }).map(function (p) {
      var info = p.chunks ? ' — ' + p.received + ' of ' + p.chunks + ' parts on the server' : '';
      return el('li', { class: 'pending-item' }, [
        el('span', { class: 'pending-name', text: p.path }),
        el('span', { class: 'pending-info', text: ' (' + formatBytes(p.size) + ')' + info + ' ' }),
        el('button', { type: 'button', text: 'Choose file to resume', class: 'op-resume', onclick: function () { chooseResume(p); } }),
        el('button', { type: 'button', text: 'Discard', class: 'op-discard', onclick: function () { discardPending(p); } }),
      ]);
    }));
    $('pending').hidden = ul.children.length === 0;
  }

  var resumeTarget = null;
  function chooseResume(p) {
    resumeTarget = p;
    $('resume-input').value = '';
    $('resume-input').click();
  }

  function onResumeChosen() {
    var p = resumeTarget, file = $('resume-input').files[0];
    resumeTarget = null;
    if (!p || !file) return;
    if (file.size !== p.size) {
      say(file.name + ' is ' + formatBytes(file.size) + '; the interrupted upload was ' + formatBytes(p.size) + '. Choose the same file.', 'error');
      return;
    }
    enqueue([file], parentOf(p.path), baseName(p.path), true);
  }

  async function discardPending(p) {
    try { await api('DELETE', '/uploads/' + encodeURIComponent(p.id)); } catch (e) { if (e.status !== 404) return sayError('Could not discard', e); }
    forgetPending(p.id);
    await refreshPending();
  }

  // One row of the upload list, with a progress bar.
  function UploadRow(name, dest) {
    this.bar = el('progress', { max: 100, value: 0 });
    this.pct = el('span', { class: 'pct', text: '0%' });
    this.status = el('span', { class: 'status', text: 'Waiting' });
    this.li = el('li', { class: 'upload waiting' }, [
      el('span', { class: 'upload-name', text: name, title: dest }),
      this.bar, this.pct, this.status,
    ]);
    this.li.dataset.name = name;
    $('uploads').prepend(this.li);
  }
  UploadRow.prototype.phase = function (cls, text) {
    this.li.className = 'upload ' + cls;
    this.status.textContent = text;
  };
  UploadRow.prototype.progress = function (done, total) {
    var p = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
    this.bar.value = p;
    this.pct.textContent = p + '%';
  };

  // Uploads run one file at a time (each with several parts in flight).
  function enqueue(files, dir, forcedName, resuming) {
    Array.prototype.forEach.call(files, function (file) {
      var name = forcedName || file.name;
      var row = new UploadRow(name, joinPath(dir, name));
      state.uploading = state.uploading.then(function () {
        return uploadOne(file, dir, name, row, !!resuming);
      });
    });
  }

  async function uploadOne(file, dir, name, row, resuming) {
    var path = joinPath(dir, name);
    try {
      var bad = validName(name);
      if (bad) throw new Error(bad);
      if (file.size > settings.maxUpload) throw new Error('larger than the server accepts (' + formatBytes(settings.maxUpload) + ')');
      if (!resuming && !(await confirmReplace(path, name))) {
        row.phase('cancelled', 'Skipped');
        return;
      }
      var how = await upload(file, path, row);
      row.progress(1, 1);
      row.phase('done', how);
    } catch (e) {
      row.phase('failed', 'Failed: ' + (e.message || String(e)));
    }
    if (dir === state.dir) await loadList(false);
    await Promise.all([refreshUsage(), refreshPending()]);
  }

  async function confirmReplace(path, name) {
    try {
      var existing = await api('GET', '/stat' + urlPath(path));
      if (existing.kind === 'dir') throw new Error('there is a folder named ' + name);
      return ask({ title: 'Replace ' + name + '?', text: path + ' exists. Replace it with the file you chose?', ok: 'Replace', danger: true });
    } catch (e) {
      if (e.status === 404) return true;
      throw e;
    }
  }

  // Sends `file` to `path`; resolves to a word on how it went.
  async function upload(file, path, row) {
    var size = file.size;
    row.phase('hashing', 'Hashing');
    var sha1 = await sha1OfFile(file, function (n) { row.progress(n, size); });

    // 1. Instant upload: the server may have the content already.
    row.phase('checking', 'Checking for a copy on the server');
    var body = { path: path, size: size, sha1: sha1 };
    var r = await api('POST', '/instant', body);
    if (!r.linked && r.challenge) {
      row.phase('proving', 'Proving possession');
      var proof = await proofFor(file, r.challenge);
      r = await api('POST', '/instant', Object.assign({}, body, { nonce: r.challenge.nonce, proof: proof }));
    }
    if (r.linked) return 'Done (instant upload: the server already had these bytes)';

    // 2. One request for a file of at most one chunk.
    if (size <= settings.chunkSize) {
      row.phase('sending', 'Uploading');
      row.progress(0, size);
      await xhrSend('PUT', '/api/v1/files' + urlPath(path), file,
        authHeaders({ 'Content-Type': 'application/octet-stream' }),
        function (n) { row.progress(n, size); });
      return 'Done';
    }

    // 3. Chunks, resumable: the server remembers which parts it has.
    return uploadChunked(file, path, sha1, row);
  }

  async function uploadChunked(file, path, sha1, row) {
    var size = file.size;
    var s = await api('POST', '/uploads', { path: path, size: size, sha1: sha1 });
    rememberPending({ id: s.id, path: path, name: baseName(path), size: size, sha1: sha1 });
    state.activeUploads.add(s.id);
    try {
      return await sendChunks(file, s, row);
    } finally {
      state.activeUploads.delete(s.id);
    }
  }

  async function sendChunks(file, s, row) {
    var size = file.size, chunk = s.chunk_size, count = s.chunk_count;
    var lenOf = function (i) { return i < count ? chunk : size - (count - 1) * chunk; };
    var have = new Set(s.received);
    var base = 0;
    have.forEach(function (i) { base += lenOf(i); });
    var inFlight = {};
    var report = function () {
      var n = base;
      Object.keys(inFlight).forEach(function (k) { n += inFlight[k]; });
      row.progress(n, size);
    };
    row.phase('sending', have.size ? 'Resuming: ' + have.size + ' of ' + count + ' parts already on the server' : 'Uploading in ' + count + ' parts');
    report();
    var todo = [];
    for (var i = 1; i <= count; i++) if (!have.has(i)) todo.push(i);

    async function sendPart(index) {
      var from = (index - 1) * chunk;
      var data = await file.slice(from, from + lenOf(index)).arrayBuffer();
      var digest = await sha1OfBuffer(data);
      for (var attempt = 1; ; attempt++) {
        try {
          inFlight[index] = 0;
          await xhrSend('PUT', '/api/v1/uploads/' + encodeURIComponent(s.id) + '/parts/' + index, data,
            authHeaders({ 'Content-Type': 'application/octet-stream', 'X-Chunk-Sha1': digest }),
            function (n) { inFlight[index] = n; report(); });
          delete inFlight[index];
          base += data.byteLength;
          report();
          return;
        } catch (e) {
          delete inFlight[index];
          report();
          var transient = e.status === 0 || e.status >= 500 || e.status === 429;
          if (!transient || attempt >= settings.partRetries) throw e;
          await new Promise(function (res) { setTimeout(res, 500 * Math.pow(2, attempt)); });
        }
      }
    }

    var failed = null;
    async function worker() {
      while (todo.length && !failed) {
        var index = todo.shift();
        try { await sendPart(index); } catch (e) { failed = failed || e; }
      }
    }
    var workers = [];
    for (var w = 0; w < Math.max(1, settings.partsInFlight); w++) workers.push(worker());
    await Promise.all(workers);
    if (failed) throw new Error(failed.message + ' (the parts sent so far are kept: upload the same file again to resume)');

    row.phase('finishing', 'Verifying');
    await api('POST', '/uploads/' + encodeURIComponent(s.id) + '/complete');
    forgetPending(s.id);
    return have.size ? 'Done (resumed: ' + have.size + ' of ' + count + ' parts were already there)' : 'Done (' + count + ' parts)';
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('auth-form').addEventListener('submit', onAuthSubmit);
    $('auth-switch').addEventListener('click', function () { setAuthMode(authMode === 'signin' ? 'signup' : 'signin'); });
    $('signout').addEventListener('click', onSignout);
    $('refresh').addEventListener('click', refresh);
    $('new-folder').addEventListener('click', mkdir);
    $('more').addEventListener('click', function () { loadList(true); });
    $('upload-button').addEventListener('click', function () { $('file-input').click(); });
    $('file-input').addEventListener('change', function () {
      var files = Array.prototype.slice.call($('file-input').files);
      $('file-input').value = '';
      enqueue(files, state.dir);
    });
    $('resume-input').addEventListener('change', onResumeChosen);
    window.addEventListener('hashchange', function () {
      if (state.token) navigate(dirFromHash());
    });
    var zone = $('drive-view');
    zone.addEventListener('dragover', function (ev) {
      if (ev.dataTransfer && Array.prototype.indexOf.call(ev.dataTransfer.types, 'Files') >= 0) {
        ev.preventDefault();
        zone.classList.add('dragging');
      }
    });
    zone.addEventListener('dragleave', function (ev) {
      if (ev.target === zone || !zone.contains(ev.relatedTarget)) zone.classList.remove('dragging');
    });
    zone.addEventListener('drop', function (ev) {
      ev.preventDefault();
      zone.classList.remove('dragging');
      if (ev.dataTransfer && ev.dataTransfer.files.length) enqueue(ev.dataTransfer.files, state.dir);
    });
    window.addEventListener('beforeunload', function (ev) {
      if (document.querySelector('.upload.hashing, .upload.checking, .upload.proving, .upload.sending, .upload.finishing')) {
        ev.preventDefault();
      }
    });
  }

  async function start() {
    wire();
    setAuthMode('signin');
    var saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY) || 'null'); } catch (_) { /* ignore */ }
    if (saved && saved.token) {
      state.token = saved.token;
      state.username = saved.username;
      try {
        await api('GET', '/me', undefined, { noSignout: true });
      } catch (e) {
        return signedOut(e.status === 401 ? 'Your session has ended. Please sign in again.' : e.message);
      }
      return enterDrive();
    }
    show('auth');
  }

  // For the browser test and the curious: the tunables and the hash functions.
  window.filestore = { settings: settings, sha1OfFile: sha1OfFile };

  start();
})();
