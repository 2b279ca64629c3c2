// tidings chat page. Served as /app.js: no inline script, so the page works under a strict
// Content-Security-Policy (`script-src 'self'`). Plain DOM, no framework, no build step.
//
// Protocol (see the README): connect with auth { serverOffset, nickname, latest }; receive
// `chat message (content, id, { author, time })`; send `chat message (content, clientOffset,
// { author })` with an ack; `history ({ before, limit })`; `presence` (with who joined/left),
// `user renamed`, `typing`; `nickname (name)`. Message text is only ever put in the page as text.
'use strict';

(() => {
  const NICK_KEY = 'tidings.nickname';
  const LATEST = 50; // a fresh page replays only the latest messages...
  const PAGE = 50; // ...and loads older ones a page at a time
  const NICK_MAX = 32;
  const TYPING_IDLE_MS = 3000; // stop "typing" after this long without a keystroke
  const TYPING_REFRESH_MS = 2500; // re-announce "typing" this often while still typing
  const TYPING_EXPIRE_MS = 6000; // forget someone's "typing" if not refreshed
  const NOTICE_MS = 8000;
  const GROUP_MS = 5 * 60 * 1000; // messages of one author within this are grouped
  const NEAR_BOTTOM_PX = 48;
  const NEAR_TOP_PX = 160;

  // ---- small helpers --------------------------------------------------------------------

  // A random string that does not depend on socket.id (undefined while offline).
  // crypto.randomUUID only exists in secure contexts (https or localhost).
  const randomId = () => {
    const c = globalThis.crypto;
    if (c && typeof c.randomUUID === 'function') return c.randomUUID();
    if (c && typeof c.getRandomValues === 'function') {
      return Array.from(c.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    }
    return Math.random().toString(36).slice(2) + Date.now().toString(36) + Math.random().toString(36).slice(2);
  };

  const $ = (id) => document.getElementById(id);

  const el = (tag, className, text) => {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  /** Length in characters (code points), as the server counts them. */
  const charCount = (s) => Array.from(s).length;

  /** null if `name` is a usable nickname, else why not. */
  const nicknameProblem = (name) => {
    if (!name) return 'Please enter a name.';
    if (charCount(name) > NICK_MAX) return `A name can have at most ${NICK_MAX} characters.`;
    return null;
  };

  const storage = {
    get(key) {
      try {
        return globalThis.localStorage ? globalThis.localStorage.getItem(key) : null;
      } catch {
        return null; // storage disabled
      }
    },
    set(key, value) {
      try {
        if (globalThis.localStorage) globalThis.localStorage.setItem(key, value);
      } catch {}
    },
  };

  /** A stable colour class for a name (12 hues, defined in style.css). */
  const hueClass = (name) => {
    if (!name) return 'hue-none';
    let h = 0x811c9dc5; // FNV-1a
    for (const ch of name) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193) >>> 0;
    return `hue-${h % 12}`;
  };

  const initial = (name) => (name ? Array.from(name.trim())[0] || '?' : '?').toUpperCase();

  const pad2 = (n) => String(n).padStart(2, '0');
  const sameDay = (a, b) =>
    a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  /** "14:03" today, "25 Nov 14:03" another day. */
  const shortTime = (ms) => {
    const d = new Date(ms);
    const hm = `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (sameDay(d, new Date())) return hm;
    const year = d.getFullYear() === new Date().getFullYear() ? '' : ` ${d.getFullYear()}`;
    return `${d.getDate()} ${MONTHS[d.getMonth()]}${year} ${hm}`;
  };

  const validTime = (t) => Number.isFinite(t) && t > 0 && t < 8.64e15;

  /** Human list: "A", "A and B", "A, B and C". */
  const listNames = (names) =>
    names.length <= 1 ? names.join('') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;

  // ---- elements -------------------------------------------------------------------------

  const form = $('form');
  const input = $('input');
  const messages = $('messages');
  const outbox = $('outbox');
  const scroller = $('scroller');
  const toggleButton = $('toggle-btn');
  const statusBox = $('status');
  const statusText = $('status-text');
  const olderButton = $('older-btn');
  const historyNote = $('history-note');
  const emptyNote = $('empty');
  const jumpButton = $('jump-btn');
  const noticesList = $('notices');
  const typingLine = $('typing');
  const nickForm = $('nick-form');
  const nickInput = $('nick-input');
  const nickError = $('nick-error');
  const nickCancel = $('nick-cancel');
  const nickButton = $('nick-btn');
  const peopleButton = $('people-btn');
  const onlineCount = $('online-count');
  const peopleCount = $('people-count');
  const peopleList = $('people');
  const peopleNote = $('people-note');
  const sidebar = $('sidebar');

  // ---- state ----------------------------------------------------------------------------

  const clientId = randomId();
  let counter = 0;

  let nickname = (storage.get(NICK_KEY) || '').trim();
  if (nicknameProblem(nickname)) nickname = '';

  /** Rendered messages: ascending ids, and id → { li, author, time }. */
  const ids = [];
  const shown = new Map();
  let newestId = 0; // highest id rendered from the live stream: the reconnect offset
  let hasMore = null; // older history exists: null = unknown yet
  let loadingOlder = false;
  let historyFailed = '';
  let everConnected = false;
  let unread = 0;
  let unseenBelow = 0;
  const baseTitle = document.title || 'tidings';

  /** Messages typed here and not yet confirmed: { key, content, author, state, reason, li }. */
  const pending = [];

  let connection = 'connecting'; // connecting | connected | reconnecting | offline
  let attempt = 0;
  let refusal = ''; // why the server refused the connection (connect_error), if it did

  // ---- the socket -----------------------------------------------------------------------

  const auth = { serverOffset: 0, latest: LATEST };
  if (nickname) auth.nickname = nickname;
  const socket = io({
    auth,
    // retries: the client keeps each message queued until the server acks it, re-sending
    // (with the same clientOffset, so never stored twice) on reconnect or after ackTimeout.
    ackTimeout: 10000,
    retries: 3,
  });

  // ---- rendering messages ---------------------------------------------------------------

  /** The li for one message. Every piece of text goes through textContent. */
  function messageItem(content, author, time) {
    const li = el('li', `msg ${hueClass(author)}`);
    li.appendChild(el('span', 'avatar', initial(author))).setAttribute('aria-hidden', 'true');
    const body = li.appendChild(el('div', 'msg-body'));
    const meta = body.appendChild(el('p', 'msg-meta'));
    meta.appendChild(el('span', author ? 'author' : 'author anon', author || 'anonymous'));
    if (validTime(time)) {
      const t = meta.appendChild(el('time', 'msg-time', shortTime(time)));
      const d = new Date(time);
      t.setAttribute('datetime', d.toISOString());
      t.setAttribute('title', d.toLocaleString());
    }
    body.appendChild(el('p', 'msg-text', content));
    return li;
  }

  const groupable = (a, b) =>
    !!a && !!b && a.author === b.author && validTime(a.time) && validTime(b.time) && b.time - a.time >= 0 && b.time - a.time < GROUP_MS;

  /** Continuation messages (same author, a few minutes apart) hide the repeated name. */
  function regroup(index) {
    for (const i of [index, index + 1]) {
      if (i < 0 || i >= ids.length) continue;
      const cur = shown.get(ids[i]);
      const prev = i > 0 ? shown.get(ids[i - 1]) : null;
      cur.li.classList.toggle('cont', groupable(prev, cur));
    }
  }

  const isMine = (author) => !!author && author === nickname;

  /**
   * Puts message `id` in its place (ascending ids); false if it is already on the page.
   * Ids come in order, so this is nearly always an append.
   */
  function place(id, content, author, time) {
    if (shown.has(id)) return false;
    const li = messageItem(content, author, time);
    li.setAttribute('data-id', String(id));
    if (isMine(author)) li.classList.add('mine');
    let lo = 0;
    let hi = ids.length;
    if (hi === 0 || ids[hi - 1] < id) {
      lo = hi;
    } else {
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ids[mid] < id) lo = mid + 1;
        else hi = mid;
      }
    }
    if (lo === ids.length) messages.appendChild(li);
    else messages.insertBefore(li, shown.get(ids[lo]).li);
    ids.splice(lo, 0, id);
    shown.set(id, { li, author, time });
    regroup(lo);
    return true;
  }

  const parseMeta = (meta) => {
    const author = meta && typeof meta.author === 'string' && meta.author ? meta.author : null;
    const time = meta && validTime(meta.time) ? meta.time : undefined;
    return { author, time };
  };

  const distanceFromBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
  const atBottom = () => distanceFromBottom() < NEAR_BOTTOM_PX;
  const scrollToBottom = () => {
    scroller.scrollTop = scroller.scrollHeight;
    unseenBelow = 0;
    renderJump();
  };

  function renderJump() {
    jumpButton.hidden = unseenBelow === 0;
    jumpButton.textContent = unseenBelow === 1 ? '1 new message ↓' : `${unseenBelow} new messages ↓`;
  }

  function renderEmpty() {
    emptyNote.hidden = !(everConnected && ids.length === 0 && pending.length === 0);
  }

  function renderHistoryTop() {
    const beginning = ids.length > 0 && (hasMore === false || ids[0] === 1);
    olderButton.hidden = ids.length === 0 || beginning;
    olderButton.disabled = loadingOlder;
    olderButton.textContent = loadingOlder ? 'Loading older messages…' : 'Load older messages';
    historyNote.hidden = !(beginning || historyFailed);
    historyNote.textContent = historyFailed || 'This is the beginning of the conversation.';
  }

  /** A live (or replayed) `chat message`. */
  function onChatMessage(content, id, meta) {
    if (!Number.isSafeInteger(id) || id <= 0) return; // not a tidings / step-8 server message
    const text = String(content);
    const { author, time } = parseMeta(meta);
    // older than what is loaded: it belongs to the history above, loaded on demand
    if (ids.length > 0 && id < ids[0] && hasMore !== false) return;
    if (id > newestId) {
      newestId = id;
      auth.serverOffset = id; // reconnect from here: replay exactly what was missed...
      delete auth.latest; // ...all of it (a gap would be hidden otherwise)
    }
    if (shown.has(id)) return; // already on the page
    const follow = atBottom();
    const mine = adopt(text, author);
    place(id, text, author, time);
    if (mine) shown.get(id).li.classList.add('mine');
    if (author) stopTyping(author);
    if (ids.length === 1 || id === ids[0]) maybeBeginning();
    if (follow || mine) scrollToBottom();
    else if (id === ids[ids.length - 1]) {
      unseenBelow += 1;
      renderJump();
    }
    if (document.hidden) {
      unread += 1;
      document.title = `(${unread}) ${baseTitle}`;
    }
    renderEmpty();
    renderHistoryTop();
    scheduleFill();
  }

  function maybeBeginning() {
    if (ids[0] === 1) hasMore = false; // ids start at 1: nothing older exists
    renderHistoryTop();
  }

  // ---- sending --------------------------------------------------------------------------
  //
  // Messages typed here wait in `pending` (shown in #outbox) until the server confirms them.
  // One at a time is handed to socket.io (which holds it while offline and re-sends it, with
  // the same clientOffset, on reconnect or ackTimeout), so a "rate limited" answer holds the
  // rest back instead of having them refused too, and the order typed is the order stored.

  let inFlight = null; // the pending message handed to socket.io, awaiting its ack
  let holdUntil = 0; // rate limited: send nothing before this time
  let pumpTimer = null;

  function pendingLabel(p) {
    if (p.state === 'failed') return `Not sent: ${p.reason}`;
    if (!socket.connected) return 'Waiting for the connection — it will be sent when you are back online';
    if (p.state === 'held' && holdUntil > Date.now()) {
      return `Slow down — sending again in ${Math.max(1, Math.ceil((holdUntil - Date.now()) / 1000))} s`;
    }
    return p === inFlight ? 'Sending…' : 'Queued';
  }

  function renderPending(p) {
    if (p.seen) return; // its confirmed copy is on the page
    if (!p.li) {
      p.li = messageItem(p.content, p.author, Date.now());
      p.li.classList.add('mine', 'pending');
      p.stateLine = p.li.lastChild.appendChild(el('p', 'msg-state'));
      p.actions = p.li.lastChild.appendChild(el('div', 'msg-actions'));
      // keep the outbox in the order typed
      const next = pending.slice(pending.indexOf(p) + 1).find((q) => q.li);
      if (next) outbox.insertBefore(p.li, next.li);
      else outbox.appendChild(p.li);
    }
    p.li.classList.toggle('failed', p.state === 'failed');
    p.stateLine.textContent = pendingLabel(p);
    p.actions.replaceChildren();
    if (p.state === 'failed') {
      const retry = p.actions.appendChild(el('button', 'btn btn-small retry', 'Retry'));
      retry.type = 'button';
      retry.addEventListener('click', () => {
        p.state = 'queued';
        renderPending(p);
        pump();
        input.focus();
      });
      const discard = p.actions.appendChild(el('button', 'btn btn-small btn-quiet discard', 'Discard'));
      discard.type = 'button';
      discard.addEventListener('click', () => {
        settle(p);
        input.focus();
      });
    }
  }

  function renderOutbox() {
    for (const p of pending) renderPending(p);
  }

  /** Done with a pending message: remove it from the outbox. */
  function settle(p) {
    const i = pending.indexOf(p);
    if (i >= 0) pending.splice(i, 1);
    if (p.li) p.li.remove();
    p.li = null;
    renderStatus();
    renderEmpty();
  }

  /** Hands the next waiting message to socket.io, unless one is in flight or we must wait. */
  function pump() {
    clearTimeout(pumpTimer);
    if (inFlight) return;
    const next = pending.find((p) => p.state === 'queued' || p.state === 'held');
    if (!next) return;
    const wait = holdUntil - Date.now();
    if (wait > 0) {
      pumpTimer = setTimeout(pump, Math.min(wait, 1000)); // also ticks the countdown
      renderOutbox();
      return;
    }
    inFlight = next;
    next.state = 'sending';
    next.sent = true;
    renderPending(next);
    const args = ['chat message', next.content, next.key];
    if (next.author) args.push({ author: next.author });
    socket.emit(...args, (err, res) => onAck(next, err, res));
  }

  /**
   * Our own message comes back as `chat message` (before its ack): take the pending copy off
   * the page so the text is never shown twice. Matched on content and author, oldest first.
   */
  function adopt(content, author) {
    const p = pending.find((q) => q.sent && q.state !== 'failed' && !q.seen && q.content === content && q.author === author);
    if (!p) return false;
    p.seen = true;
    if (p.li) p.li.remove();
    p.li = null;
    renderStatus();
    return true;
  }

  function onAck(p, err, res) {
    if (inFlight === p) inFlight = null;
    if (!pending.includes(p)) return pump();
    if (err) {
      // socket.io gave up (no answer after its retries); if it came back, it was stored
      if (p.seen) settle(p);
      else fail(p, 'the server did not answer.');
    } else if (res && Number.isSafeInteger(res.id)) {
      if (!shown.has(res.id) && !p.seen && (ids.length === 0 || res.id > ids[0])) {
        // stored, but its broadcast did not reach this page: show it in its place. (An id
        // older than what is loaded is in the history above and is shown when loaded.)
        place(res.id, p.content, p.author, Date.now());
      }
      const m = shown.get(res.id);
      if (m) m.li.classList.add('mine');
      settle(p);
    } else if (res && typeof res.error === 'string' && Number.isFinite(res.retryAfterMs)) {
      // rate limited: nothing was stored; send it (and what follows) again after the wait
      holdUntil = Date.now() + Math.min(Math.max(res.retryAfterMs, 50), 60000);
      p.state = 'held';
      p.seen = false;
      renderPending(p);
    } else {
      fail(p, res && typeof res.error === 'string' ? res.error : 'unexpected answer from the server.');
    }
    pump();
  }

  function fail(p, reason) {
    p.state = 'failed';
    p.reason = reason;
    p.seen = false;
    renderPending(p);
    renderStatus();
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const content = input.value;
    if (!content || !content.trim()) return;
    input.value = '';
    stopOwnTyping();
    // unique per message, stable across retries; never built from socket.id
    const p = { key: `${clientId}-${counter++}`, content, author: nickname || null, state: 'queued' };
    pending.push(p);
    renderPending(p);
    pump();
    scrollToBottom();
    renderStatus();
    renderEmpty();
  });

  // ---- older history --------------------------------------------------------------------

  function loadOlder() {
    if (loadingOlder || hasMore === false || !socket.connected || ids.length === 0 || ids[0] === 1) return;
    loadingOlder = true;
    historyFailed = '';
    renderHistoryTop();
    const before = ids[0];
    socket.emit('history', { before, limit: PAGE }, (err, res) => {
      loadingOlder = false;
      if (err || !res || !Array.isArray(res.messages)) {
        historyFailed = `Could not load older messages${res && res.error ? `: ${res.error}` : ''}.`;
        renderHistoryTop();
        return;
      }
      // keep what is on screen where it is while older messages go in above it
      const fromBottom = scroller.scrollHeight - scroller.scrollTop;
      for (const m of res.messages) {
        if (!m || !Number.isSafeInteger(m.id) || m.id <= 0 || typeof m.content !== 'string') continue;
        const { author, time } = parseMeta(m);
        place(m.id, m.content, author, time);
      }
      scroller.scrollTop = scroller.scrollHeight - fromBottom;
      hasMore = !!res.hasMore && res.messages.length > 0;
      if (ids[0] === 1) hasMore = false;
      renderHistoryTop();
      renderEmpty();
      scheduleFill();
    });
  }

  // Load older pages while the user is near the top, or while the page is not yet tall
  // enough to scroll at all; but only once this connection's replay is over (`sync`). While
  // the replayed messages stream in, the page is short only because they have not all
  // arrived yet: filling then would load a second page above the latest one whenever the
  // replay paused for a moment (a busy machine was enough).
  let fillTimer = null;
  let replayOver = false;
  function scheduleFill() {
    clearTimeout(fillTimer);
    fillTimer = setTimeout(() => {
      if (!replayOver) return; // `sync` schedules it again
      if (scroller.scrollHeight <= scroller.clientHeight + NEAR_TOP_PX || scroller.scrollTop < NEAR_TOP_PX) loadOlder();
    }, 150);
  }

  scroller.addEventListener('scroll', () => {
    // Not during the replay either: its own scrolling to the bottom, when the messages first
    // fill the page, fires a scroll event near the top (a reader who scrolled up meanwhile is
    // served by `sync`'s fill, which checks the same place).
    if (replayOver && scroller.scrollTop < NEAR_TOP_PX) loadOlder();
    if (unseenBelow && atBottom()) {
      unseenBelow = 0;
      renderJump();
    }
  });
  olderButton.addEventListener('click', () => loadOlder());
  jumpButton.addEventListener('click', () => {
    scrollToBottom();
    input.focus();
  });

  // ---- connection status ----------------------------------------------------------------

  function renderStatus() {
    const waiting = pending.filter((p) => p.state !== 'failed' && !p.seen).length;
    let text;
    let state = connection;
    if (connection === 'connected') text = 'Connected';
    else if (connection === 'connecting') text = 'Connecting…';
    else if (connection === 'reconnecting') text = attempt ? `Reconnecting (attempt ${attempt})…` : 'Reconnecting…';
    else text = refusal ? `Offline: ${refusal}` : 'Offline';
    if (connection !== 'connected' && globalThis.navigator && globalThis.navigator.onLine === false) {
      state = 'offline';
      text = 'Offline (no network)';
    }
    if (connection !== 'connected' && waiting) text += ` · ${waiting} unsent`;
    statusBox.setAttribute('data-state', state);
    statusText.textContent = text;
    toggleButton.textContent = socket.active ? 'Disconnect' : 'Connect';
    for (const p of pending) if (p.li) p.stateLine.textContent = pendingLabel(p);
  }

  socket.on('connect', () => {
    connection = 'connected';
    attempt = 0;
    refusal = '';
    if (!everConnected) {
      everConnected = true;
      setTimeout(renderEmpty, 400); // give the replay a moment before saying "no messages"
    }
    replayOver = false; // until this connection's `sync`
    renderStatus();
    renderPeople();
  });

  socket.on('disconnect', (reason) => {
    // the client reconnects by itself unless we or the server ended the session
    connection = socket.active ? 'reconnecting' : 'offline';
    if (reason === 'io server disconnect') refusal = 'disconnected by the server';
    clearTyping();
    renderStatus();
    renderPeople();
  });

  socket.io.on('reconnect_attempt', (n) => {
    attempt = n;
    if (connection !== 'offline') connection = 'reconnecting';
    renderStatus();
  });

  socket.on('connect_error', (err) => {
    if (socket.active) {
      // a transport error: the client retries by itself
      if (connection !== 'connecting') connection = 'reconnecting';
    } else {
      // refused by the server (e.g. a bad nickname, server full): no automatic retry
      connection = 'offline';
      refusal = (err && err.message) || 'the server refused the connection';
      if (/nickname/i.test(refusal)) openNickForm(refusal);
    }
    renderStatus();
  });

  globalThis.addEventListener('online', renderStatus);
  globalThis.addEventListener('offline', renderStatus);

  toggleButton.addEventListener('click', (e) => {
    e.preventDefault();
    if (socket.active) {
      socket.disconnect();
    } else {
      refusal = '';
      connection = 'connecting';
      socket.connect();
    }
    renderStatus();
  });

  socket.on('chat message', onChatMessage);

  // `sync ({ epoch, from, to, complete })`: the replay is over. The epoch names the database;
  // the page sends it back when reconnecting, so an offset is never applied to another database.
  let epoch = null;
  socket.on('sync', (sync) => {
    if (!sync || typeof sync !== 'object') return;
    const e = typeof sync.epoch === 'string' && sync.epoch ? sync.epoch : null;
    if (e && epoch && e !== epoch) return startOver(e);
    if (e) {
      epoch = e;
      auth.epoch = e;
    }
    if (sync.complete === false) {
      notice('Some messages are no longer available on the server.', 'gap');
    }
    replayOver = true;
    renderEmpty();
    scheduleFill();
  });

  /** The server now has another database: what is on screen belongs to the old one. */
  function startOver(newEpoch) {
    epoch = newEpoch;
    auth.epoch = newEpoch;
    for (const [, m] of shown) m.li.remove();
    ids.length = 0;
    shown.clear();
    newestId = 0;
    auth.serverOffset = 0;
    auth.latest = LATEST;
    hasMore = null;
    historyFailed = '';
    notice('The chat was reset on the server.', 'gap');
    renderHistoryTop();
    renderEmpty();
    // reconnect: the server replays the latest messages of the new database
    socket.disconnect();
    connection = 'connecting';
    socket.connect();
    renderStatus();
  }

  // ---- nickname -------------------------------------------------------------------------

  function renderNick() {
    nickButton.textContent = nickname || 'Choose a name';
    nickButton.setAttribute('aria-label', nickname ? `Your name: ${nickname}. Change it` : 'Choose a name');
    nickButton.className = `nick-chip ${hueClass(nickname || null)}${nickname ? '' : ' unset'}`;
    input.setAttribute('placeholder', nickname ? `Message as ${nickname}` : 'Message (anonymous)');
  }

  function openNickForm(error) {
    nickForm.hidden = false;
    nickInput.value = nickname;
    nickError.textContent = error || '';
    nickInput.focus();
  }

  function closeNickForm() {
    nickForm.hidden = true;
    nickError.textContent = '';
  }

  function applyNickname(name) {
    // show the new name in the online list at once (the server's next presence confirms it)
    if (presence && socket.connected) {
      const users = presence.users.filter((u) => u !== nickname && u !== name);
      users.push(name);
      presence = { count: presence.count, users: users.sort() };
    }
    nickname = name;
    storage.set(NICK_KEY, name);
    auth.nickname = name;
    renderNick();
    for (const [, m] of shown) m.li.classList.toggle('mine', isMine(m.author));
    renderPeople();
  }

  nickButton.addEventListener('click', () => (nickForm.hidden ? openNickForm() : closeNickForm()));
  nickCancel.addEventListener('click', () => {
    closeNickForm();
    input.focus();
  });
  nickForm.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      closeNickForm();
      input.focus();
    }
  });

  nickForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = nickInput.value.trim();
    const problem = nicknameProblem(name);
    if (problem) {
      nickError.textContent = problem;
      nickInput.focus();
      return;
    }
    if (name === nickname) {
      closeNickForm();
      input.focus();
      return;
    }
    if (!socket.connected) {
      // takes effect when (re)connecting
      applyNickname(name);
      closeNickForm();
      if (!socket.active) {
        refusal = '';
        connection = 'connecting';
        socket.connect();
        renderStatus();
      }
      input.focus();
      return;
    }
    nickError.textContent = '';
    socket.emit('nickname', name, (err, res) => {
      if (!err && res && res.ok) {
        applyNickname(name);
        closeNickForm();
        input.focus();
      } else {
        nickError.textContent = res && res.error ? res.error : 'The server did not answer; try again.';
        nickInput.focus();
      }
    });
  });

  // ---- presence -------------------------------------------------------------------------

  let presence = null; // { count, users } once the server has said

  function renderPeople() {
    if (!presence) {
      onlineCount.textContent = '–';
      peopleCount.textContent = '–';
      peopleButton.setAttribute('aria-label', 'Who is online');
      return;
    }
    const { count, users } = presence;
    // while disconnected the list is only what it was: say so
    sidebar.classList.toggle('stale', !socket.connected && everConnected);
    onlineCount.textContent = String(count);
    peopleCount.textContent = String(count);
    peopleButton.setAttribute('aria-label', `${count} online: show who`);
    peopleList.replaceChildren();
    for (const name of users) {
      const li = peopleList.appendChild(el('li', `person ${hueClass(name)}`));
      li.appendChild(el('span', 'avatar avatar-small', initial(name))).setAttribute('aria-hidden', 'true');
      li.appendChild(el('span', 'person-name', name));
      if (name === nickname) li.appendChild(el('span', 'you', '(you)'));
    }
    const anonymous = Math.max(0, count - users.length);
    if (!socket.connected && everConnected) {
      peopleNote.textContent = 'Not connected: this list may be out of date.';
      return;
    }
    peopleNote.textContent =
      count === 0 ? '' : users.length === 0 ? `${count} connected, no one has a name yet.` : anonymous > 0 ? `and ${anonymous} more without a name` : '';
  }

  /** "Ada joined", "Ada, Bo and 3 others joined": one notice per presence tick. */
  function cameAndWent(names, total, verb, kind) {
    const others = names.filter((n) => n !== nickname);
    const more = Math.max(0, total - names.length);
    if (others.length === 0 && more === 0) return;
    const shown = others.slice(0, 2);
    const rest = others.length - shown.length + more;
    const who =
      rest > 0 ? `${shown.join(', ')} and ${rest} other${rest === 1 ? '' : 's'}` : shown.join(' and ');
    notice(`${who} ${verb}`, kind);
  }

  // Presence news right after this page reconnected is mostly about everyone who reconnected
  // with it (a server restart): not worth a notice.
  let quietUntil = 0;
  let connects = 0;
  socket.on('connect', () => {
    connects += 1;
    if (connects > 1) quietUntil = Date.now() + 5000;
  });

  socket.on('presence', (p) => {
    if (!p || typeof p !== 'object') return;
    const names = (v) => (Array.isArray(v) ? v.filter((u) => typeof u === 'string' && u) : []);
    const users = names(p.users);
    const count = Number.isSafeInteger(p.count) && p.count >= 0 ? p.count : users.length;
    presence = { count, users };
    for (const name of typing.keys()) if (!users.includes(name)) stopTyping(name);
    for (const name of names(p.left)) stopTyping(name);
    if (Date.now() >= quietUntil) {
      const joined = names(p.joined);
      const left = names(p.left);
      const total = (n, list) => (Number.isSafeInteger(n) && n >= list.length ? n : list.length);
      cameAndWent(joined, total(p.joinedCount, joined), 'joined', 'joined');
      cameAndWent(left, total(p.leftCount, left), 'left', 'left');
    }
    renderPeople();
  });

  /** A short-lived line above the message box ("Bob joined"); the same one is not repeated. */
  const noticeTimers = new Map(); // text → { li, timer }
  function notice(text, kind) {
    const old = noticeTimers.get(text);
    if (old) {
      clearTimeout(old.timer);
      old.li.remove();
    }
    const li = noticesList.appendChild(el('li', `notice ${kind || ''}`, text));
    const entry = { li, timer: null };
    entry.timer = setTimeout(() => {
      li.remove();
      if (noticeTimers.get(text) === entry) noticeTimers.delete(text);
    }, NOTICE_MS);
    noticeTimers.set(text, entry);
    while (noticesList.children.length > 3) noticesList.firstChild.remove();
  }

  socket.on('user renamed', (r) => {
    if (!r || typeof r !== 'object') return;
    const from = typeof r.from === 'string' && r.from ? r.from : null;
    const to = typeof r.to === 'string' && r.to ? r.to : null;
    if (from) stopTyping(from);
    if (from && to) notice(`${from} is now ${to}`, 'renamed');
    else if (to) notice(`${to} joined`, 'joined');
    else if (from) notice(`${from} left`, 'left');
  });

  peopleButton.addEventListener('click', () => {
    const open = !document.body.classList.contains('people-open');
    document.body.classList.toggle('people-open', open);
    peopleButton.setAttribute('aria-expanded', String(open));
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('people-open')) {
      document.body.classList.remove('people-open');
      peopleButton.setAttribute('aria-expanded', 'false');
      peopleButton.focus();
    }
  });

  // ---- typing ---------------------------------------------------------------------------

  const typing = new Map(); // nickname → expiry timer

  function renderTyping() {
    const names = [...typing.keys()];
    typingLine.textContent =
      names.length === 0
        ? ''
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length <= 3
            ? `${listNames(names)} are typing…`
            : 'Several people are typing…';
    typingLine.classList.toggle('active', names.length > 0);
  }

  function stopTyping(name) {
    if (!typing.has(name)) return;
    clearTimeout(typing.get(name));
    typing.delete(name);
    renderTyping();
  }

  function clearTyping() {
    for (const t of typing.values()) clearTimeout(t);
    typing.clear();
    renderTyping();
  }

  socket.on('typing', (t) => {
    if (!t || typeof t.nickname !== 'string' || !t.nickname || t.nickname === nickname) return;
    if (t.typing) {
      clearTimeout(typing.get(t.nickname));
      typing.set(t.nickname, setTimeout(() => stopTyping(t.nickname), TYPING_EXPIRE_MS));
      renderTyping();
    } else {
      stopTyping(t.nickname);
    }
  });

  // Our own typing: announce it (at most every TYPING_REFRESH_MS), and say when we stop.
  // `volatile`: never queued or retried like messages; dropping one is harmless.
  let ownTyping = false;
  let lastTypingSent = 0;
  let typingIdle = null;

  function sendTyping(value) {
    if (!nickname || !socket.connected) return;
    socket.volatile.emit('typing', value);
  }

  function stopOwnTyping() {
    clearTimeout(typingIdle);
    if (!ownTyping) return;
    ownTyping = false;
    sendTyping(false);
  }

  input.addEventListener('input', () => {
    if (!input.value) return stopOwnTyping();
    const now = Date.now();
    if (!ownTyping || now - lastTypingSent >= TYPING_REFRESH_MS) {
      ownTyping = true;
      lastTypingSent = now;
      sendTyping(true);
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopOwnTyping, TYPING_IDLE_MS);
  });
  input.addEventListener('blur', stopOwnTyping);

  const skipLink = $('skip-link');
  if (skipLink) {
    skipLink.addEventListener('click', (e) => {
      e.preventDefault();
      input.focus();
    });
  }

  // ---- the tab --------------------------------------------------------------------------

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) {
      unread = 0;
      document.title = baseTitle;
    }
  });

  globalThis.addEventListener('beforeunload', (e) => {
    if (pending.some((p) => !p.seen)) {
      e.preventDefault();
      e.returnValue = '';
    }
  });

  // ---- start ----------------------------------------------------------------------------

  renderNick();
  renderStatus();
  renderPeople();
  renderHistoryTop();
  if (nickname) {
    input.focus();
  } else {
    // first visit: offer to pick a name (chatting anonymously works too)
    nickForm.hidden = false;
    nickInput.value = '';
    nickInput.focus();
  }
})();
