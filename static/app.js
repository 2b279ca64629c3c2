// tidings chat page. Served as /app.js: no inline script, so the page works under a strict
// Content-Security-Policy (`script-src 'self'`). Plain DOM, no framework, no build step.
//
// Protocol (see the README): connect with auth { serverOffset, nickname, latest, rooms };
// receive `chat message (content, id, { author, time, room })`; send `chat message (content,
// clientOffset, { author, room })` with an ack; `join (room)` → { room, last }, `leave (room)`,
// `rooms` (the directory); `history ({ room, before, limit })`; `presence ({ room, … })` (with
// who joined/left), `user renamed`, `typing ({ room, … })`; `nickname (name)`. Message text is
// only ever put in the page as text.
//
// Rooms: one socket is in every room the user joined (remembered in localStorage), so one
// offset recovers them all. Each room keeps its own message list, its "floor" (the lowest id
// from which the page has every message of the room: older ones come from `history`), its
// unread count, scroll position, pending messages, draft, presence and typing. The room in
// view is the one in the URL (`#dev`).
//
// Moderation (--auth optional|required, signed in): `create room`, `invite`, `kick`, `ban`,
// `unban`, `mute`, `unmute`, `set role`, `delete message`, each answered { ok } or { error }.
// The server never tells the page its roles, so the page offers the actions to anyone signed
// in and shows the server's refusal as it is; `room changed` notices become a short system
// line in their room (the page's own removal takes the room out of its joined list), and
// `message deleted` takes the message off the page, live or replayed.
'use strict';

(() => {
  const NICK_KEY = 'tidings.nickname';
  const ROOMS_KEY = 'tidings.rooms'; // { joined: [names], read: { name: id }, epoch, view }
  const LATEST = 50; // a fresh page replays only the latest messages...
  const PAGE = 50; // ...and loads older ones a page at a time
  const NICK_MAX = 32;
  const ROOM_MAX = 64;
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

  /** The server's rule for room names: 1-64 of a-z 0-9 - _, starting with a letter or digit. */
  const ROOM_RULE = /^[a-z0-9][a-z0-9_-]{0,63}$/;
  const isRoomName = (name) => typeof name === 'string' && ROOM_RULE.test(name);

  /** null if `name` is a valid room name, else why not (in words a person can act on). */
  const roomProblem = (name) => {
    if (!name) return 'Please enter a room name.';
    if (isRoomName(name)) return null;
    const lower = name.toLowerCase();
    const hint = lower !== name && isRoomName(lower) ? ` Try “${lower}”.` : '';
    if (name.length > ROOM_MAX) return `A room name can have at most ${ROOM_MAX} characters.`;
    const bad = [...new Set(Array.from(name).filter((c) => !/[a-z0-9_-]/.test(c)))].slice(0, 3);
    if (bad.length) {
      const shown = bad.map((c) => (c === ' ' ? 'spaces' : `“${c}”`)).join(', ');
      return `A room name can use only a-z, 0-9, - and _ (not ${shown}).${hint}`;
    }
    return `A room name starts with a letter (a-z) or a digit.${hint}`;
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

  /** What this browser remembers about rooms (shared by its tabs: read, changed, written). */
  function savedRooms() {
    try {
      const v = JSON.parse(storage.get(ROOMS_KEY) || '{}');
      return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  }

  function updateSaved(change) {
    const saved = savedRooms();
    change(saved);
    storage.set(ROOMS_KEY, JSON.stringify(saved));
  }

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

  /** Calls `fn` once, soon, however many times this is called meanwhile. */
  const coalesce = (fn) => {
    let timer = null;
    return () => {
      if (timer === null) {
        timer = setTimeout(() => {
          timer = null;
          fn();
        }, 0);
      }
    };
  };

  // ---- elements -------------------------------------------------------------------------

  const form = $('form');
  const input = $('input');
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
  const peopleRoom = $('people-room');
  const sidebar = $('sidebar');
  const roomsPanel = $('rooms-panel');
  const roomsList = $('rooms');
  const roomsNote = $('rooms-note');
  const roomsButton = $('rooms-btn');
  const roomsUnread = $('rooms-unread');
  const joinButton = $('join-btn');
  const joinForm = $('join-form');
  const joinInput = $('join-input');
  const joinError = $('join-error');
  const directoryTitle = $('directory-title');
  const directoryList = $('directory');
  const roomName = $('room-name');
  const leaveButton = $('leave-btn');
  const roomError = $('room-error');
  const roomErrorText = $('room-error-text');
  const roomRetry = $('room-retry');
  const roomClose = $('room-close');
  const roomPrivate = $('room-private');
  const roomReadOnly = $('room-readonly');
  const createButton = $('create-btn');
  const createForm = $('create-form');
  const createInput = $('create-input');
  const createPrivate = $('create-private');
  const createReadOnly = $('create-readonly');
  const createError = $('create-error');
  const manageButton = $('manage-btn');
  const manageForm = $('manage-form');
  const manageRoom = $('manage-room');
  const manageUser = $('manage-user');
  const manageResult = $('manage-result');
  const manageClose = $('manage-close');
  const inviteButton = $('invite-btn');
  // The lists of the room in view carry these ids; other rooms' lists wait off the page.
  const noRoom = { list: $('messages'), outbox: $('outbox') };

  // ---- state ----------------------------------------------------------------------------

  const clientId = randomId();
  let counter = 0;

  let nickname = (storage.get(NICK_KEY) || '').trim();
  if (nicknameProblem(nickname)) nickname = '';

  // ---- signing in: a token (--auth) -------------------------------------------------------
  // An application signs a token for its user and opens the page at `#token=…` (or
  // `#dev&token=…`: the room stays in the fragment). The token is a credential: it leaves the
  // address bar at once (history, bookmarks, screenshots) and stays in this tab's
  // sessionStorage, so a reload keeps the sign-in and closing the tab ends it. Its claims are
  // read here for display only; the server verifies it.
  const TOKEN_KEY = 'tidings.token';
  const session = {
    get() {
      try {
        return (globalThis.sessionStorage && globalThis.sessionStorage.getItem(TOKEN_KEY)) || '';
      } catch {
        return '';
      }
    },
    set(token) {
      try {
        if (globalThis.sessionStorage) globalThis.sessionStorage.setItem(TOKEN_KEY, token);
      } catch {}
    },
  };

  /** Takes a token out of the URL's fragment into sessionStorage; true if there was one. */
  function takeToken() {
    const loc = globalThis.location;
    if (!loc || typeof loc.hash !== 'string') return false;
    const parts = loc.hash.slice(1).split('&');
    const at = parts.findIndex((p) => p.startsWith('token='));
    if (at < 0) return false;
    let token = parts[at].slice('token='.length);
    try {
      token = decodeURIComponent(token);
    } catch {}
    parts.splice(at, 1);
    const rest = parts.filter(Boolean).join('&');
    try {
      history.replaceState(null, '', `${loc.pathname}${loc.search}${rest ? `#${rest}` : ''}`);
    } catch {}
    if (token) session.set(token);
    return !!token;
  }

  /** Who a token says its holder is, { user, name }, or null if it does not read as one. */
  function tokenIdentity(token) {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      if (typeof claims.sub !== 'string' || !claims.sub) return null;
      const name = typeof claims.name === 'string' && claims.name.trim() ? claims.name.trim() : claims.sub;
      return { user: claims.sub, name };
    } catch {
      return null;
    }
  }

  takeToken();
  let token = session.get();
  let me = token ? tokenIdentity(token) : null; // the signed-in user, if any
  if (me) nickname = me.name;

  /**
   * The rooms the page knows, by name: joined, joining (the `join` is on its way), failed (the
   * server refused it: shown with the reason until retried or closed) or leaving.
   */
  const rooms = new Map();
  let view = null; // the room on screen
  let newestId = 0; // highest id received from the stream (any room): the reconnect offset
  let everConnected = false;
  let synced = false; // a `sync` was seen: the read marks are known to be this database's
  let unread = 0; // for the tab's title while it is hidden
  const baseTitle = 'tidings';

  /** Messages typed here and not yet confirmed: { key, room, content, author, state, reason, li }. */
  const pending = [];

  let connection = 'connecting'; // connecting | connected | reconnecting | offline
  let attempt = 0;
  let refusal = ''; // why the server refused the connection (connect_error), if it did

  function makeRoom(name, state) {
    const list = el('ul', 'messages');
    const outbox = el('ul', 'outbox');
    outbox.setAttribute('aria-label', 'Messages not yet delivered');
    const read = (savedRooms().read || {})[name];
    return {
      name,
      state,
      error: '',
      list,
      outbox,
      ids: [], // rendered ids, ascending
      shown: new Map(), // id → { li, author, time }
      floor: null, // the page has every message of the room with an id >= floor (null: not yet known)
      beginning: false, // nothing older than the floor
      loading: false,
      historyFailed: '',
      lastRead: Number.isSafeInteger(read) ? read : null,
      scroll: null, // where the reader was when they left the room (null: at the bottom)
      unseenBelow: 0,
      draft: '',
      presence: null, // { count, users }
      typing: new Map(), // nickname → expiry timer
      private: false, // as far as the page knows (the directory, a `create` notice, our own form)
      readOnly: false,
      deleted: new Set(), // ids the server said are deleted: never shown again (a history page may be older news)
      why: '', // a failed room: the whole sentence, when it is more than "Could not join"
      roving: null, // the message li whose menu button is in the Tab order (signed in)
    };
  }

  /** Rooms shown in the list, by name. */
  const listed = () =>
    [...rooms.values()].filter((r) => r.state !== 'leaving').sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const joinedNames = () => [...rooms.values()].filter((r) => r.state === 'joined').map((r) => r.name);
  const inRoom = (room) => !!room && (room.state === 'joined' || room.state === 'joining');

  // What this browser remembered: the rooms it is in (missing: it has never said, so it
  // connects without `rooms` and learns the server's default room from the first event).
  const remembered = savedRooms();
  const rememberedRooms = Array.isArray(remembered.joined)
    ? [...new Set(remembered.joined.filter(isRoomName))].slice(0, 100)
    : null;
  let expectingDefault = rememberedRooms === null;
  let defaultName = null;
  for (const name of rememberedRooms || []) rooms.set(name, makeRoom(name, 'joined'));

  // ---- the socket -----------------------------------------------------------------------

  const auth = { serverOffset: 0, latest: LATEST };
  if (rememberedRooms) auth.rooms = rememberedRooms;
  if (token) auth.token = token;
  else if (nickname) auth.nickname = nickname;
  const socket = io({
    auth,
    // retries: the client keeps each message queued until the server acks it, re-sending
    // (with the same clientOffset, so never stored twice) on reconnect or after ackTimeout.
    // Every emit with an ack (join, leave, history…) goes through that queue, one at a time.
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
  function regroup(room, index) {
    for (const i of [index, index + 1]) {
      if (i < 0 || i >= room.ids.length) continue;
      const cur = room.shown.get(room.ids[i]);
      const prev = i > 0 ? room.shown.get(room.ids[i - 1]) : null;
      if (!cur.system) cur.li.classList.toggle('cont', !!prev && !prev.system && groupable(prev, cur));
    }
  }

  const isMine = (author) => !!author && author === nickname;

  /**
   * Puts message `id` in its place in `room` (ascending ids); false if it is already there,
   * or was deleted. `user`: the verified sender's id (null for anonymous senders).
   */
  function place(room, id, content, author, time, user = null) {
    if (room.shown.has(id) || room.deleted.has(id)) return false;
    const li = messageItem(content, author, time);
    li.setAttribute('data-id', String(id));
    if (isMine(author)) li.classList.add('mine');
    // Signed in: a menu of what may be done with it (the server decides whether we may).
    if (me) addTools(li, author, user);
    insertEntry(room, id, li, { li, author, time, user });
    if (me && (!li.nextElementSibling || !roving(room))) keepRoving(room, li);
    return true;
  }

  /**
   * A `room changed` notice as a short line among the messages, in its place in the log (its
   * offset is an id of the same sequence), so it reads in order with what was said around it.
   */
  function placeSystem(room, id, text) {
    if (room.shown.has(id)) return false;
    const li = el('li', 'msg-system');
    li.setAttribute('data-id', String(id));
    li.appendChild(el('span', 'msg-system-mark', '⚑')).setAttribute('aria-hidden', 'true');
    li.appendChild(el('span', 'msg-system-text', text));
    insertEntry(room, id, li, { li, system: true });
    return true;
  }

  /** Ids come in order, so this is nearly always an append. */
  function insertEntry(room, id, li, entry) {
    const { ids } = room;
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
    if (lo === ids.length) room.list.appendChild(li);
    else room.list.insertBefore(li, room.shown.get(ids[lo]).li);
    ids.splice(lo, 0, id);
    room.shown.set(id, entry);
    regroup(room, lo);
    if (id === 1) room.beginning = true;
  }

  /** Whether `room` shows any message (system lines aside). */
  const hasMessages = (room) => room.ids.some((id) => !room.shown.get(id).system);

  /** Takes message `id` off `room`'s list. */
  function unplace(room, id) {
    const i = room.ids.indexOf(id);
    if (i < 0) return;
    room.shown.get(id).li.remove();
    room.shown.delete(id);
    room.ids.splice(i, 1);
    regroup(room, i - 1);
    if (me && !roving(room)) keepRoving(room, room.list.lastElementChild);
  }

  const parseMeta = (meta) => {
    const author = meta && typeof meta.author === 'string' && meta.author ? meta.author : null;
    const time = meta && validTime(meta.time) ? meta.time : undefined;
    const user = meta && typeof meta.user === 'string' && meta.user ? meta.user : null;
    return { author, time, user };
  };

  const distanceFromBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
  const atBottom = () => distanceFromBottom() < NEAR_BOTTOM_PX;
  const scrollToBottom = () => {
    scroller.scrollTop = scroller.scrollHeight;
    pinned = true;
    if (view) view.unseenBelow = 0;
    renderJump();
  };
  // Whether the reader is at the bottom, as of the last scroll: when the message list gets
  // shorter (a notice or the typing line above the message box, a phone's keyboard), the
  // newest message stays in view.
  let pinned = true;
  if (typeof ResizeObserver === 'function') {
    new ResizeObserver(() => {
      if (pinned && !atBottom()) scroller.scrollTop = scroller.scrollHeight;
    }).observe(scroller);
  }

  function renderJump() {
    const n = view ? view.unseenBelow : 0;
    jumpButton.hidden = n === 0;
    jumpButton.textContent = n === 1 ? '1 new message ↓' : `${n} new messages ↓`;
  }

  function renderEmpty() {
    roomError.hidden = !(view && view.state === 'failed');
    if (view && view.state === 'failed') roomErrorText.textContent = view.why || `Could not join #${view.name}: ${view.error}`;
    let text = '';
    if (!view) {
      if (everConnected && !expectingDefault) text = 'You are not in any room. Join one to start chatting.';
    } else if (view.state === 'joining') {
      text = `Joining #${view.name}…`;
    } else if (view.state === 'joined' && !hasMessages(view) && !pending.some((p) => p.room === view) && everConnected && view.beginning) {
      text = 'No messages yet. Say hello!';
    }
    emptyNote.hidden = !text;
    if (text) emptyNote.textContent = text;
  }

  function renderHistoryTop() {
    const room = view;
    const some = !!room && room.ids.length > 0;
    olderButton.hidden = !some || room.beginning;
    olderButton.disabled = !!room && room.loading;
    olderButton.textContent = room && room.loading ? 'Loading older messages…' : 'Load older messages';
    const failed = room ? room.historyFailed : '';
    historyNote.hidden = !((some && room.beginning) || failed);
    historyNote.textContent = failed || 'This is the beginning of the conversation.';
  }

  function renderRoomHead() {
    roomName.textContent = view ? view.name : 'No room';
    scroller.setAttribute('aria-label', view ? `Messages in #${view.name}` : 'Messages');
    roomName.parentElement.classList.toggle('none', !view);
    leaveButton.hidden = !view;
    leaveButton.setAttribute('aria-label', view ? `Leave #${view.name}` : 'Leave');
    roomPrivate.hidden = !(view && view.private);
    roomReadOnly.hidden = !(view && view.readOnly);
    renderModeration();
    document.title = view ? `${unread ? `(${unread}) ` : ''}#${view.name} · ${baseTitle}` : `${unread ? `(${unread}) ` : ''}${baseTitle}`;
  }

  // ---- unread counts and the list of rooms ----------------------------------------------

  /** Messages of others in `room` above its read mark: { count, more } (more: some may not be loaded). */
  function unreadOf(room) {
    if (!synced || room.lastRead === null || room === view) return { count: 0, more: false };
    let count = 0;
    for (let i = room.ids.length - 1; i >= 0 && room.ids[i] > room.lastRead; i--) {
      const m = room.shown.get(room.ids[i]);
      if (!m.system && !isMine(m.author)) count += 1;
    }
    const more = count > 0 && !room.beginning && room.floor !== null && room.lastRead < room.floor - 1;
    return { count, more };
  }

  /** Marks what the room shows as read, while it is on screen. */
  function markRead(room) {
    if (!room || room !== view || document.hidden || room.ids.length === 0) return;
    const last = room.ids[room.ids.length - 1];
    if (room.lastRead !== null && room.lastRead >= last) return;
    room.lastRead = last;
    saveReadSoon();
    renderRoomsSoon();
  }

  /** Writes the read marks of the joined rooms (at most every half second; other tabs' higher marks win). */
  let readTimer = null;
  function saveRead() {
    clearTimeout(readTimer);
    readTimer = null;
    updateSaved((s) => {
      s.read = s.read && typeof s.read === 'object' ? s.read : {};
      for (const room of rooms.values()) {
        if (room.state === 'joined' && room.lastRead !== null && !(s.read[room.name] >= room.lastRead)) s.read[room.name] = room.lastRead;
      }
    });
  }
  function saveReadSoon() {
    if (readTimer === null) readTimer = setTimeout(saveRead, 500);
  }
  globalThis.addEventListener('pagehide', () => {
    if (readTimer !== null) saveRead();
  });

  /** "private", in words (the lock is decoration): in the list of rooms and the directory. */
  function privateLabel() {
    const label = el('span', 'room-private');
    label.appendChild(el('span', 'lock-icon')).setAttribute('aria-hidden', 'true'); // drawn in CSS: no emoji font needed
    label.appendChild(el('span', null, 'private'));
    return label;
  }

  /** The list of rooms, updated in place (a focused link stays focused). */
  function renderRooms() {
    const want = listed();
    const items = new Map([...roomsList.children].map((li) => [li.dataset.room, li]));
    for (const [name, li] of items) {
      if (!want.some((r) => r.name === name)) li.remove();
    }
    let total = 0;
    let before = roomsList.firstElementChild;
    for (const room of want) {
      let li = items.get(room.name);
      if (!li || !li.isConnected) {
        li = el('li', 'room-item');
        li.dataset.room = room.name;
        const a = li.appendChild(el('a', 'room-link'));
        a.href = `#${room.name}`;
        a.dataset.room = room.name;
        a.appendChild(el('span', 'room-hash', '#')).setAttribute('aria-hidden', 'true');
        a.appendChild(el('span', 'room-name', room.name));
        a.appendChild(privateLabel()).hidden = true;
        a.appendChild(el('span', 'room-badge')).setAttribute('aria-hidden', 'true');
        roomsList.insertBefore(li, before);
      } else if (li !== before) {
        roomsList.insertBefore(li, before);
      }
      before = li.nextElementSibling;
      const a = li.firstElementChild;
      const badge = a.lastElementChild;
      badge.previousElementSibling.hidden = !room.private;
      const { count, more } = unreadOf(room);
      if (room !== view) total += count;
      const label = count > 0 ? `${count}${more ? '+' : ''}` : '';
      let state = '';
      if (room.state === 'joining') state = 'joining…';
      else if (room.state === 'failed') state = 'not joined';
      badge.textContent = state || label;
      badge.className = `room-badge${state ? ' room-state' : label ? ' unread' : ''}`;
      a.classList.toggle('has-unread', !!label);
      a.classList.toggle('failed', room.state === 'failed');
      if (room === view) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
      const spoken = state ? `, ${state}` : label ? `, ${count}${more ? ' or more' : ''} unread` : '';
      a.setAttribute('aria-label', `${room.name}${room.private ? ', private' : ''}${spoken}`);
    }
    roomsNote.textContent = want.length === 0 && !expectingDefault ? 'You are in no room yet.' : '';
    roomsUnread.hidden = total === 0;
    roomsUnread.textContent = String(total);
    roomsButton.setAttribute('aria-label', total ? `Rooms, ${total} unread` : 'Rooms');
    renderModeration(); // "Manage" follows the state of the room in view
  }
  const renderRoomsSoon = coalesce(renderRooms);

  // ---- switching rooms -----------------------------------------------------------------

  /** Where the reader is in the room on screen: null at the bottom, else the first message in view. */
  function scrollMark() {
    if (atBottom()) return null;
    const top = scroller.getBoundingClientRect().top;
    const rect = (i) => view.shown.get(view.ids[i]).li.getBoundingClientRect();
    // the first message whose bottom is below the top edge (they are in id order on screen)
    let lo = 0;
    let hi = view.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (rect(mid).bottom > top) hi = mid;
      else lo = mid + 1;
    }
    if (lo >= view.ids.length) return null;
    return { id: view.ids[lo], top: rect(lo).top - top };
  }

  function restoreScroll(room) {
    const mark = room.scroll;
    room.scroll = null;
    const m = mark && room.shown.get(mark.id);
    if (!m) return scrollToBottom();
    const top = m.li.getBoundingClientRect().top - scroller.getBoundingClientRect().top;
    scroller.scrollTop += top - mark.top;
    pinned = atBottom();
    renderJump();
  }

  /**
   * Coming back to a room with unread messages: a "New" line above the first of them, and,
   * if the reader was at the bottom and they do not all fit, the view starts there.
   */
  function markNew(room) {
    const old = room.list.querySelector('.first-unread');
    if (old) old.classList.remove('first-unread');
    if (room.lastRead === null || !synced) return;
    let first = null;
    for (let i = room.ids.length - 1; i >= 0 && room.ids[i] > room.lastRead; i--) {
      const m = room.shown.get(room.ids[i]);
      if (!m.system && !isMine(m.author)) first = room.ids[i];
    }
    if (first === null) return;
    const li = room.shown.get(first).li;
    li.classList.add('first-unread');
    if (!pinned) return;
    const box = scroller.getBoundingClientRect();
    const top = li.getBoundingClientRect().top - box.top;
    if (top >= 24) return; // all in view
    scroller.scrollTop += top - 24;
    pinned = atBottom();
    room.unseenBelow = room.ids.filter((id) => id > first && room.shown.get(id).li.getBoundingClientRect().top >= box.bottom).length;
    renderJump();
  }

  function setHash(name, push) {
    const hash = name ? `#${name}` : '';
    if (location.hash === hash || (!hash && !location.hash)) return;
    const url = `${location.pathname}${location.search}${hash}`;
    try {
      if (push) history.pushState(null, '', url);
      else history.replaceState(null, '', url);
    } catch {}
  }

  /** Shows `room` (or no room): its messages, pending ones, scroll position, draft, presence. */
  function showRoom(room, { push = false } = {}) {
    if (room === view) {
      setHash(room && room.name, push);
      return;
    }
    const old = view;
    if (old) {
      stopOwnTyping();
      old.draft = input.value;
      old.scroll = scrollMark();
    }
    const from = old || noRoom;
    const to = room || noRoom;
    from.list.removeAttribute('id');
    from.outbox.removeAttribute('id');
    from.list.replaceWith(to.list);
    from.outbox.replaceWith(to.outbox);
    to.list.id = 'messages';
    to.outbox.id = 'outbox';
    closeMenu(false);
    closeManageForm();
    view = room;
    input.value = room ? room.draft : '';
    for (const entry of noticeTimers.values()) clearTimeout(entry.timer);
    noticeTimers.clear();
    noticesList.replaceChildren();
    renderRoomHead();
    renderHistoryTop();
    renderEmpty();
    renderPeople();
    renderTyping();
    renderRooms();
    // once everything around the messages is laid out as this room has it
    if (room) {
      restoreScroll(room);
      markNew(room);
    } else {
      renderJump();
    }
    setHash(room && room.name, push);
    if (room) {
      updateSaved((s) => {
        s.view = room.name;
      });
      markRead(room);
      scheduleFill();
    }
  }

  /** The room to show when the one in view goes away: its neighbour in the list. */
  function neighbour(room) {
    const list = listed().filter((r) => r !== room);
    if (list.length === 0) return null;
    const after = list.find((r) => r.name > room.name);
    return after || list[list.length - 1];
  }

  // ---- joining and leaving --------------------------------------------------------------

  function rememberJoined(name, joined) {
    updateSaved((s) => {
      const list = Array.isArray(s.joined) ? s.joined.filter(isRoomName) : [];
      s.joined = joined ? [...new Set([...list, name])] : list.filter((n) => n !== name);
      if (!joined && s.read && typeof s.read === 'object') delete s.read[name];
    });
    auth.rooms = joinedNames();
  }

  /** The first event of a page that connected without `rooms` names the server's default room. */
  function learnDefault(name) {
    if (!isRoomName(name)) return null;
    expectingDefault = false;
    defaultName = name;
    const room = rooms.get(name) || makeRoom(name, 'joined');
    room.state = 'joined';
    rooms.set(name, room);
    rememberJoined(name, true);
    openFirstRoom();
    return room;
  }

  /** Joins room `name` (or shows it, if the page is in it already) and shows it. */
  function joinRoom(name, { push = true } = {}) {
    let room = rooms.get(name);
    if (room && room.state !== 'leaving') {
      if (room.state === 'failed') retryJoin(room);
      showRoom(room, { push });
      return room;
    }
    // a room being left starts afresh: what it missed meanwhile comes from `history`
    room = makeRoom(name, 'joining');
    rooms.set(name, room);
    sendJoin(room);
    showRoom(room, { push });
    return room;
  }

  function retryJoin(room) {
    room.state = 'joining';
    room.error = '';
    room.why = '';
    sendJoin(room);
    renderEmpty();
    renderRooms();
  }

  function sendJoin(room) {
    socket.emit('join', room.name, (err, res) => {
      if (rooms.get(room.name) !== room || room.state !== 'joining') return;
      if (!err && res && Number.isSafeInteger(res.last) && res.last >= 0) {
        // every message above `last` comes live (some may be here already); older ones
        // are read with history ({ room, before: last + 1 })
        room.state = 'joined';
        room.floor = res.last + 1;
        // What came before the ack is above `last`, unless this is a second join (a
        // reconnect in between): keep the room one unbroken run from its floor up.
        for (const id of room.ids.filter((i) => i < room.floor)) unplace(room, id);
        room.beginning = room.floor <= 1;
        if (room.lastRead === null) room.lastRead = res.last;
        rememberJoined(room.name, true);
        if (room === view) {
          renderHistoryTop();
          scheduleFill();
        } else {
          loadOlder(room);
        }
      } else if (!err && res && Number.isFinite(res.retryAfterMs)) {
        setTimeout(() => {
          if (rooms.get(room.name) === room && room.state === 'joining') sendJoin(room);
        }, Math.min(Math.max(res.retryAfterMs, 50), 60000));
        return;
      } else {
        room.state = 'failed';
        room.error = err ? 'the server did not answer.' : res && typeof res.error === 'string' ? res.error : 'unexpected answer from the server.';
      }
      renderEmpty();
      renderRooms();
    });
  }

  /** Forgets a room whose join failed (here and in what the browser remembers), and shows another. */
  function closeRoom(room) {
    for (const p of pending.filter((q) => q.room === room)) settle(p);
    rooms.delete(room.name);
    rememberJoined(room.name, false);
    if (view === room) showRoom(neighbour(room));
    renderRooms();
  }

  function leaveRoom(room) {
    if (room.state === 'failed') return closeRoom(room);
    const unsent = pending.filter((p) => p.room === room && p.state !== 'failed').length;
    if (unsent) {
      notice(`#${room.name} has ${unsent === 1 ? 'a message' : `${unsent} messages`} not sent yet: leave once ${unsent === 1 ? 'it is' : 'they are'} delivered.`, 'gap');
      return;
    }
    for (const p of pending.filter((q) => q.room === room)) settle(p); // failed ones
    if (typingRoom === room) stopOwnTyping();
    room.state = 'leaving';
    rememberJoined(room.name, false);
    if (view === room) showRoom(neighbour(room));
    renderRooms();
    sendLeave(room);
  }

  function sendLeave(room) {
    socket.emit('leave', room.name, (err, res) => {
      if (rooms.get(room.name) !== room) return;
      if (!err && res && Number.isFinite(res.retryAfterMs)) {
        setTimeout(() => sendLeave(room), Math.min(Math.max(res.retryAfterMs, 50), 60000));
        return;
      }
      // done (or given up: a message of the room arriving later makes the page ask again)
      rooms.delete(room.name);
    });
  }

  /** A room's message or presence arrived, but the page is not in it: say so to the server once. */
  const strays = new Set();
  function stray(name) {
    if (!isRoomName(name) || strays.has(name) || rooms.has(name) || !socket.connected) return;
    strays.add(name);
    socket.emit('leave', name, () => strays.delete(name));
  }

  /** The room of an event: its `room` field (the default room when it names none). */
  function roomOf(name) {
    const n = typeof name === 'string' ? name : defaultName;
    if (!n) return null;
    const room = rooms.get(n);
    if (expectingDefault && !inRoom(room)) return learnDefault(n);
    if (room) return inRoom(room) ? room : null;
    stray(n);
    return null;
  }

  // ---- receiving messages ---------------------------------------------------------------

  /** An entry `id` of the ordered log arrived: reconnect after it. */
  function advance(id) {
    if (id > newestId) {
      newestId = id;
      auth.serverOffset = id; // reconnect from here: replay exactly what was missed...
      delete auth.latest; // ...all of it (a gap would be hidden otherwise)
    }
  }

  /** A live (or replayed) `chat message`. */
  function onChatMessage(content, id, meta) {
    if (!Number.isSafeInteger(id) || id <= 0) return; // not a tidings / step-8 server message
    advance(id);
    const room = roomOf(meta && meta.room);
    if (!room) return;
    // older than what the room has from here on: it belongs to the history above, loaded on demand
    if (room.floor !== null && id < room.floor && !room.beginning) return;
    if (room.shown.has(id)) return; // already on the page (a reconnect may replay what history gave)
    const text = String(content);
    const { author, time, user } = parseMeta(meta);
    const viewing = room === view;
    const follow = viewing && atBottom();
    const mine = adopt(room, text, author);
    if (room.deleted.has(id)) return; // deleted before it got here (our own: its pending copy goes too)
    place(room, id, text, author, time, user);
    if (mine) room.shown.get(id).li.classList.add('mine');
    if (author) stopTyping(room, author);
    const last = id === room.ids[room.ids.length - 1];
    if (viewing) {
      if (follow || mine) scrollToBottom();
      else if (last) {
        room.unseenBelow += 1;
        renderJump();
      }
      markRead(room);
      renderHistoryTop();
      renderEmpty();
    } else if (room.scroll && last) {
      room.unseenBelow += 1;
    }
    if (document.hidden && !mine) {
      unread += 1;
      renderRoomHead();
    }
    renderRoomsSoon();
  }

  socket.on('chat message', onChatMessage);

  // ---- sending messages -----------------------------------------------------------------
  // Messages typed here wait in `pending` (shown in their room's outbox) until the server
  // confirms them. One at a time is handed to socket.io (which holds it while offline and
  // re-sends it, with the same clientOffset, on reconnect or ackTimeout), so a "rate limited"
  // answer holds the rest back instead of having them refused too, and the order typed is
  // the order stored.

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
      const next = pending.slice(pending.indexOf(p) + 1).find((q) => q.li && q.room === p.room);
      if (next) p.room.outbox.insertBefore(p.li, next.li);
      else p.room.outbox.appendChild(p.li);
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
    const meta = { room: next.room.name };
    if (next.author) meta.author = next.author;
    socket.emit('chat message', next.content, next.key, meta, (err, res) => onAck(next, err, res));
  }

  /**
   * Our own message comes back as `chat message` (before its ack): take the pending copy off
   * the page so the text is never shown twice. Matched on room, content and author, oldest first.
   */
  function adopt(room, content, author) {
    const p = pending.find((q) => q.room === room && q.sent && q.state !== 'failed' && !q.seen && q.content === content && q.author === author);
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
    const { room } = p;
    if (err) {
      // socket.io gave up (no answer after its retries); if it came back, it was stored
      if (p.seen) settle(p);
      else fail(p, 'the server did not answer.');
    } else if (res && Number.isSafeInteger(res.id)) {
      if (inRoom(room) && !room.shown.has(res.id) && !p.seen && (room.floor === null || res.id >= room.floor)) {
        // stored, but its broadcast did not reach this page: show it in its place. (An id
        // older than what is loaded is in the history above and is shown when loaded.)
        place(room, res.id, p.content, p.author, Date.now(), me ? me.user : null);
      }
      const m = room.shown.get(res.id);
      if (m) m.li.classList.add('mine');
      if (m && me && m.user === null && !moderationOff) {
        // signed in, yet the server delivered this very message (its id) as anonymous: it
        // verifies no sign-in (--auth off), so it has no moderation either
        moderationOff = true;
        renderModeration();
      }
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
    if (!inRoom(view)) {
      notice(view ? `You are not in #${view.name}.` : 'Join a room to send messages.', 'gap');
      return;
    }
    input.value = '';
    view.draft = '';
    stopOwnTyping();
    // unique per message, stable across retries; never built from socket.id
    const p = { key: `${clientId}-${counter++}`, room: view, content, author: nickname || null, state: 'queued' };
    pending.push(p);
    renderPending(p);
    pump();
    scrollToBottom();
    renderStatus();
    renderEmpty();
  });

  // ---- older history --------------------------------------------------------------------

  /** Loads the page of `room`'s history below its floor; `done` is called when it is in. */
  function loadOlder(room, done) {
    const finish = () => done && done();
    if (!room || room.state !== 'joined' || room.loading || room.beginning || room.floor === null || !socket.connected) return finish();
    room.loading = true;
    room.historyFailed = '';
    if (room === view) renderHistoryTop();
    const before = room.floor;
    socket.emit('history', { room: room.name, before, limit: PAGE }, (err, res) => {
      room.loading = false;
      if (rooms.get(room.name) !== room || room.state !== 'joined' || room.floor !== before) {
        // left, or the page started over meanwhile
        if (room === view) renderHistoryTop();
        return finish();
      }
      if (!err && res && Number.isFinite(res.retryAfterMs)) {
        // rate limited: try again after the wait
        setTimeout(() => {
          if (room === view) scheduleFill();
        }, Math.min(Math.max(res.retryAfterMs, 50), 60000));
        if (room === view) renderHistoryTop();
        return finish();
      }
      if (err || !res || !Array.isArray(res.messages)) {
        room.historyFailed = `Could not load older messages${res && res.error ? `: ${res.error}` : ''}.`;
        if (room === view) renderHistoryTop();
        return finish();
      }
      // keep what is on screen where it is while older messages go in above it
      const viewing = room === view;
      const fromBottom = scroller.scrollHeight - scroller.scrollTop;
      let lowest = before;
      for (const m of res.messages) {
        if (!m || !Number.isSafeInteger(m.id) || m.id <= 0 || m.id >= before || typeof m.content !== 'string') continue;
        const { author, time, user } = parseMeta(m);
        place(room, m.id, m.content, author, time, user);
        lowest = Math.min(lowest, m.id);
      }
      if (viewing) scroller.scrollTop = scroller.scrollHeight - fromBottom;
      room.floor = lowest;
      if (!res.hasMore || lowest === before || lowest <= 1) room.beginning = true;
      if (viewing) {
        renderHistoryTop();
        renderEmpty();
        scheduleFill();
      }
      renderRoomsSoon();
      return finish();
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
      if (scroller.scrollHeight <= scroller.clientHeight + NEAR_TOP_PX || scroller.scrollTop < NEAR_TOP_PX) loadOlder(view);
    }, 150);
  }

  /** After the first replay: a page of each other room, for its unread count and a quick switch. */
  let prefetched = false;
  function prefetch() {
    if (prefetched) return;
    prefetched = true;
    const queue = listed().filter((r) => r !== view && r.ids.length < PAGE);
    const next = () => {
      const room = queue.shift();
      if (room) loadOlder(room, next);
    };
    next();
  }

  scroller.addEventListener('scroll', () => {
    // Not during the replay either: its own scrolling to the bottom, when the messages first
    // fill the page, fires a scroll event near the top (a reader who scrolled up meanwhile is
    // served by `sync`'s fill, which checks the same place).
    pinned = atBottom();
    if (replayOver && scroller.scrollTop < NEAR_TOP_PX) loadOlder(view);
    if (view && view.unseenBelow && atBottom()) {
      view.unseenBelow = 0;
      renderJump();
    }
  });
  olderButton.addEventListener('click', () => loadOlder(view));
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
    strays.clear();
    renderStatus();
    renderPeople();
  });

  socket.on('disconnect', (reason) => {
    // the client reconnects by itself unless we or the server ended the session
    connection = socket.active ? 'reconnecting' : 'offline';
    if (reason === 'io server disconnect') {
      refusal = signInExpired ? 'your sign-in expired: open the chat again from your application' : 'disconnected by the server';
    }
    clearTyping();
    renderStatus();
    renderPeople();
  });

  socket.io.on('reconnect_attempt', (n) => {
    attempt = n;
    if (connection !== 'offline') connection = 'reconnecting';
    renderStatus();
  });

  let roomsRefused = false;
  socket.on('connect_error', (err) => {
    const message = (err && err.message) || '';
    if (!socket.active && /^invalid rooms/.test(message) && auth.rooms && auth.rooms.length && !roomsRefused) {
      // The rooms this browser remembers are refused (a limit lowered since): connect without
      // them, to the default room; they stay in the list, not joined, with the reason.
      roomsRefused = true;
      for (const name of auth.rooms) {
        const room = rooms.get(name);
        if (room) {
          room.state = 'failed';
          room.error = message;
        }
      }
      delete auth.rooms;
      expectingDefault = true;
      renderRooms();
      renderEmpty();
      socket.connect(); // a new session (socket.io-client closed the refused one)
      return;
    }
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

  // `sync ({ epoch, from, to, complete })`: the replay is over. The epoch names the database;
  // the page sends it back when reconnecting, so an offset is never applied to another database.
  // From here on the page has every message of its rooms from `from` on.
  let epoch = null;
  socket.on('sync', (sync) => {
    if (!sync || typeof sync !== 'object') return;
    const e = typeof sync.epoch === 'string' && sync.epoch ? sync.epoch : null;
    if (e && epoch && e !== epoch) return startOver(e);
    if (e) {
      epoch = e;
      auth.epoch = e;
      const saved = savedRooms();
      if (saved.epoch !== e) {
        // read marks of another database mean nothing here
        if (saved.epoch) for (const room of rooms.values()) room.lastRead = null;
        updateSaved((s) => {
          if (s.epoch && s.epoch !== e) s.read = {};
          s.epoch = e;
        });
      }
    }
    if (sync.complete === false) {
      notice('Some messages are no longer available on the server.', 'gap');
    }
    // Rooms this page asked for and may not be in (private, or a ban): listed, not joined,
    // with the reason, rather than silently gone. The browser still remembers them, so a
    // reload asks again (an invitation may have come); "Close" forgets one.
    const refused = Array.isArray(sync.refused) ? sync.refused.filter(isRoomName) : [];
    for (const name of refused) {
      const room = rooms.get(name);
      if (!room || room.state === 'leaving') continue;
      room.state = 'failed';
      room.error = 'not allowed (a private room you are not a member of, or a ban)';
      room.why = '';
    }
    if (refused.length) auth.rooms = joinedNames();
    const from = Number.isSafeInteger(sync.from) && sync.from > 0 ? sync.from : null;
    const to = Number.isSafeInteger(sync.to) && sync.to >= 0 ? sync.to : null;
    for (const room of rooms.values()) {
      if (room.state !== 'joined') continue;
      if (room.floor === null && from !== null) {
        room.floor = from;
        if (from <= 1) room.beginning = true;
      }
      // a first visit: what was said before counts as read
      if (room.lastRead === null && to !== null) room.lastRead = to;
    }
    // the page has every message of its rooms up to `to`: reconnect from there, and replay
    // all that is missed then (`latest` would hide a gap), even if nothing came this time
    if (to !== null && to > newestId) newestId = to;
    auth.serverOffset = newestId;
    delete auth.latest;
    synced = true;
    replayOver = true;
    markRead(view);
    renderHistoryTop();
    renderEmpty();
    renderRooms();
    scheduleFill();
    prefetch();
    if (me) loadPrivateFlags();
  });

  /** The server now has another database: what is on screen belongs to the old one. */
  function startOver(newEpoch) {
    epoch = newEpoch;
    auth.epoch = newEpoch;
    updateSaved((s) => {
      s.epoch = newEpoch;
      s.read = {};
    });
    for (const room of rooms.values()) {
      for (const [, m] of room.shown) m.li.remove();
      room.ids.length = 0;
      room.shown.clear();
      room.deleted.clear();
      room.floor = null;
      room.beginning = false;
      room.historyFailed = '';
      room.lastRead = null;
      room.scroll = null;
      room.unseenBelow = 0;
    }
    newestId = 0;
    auth.serverOffset = 0;
    auth.latest = LATEST;
    synced = false;
    prefetched = false;
    notice('The chat was reset on the server.', 'gap');
    renderHistoryTop();
    renderEmpty();
    renderRooms();
    // reconnect: the server replays the latest messages of the new database
    socket.disconnect();
    connection = 'connecting';
    socket.connect();
    renderStatus();
  }

  // ---- nickname -------------------------------------------------------------------------

  function renderNick() {
    nickButton.textContent = nickname || 'Choose a name';
    nickButton.setAttribute(
      'aria-label',
      me ? `Signed in as ${nickname} (${me.user})` : nickname ? `Your name: ${nickname}. Change it` : 'Choose a name',
    );
    nickButton.title = me ? `Signed in as ${me.user}: the name comes from your sign-in` : '';
    nickButton.classList.toggle('signed-in', !!me);
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
    // show the new name in the online lists at once (the server's next presence confirms it)
    if (socket.connected) {
      for (const room of rooms.values()) {
        if (!room.presence) continue;
        const users = room.presence.users.filter((u) => u !== nickname && u !== name);
        users.push(name);
        room.presence = { count: room.presence.count, users: users.sort() };
      }
    }
    nickname = name;
    storage.set(NICK_KEY, name);
    auth.nickname = name;
    renderNick();
    for (const room of rooms.values()) for (const [, m] of room.shown) m.li.classList.toggle('mine', isMine(m.author));
    renderPeople();
    renderRooms();
  }

  nickButton.addEventListener('click', () => {
    if (me) return notice(`Signed in as ${me.user}: your name comes from your sign-in`, 'renamed');
    if (nickForm.hidden) openNickForm();
    else closeNickForm();
  });
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

  // ---- presence (of the room in view) ---------------------------------------------------

  function renderPeople() {
    const presence = view && view.presence;
    peopleRoom.textContent = view ? `in #${view.name}` : '';
    if (!presence) {
      onlineCount.textContent = '–';
      peopleCount.textContent = '–';
      peopleButton.setAttribute('aria-label', 'Who is online');
      peopleList.replaceChildren();
      peopleNote.textContent = '';
      return;
    }
    const { count, users } = presence;
    // while disconnected the list is only what it was: say so
    sidebar.classList.toggle('stale', !socket.connected && everConnected);
    onlineCount.textContent = String(count);
    peopleCount.textContent = String(count);
    peopleButton.setAttribute('aria-label', `${count} online in #${view.name}: show who`);
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
  function cameAndWent(names, more, verb, kind) {
    const others = names.filter((n) => n !== nickname);
    if (others.length === 0 && more === 0) return;
    const shown = others.slice(0, 2);
    const rest = others.length - shown.length + more;
    const people = (n) => `${n} ${n === 1 ? 'person' : 'people'} without a name`;
    const who =
      shown.length === 0 ? people(rest) : rest > 0 ? `${shown.join(', ')} and ${rest} other${rest === 1 ? '' : 's'}` : shown.join(' and ');
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
    const room = roomOf(p.room);
    if (!room) return;
    const names = (v) => (Array.isArray(v) ? v.filter((u) => typeof u === 'string' && u) : []);
    const users = names(p.users);
    const count = Number.isSafeInteger(p.count) && p.count >= 0 ? p.count : users.length;
    // News is measured against the list this page already showed on this connection: one
    // presence tick can name someone who came a moment before this page did (already in the
    // snapshot it got on entering), and the first list after a connect is no news at all.
    const before = room.presence && room.presenceConnect === connects ? room.presence.users : null;
    room.presence = { count, users };
    room.presenceConnect = connects;
    for (const name of room.typing.keys()) if (!users.includes(name)) stopTyping(room, name);
    for (const name of names(p.left)) stopTyping(room, name);
    if (room !== view) return;
    if (before && Date.now() >= quietUntil) {
      const joined = names(p.joined);
      const left = names(p.left);
      // beyond the names listed, how many came or went without a name
      const unnamed = (n, list) => (Number.isSafeInteger(n) && n >= list.length ? n - list.length : 0);
      cameAndWent(joined.filter((n) => !before.includes(n)), unnamed(p.joinedCount, joined), 'joined', 'joined');
      cameAndWent(left.filter((n) => before.includes(n)), unnamed(p.leftCount, left), 'left', 'left');
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
    if (from) for (const room of rooms.values()) stopTyping(room, from);
    // sent once to everyone who shares a room with them: told only where they are in view
    const here = view && view.presence ? view.presence.users : [];
    const wasHere = from && here.includes(from);
    // the lists follow the new name at once (the next presence confirms it), so that news
    // about them ("Robert left") is measured against who they are now
    if (from && to) {
      for (const room of rooms.values()) {
        if (!room.presence || !room.presence.users.includes(from)) continue;
        const users = room.presence.users.filter((u) => u !== from && u !== to);
        users.push(to);
        room.presence = { count: room.presence.count, users: users.sort() };
      }
      renderPeople();
    }
    if (from && !wasHere) return;
    if (from && to) notice(`${from} is now ${to}`, 'renamed');
    else if (to) notice(`${to} joined`, 'joined');
    else if (from) notice(`${from} left`, 'left');
  });

  // ---- panels (phones): who is online, the rooms ---------------------------------------

  function setPanel(name, open) {
    const button = name === 'people' ? peopleButton : roomsButton;
    document.body.classList.toggle(`${name}-open`, open);
    button.setAttribute('aria-expanded', String(open));
    if (open) setPanel(name === 'people' ? 'rooms' : 'people', false);
  }
  const panelOpen = (name) => document.body.classList.contains(`${name}-open`);

  peopleButton.addEventListener('click', () => setPanel('people', !panelOpen('people')));
  roomsButton.addEventListener('click', () => {
    const open = !panelOpen('rooms');
    setPanel('rooms', open);
    if (open) {
      const current = roomsList.querySelector('[aria-current="page"]') || joinButton;
      current.focus();
    }
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !joinForm.hidden && joinForm.contains(document.activeElement)) {
      closeJoinForm();
      joinButton.focus();
    } else if (e.key === 'Escape' && !createForm.hidden && createForm.contains(document.activeElement)) {
      closeCreateForm();
      createButton.focus();
    } else if (e.key === 'Escape' && !manageForm.hidden && manageForm.contains(document.activeElement)) {
      closeManageForm();
      manageButton.focus();
    } else if (e.key === 'Escape' && openMenu) {
      closeMenu(true);
    } else if (e.key === 'Escape' && panelOpen('people')) {
      setPanel('people', false);
      peopleButton.focus();
    } else if (e.key === 'Escape' && panelOpen('rooms')) {
      setPanel('rooms', false);
      roomsButton.focus();
    } else if (e.altKey && !e.ctrlKey && !e.metaKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
      // Alt+↑ / Alt+↓: the previous / next room, as in other chat apps
      const list = listed();
      if (list.length < 2) return;
      e.preventDefault();
      const i = list.indexOf(view);
      const next = list[(i + (e.key === 'ArrowUp' ? list.length - 1 : 1)) % list.length];
      showRoom(next, { push: true });
      input.focus();
    }
  });

  // ---- the list of rooms, joining, leaving ---------------------------------------------

  roomsList.addEventListener('click', (e) => {
    const a = e.target.closest('a.room-link');
    if (!a || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const room = rooms.get(a.dataset.room);
    if (!room) return;
    e.preventDefault(); // no jump to an element that happens to share the room's name
    showRoom(room, { push: true });
    setPanel('rooms', false);
    input.focus();
  });

  function openJoinForm() {
    closeCreateForm();
    joinForm.hidden = false;
    joinButton.setAttribute('aria-expanded', 'true');
    joinInput.value = '';
    joinError.textContent = '';
    joinInput.focus();
    loadDirectory();
  }

  function closeJoinForm() {
    joinForm.hidden = true;
    joinButton.setAttribute('aria-expanded', 'false');
    joinError.textContent = '';
  }

  /** The rooms that exist and the page is not in, from the server's directory. */
  function loadDirectory() {
    directoryList.replaceChildren();
    directoryTitle.hidden = true;
    if (!socket.connected) return;
    socket.emit('rooms', (err, res) => {
      if (err || !res || !Array.isArray(res.rooms) || joinForm.hidden) return;
      directoryList.replaceChildren();
      learnPrivate(res.rooms);
      const others = res.rooms.filter((r) => r && isRoomName(r.name) && !inRoom(rooms.get(r.name)));
      directoryTitle.hidden = others.length === 0;
      for (const r of others.slice(0, 50)) {
        const li = directoryList.appendChild(el('li'));
        const b = li.appendChild(el('button', 'directory-room'));
        b.type = 'button';
        b.dataset.room = r.name;
        if (r.private === true) b.dataset.private = 'true';
        b.appendChild(el('span', 'room-hash', '#')).setAttribute('aria-hidden', 'true');
        b.appendChild(el('span', 'room-name', r.name));
        if (r.private === true) b.appendChild(privateLabel());
        const members = Number.isSafeInteger(r.members) ? r.members : 0;
        b.appendChild(el('span', 'directory-members', `${members} online`));
      }
    });
  }

  joinButton.addEventListener('click', () => (joinForm.hidden ? openJoinForm() : closeJoinForm()));

  joinForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const name = joinInput.value.trim().replace(/^#/, '');
    const problem = roomProblem(name);
    if (problem) {
      joinError.textContent = problem;
      joinInput.focus();
      return;
    }
    closeJoinForm();
    joinRoom(name);
    setPanel('rooms', false);
    input.focus();
  });

  directoryList.addEventListener('click', (e) => {
    const b = e.target.closest('button.directory-room');
    if (!b || !isRoomName(b.dataset.room)) return;
    closeJoinForm();
    const room = joinRoom(b.dataset.room);
    if (b.dataset.private === 'true' && !room.private) {
      room.private = true;
      renderRooms();
      renderRoomHead();
    }
    setPanel('rooms', false);
    input.focus();
  });

  leaveButton.addEventListener('click', () => {
    if (!view) return;
    leaveRoom(view);
    (view ? input : joinButton).focus();
  });
  roomRetry.addEventListener('click', () => {
    if (view && view.state === 'failed') retryJoin(view);
  });
  roomClose.addEventListener('click', () => {
    if (view && view.state === 'failed') closeRoom(view);
    input.focus();
  });

  // ---- moderation (signed in, --auth optional|required) ----------------------------------
  // The page does not know its roles in a room (the server does not list them), so it offers
  // the actions to anyone signed in and shows the server's answer: "not allowed" is news to
  // the user, not something to hide. With --auth off the server refuses every request with
  // one error: then the controls go away for good.

  const MODERATION_OFF = /^not allowed: moderation needs/;
  let moderationOff = false;
  const canModerate = () => !!me && !moderationOff;

  /** Shows or hides the moderation controls (the per-message menus follow a class on body). */
  function renderModeration() {
    const can = canModerate();
    document.body.classList.toggle('can-moderate', can);
    createButton.hidden = !can;
    if (!can && !createForm.hidden) closeCreateForm();
    manageButton.hidden = !(can && view && inRoom(view));
    manageButton.setAttribute('aria-label', view ? `Manage #${view.name}` : 'Manage');
    if (manageButton.hidden && !manageForm.hidden) closeManageForm();
    if (!can) closeMenu(false);
  }

  /**
   * Sends a moderation request; `done(error, reply)` with error null on `{ ok: true }`, else
   * the server's words (or why there was no answer). Not started while offline: an action
   * taken now should not happen minutes later on a reconnect.
   */
  function request(event, args, done) {
    if (!socket.connected) return void done('not connected right now.');
    socket.emit(event, args, (err, res) => {
      if (err) return done('the server did not answer.');
      if (res && res.ok === true) return done(null, res);
      const error = res && typeof res.error === 'string' ? res.error : 'unexpected answer from the server.';
      if (MODERATION_OFF.test(error)) {
        moderationOff = true;
        renderModeration();
      }
      done(error, res);
    });
  }

  /** Private flags from a directory answer, for the rooms the page has. */
  function learnPrivate(list) {
    let changed = false;
    for (const r of list) {
      const room = r && isRoomName(r.name) ? rooms.get(r.name) : null;
      if (room && room.private !== (r.private === true)) {
        room.private = r.private === true;
        changed = true;
      }
    }
    if (changed) {
      renderRooms();
      renderRoomHead();
    }
  }

  /** After a connect: which of the page's rooms are private (the directory says; once per connection). */
  function loadPrivateFlags() {
    socket.emit('rooms', (err, res) => {
      if (!err && res && Array.isArray(res.rooms)) learnPrivate(res.rooms);
    });
  }

  // Each message's menu: a "⋯" button (in every message while signed in) opening a row of
  // actions under its text. Own messages: Delete. Others': Delete, Mute, Kick, Ban (the last
  // three need the sender's user id: anonymous messages only offer Delete).

  let openMenu = null; // { li, menu, button, room, id }

  function addTools(li, author, user) {
    li.classList.add('has-tools');
    const tools = li.appendChild(el('div', 'msg-tools'));
    const button = tools.appendChild(el('button', 'msg-menu-btn', '⋯'));
    button.type = 'button';
    button.tabIndex = -1; // one stop for Tab in the whole log: see keepRoving
    button.setAttribute('aria-expanded', 'false');
    const own = !!me && user === me.user;
    button.setAttribute('aria-label', own ? 'Actions for your message' : `Actions for the message by ${author || user || 'anonymous'}`);
  }

  /** What the menu of message `m` offers: [event, label, what it is called in an error]. */
  function menuActions(m) {
    const own = !!me && !!m.user && m.user === me.user;
    const who = m.author || m.user;
    const actions = [['delete message', 'Delete', 'delete the message']];
    if (!own && m.user) {
      actions.push(['mute', `Mute ${who}`, `mute ${who}`], ['kick', `Kick ${who}`, `kick ${who}`], ['ban', `Ban ${who}`, `ban ${who}`]);
    }
    return actions;
  }

  // A "roving" tab stop: of all the menu buttons of a room, one is in the Tab order (the
  // newest message's, unless the reader moved to another); ↑/↓, Home and End move between
  // them. Tab through a long conversation is then one stop, not one per message.

  /** The message li whose menu button is the room's tab stop, if it is still in the room. */
  const roving = (room) => (room.roving && room.roving.parentNode === room.list ? room.roving : null);

  /**
   * Makes `li`'s menu button the tab stop (or the nearest one above it). Unless `force`d, a
   * focused tab stop stays: a message arriving does not move it away from the reader.
   */
  function keepRoving(room, li, force = false) {
    let target = li;
    while (target && !target.classList.contains('has-tools')) target = target.previousElementSibling;
    const old = roving(room);
    if (old === target || (!force && old && old.contains(document.activeElement))) return;
    const button = room.roving && room.roving.querySelector('.msg-menu-btn');
    if (button) button.tabIndex = -1;
    room.roving = target || null;
    if (target) target.querySelector('.msg-menu-btn').tabIndex = 0;
  }

  function closeMenu(refocus) {
    if (!openMenu) return;
    const { menu, button } = openMenu;
    openMenu = null;
    menu.remove();
    button.setAttribute('aria-expanded', 'false');
    if (refocus && button.isConnected) button.focus();
  }

  function toggleMenu(button) {
    const li = button.closest('li.msg');
    const wasOpen = openMenu && openMenu.button === button;
    closeMenu(false);
    if (wasOpen || !li || !view || !canModerate()) return;
    const id = Number(li.dataset.id);
    const m = view.shown.get(id);
    if (!m || m.system) return;
    const menu = li.querySelector('.msg-body').appendChild(el('div', 'msg-menu'));
    menu.setAttribute('role', 'group');
    menu.setAttribute('aria-label', button.getAttribute('aria-label'));
    for (const [event, label, what] of menuActions(m)) {
      const b = menu.appendChild(el('button', `btn btn-small${event === 'delete message' ? '' : ' btn-quiet'}`, label));
      b.type = 'button';
      b.dataset.action = event;
      b.dataset.what = what;
    }
    button.setAttribute('aria-expanded', 'true');
    openMenu = { li, menu, button, room: view, id };
    menu.firstElementChild.focus();
  }

  function menuAction(b) {
    if (!openMenu || !openMenu.menu.contains(b)) return;
    const { room, id, menu } = openMenu;
    const m = room.shown.get(id);
    if (!m) return closeMenu(false);
    const event = b.dataset.action;
    const what = b.dataset.what;
    for (const x of menu.querySelectorAll('button')) x.disabled = true;
    const args = event === 'delete message' ? { room: room.name, id } : { room: room.name, user: m.user };
    request(event, args, (error) => {
      const still = openMenu && openMenu.menu === menu;
      if (error) {
        if (still) closeMenu(true);
        notice(`Could not ${what}: ${error}`, 'gap');
        return;
      }
      if (event === 'delete message') {
        // its `message deleted` is on its way to every member; this page need not wait
        forget(room, id, me && me.user);
      } else if (still) {
        closeMenu(true);
      }
    });
  }

  scroller.addEventListener('focusin', (e) => {
    const li = view && e.target.classList.contains('msg-menu-btn') ? e.target.closest('li') : null;
    if (li) keepRoving(view, li, true);
  });
  scroller.addEventListener('keydown', (e) => {
    if (!view || !e.target.classList.contains('msg-menu-btn') || e.altKey || e.ctrlKey || e.metaKey) return;
    const all = [...view.list.querySelectorAll(':scope > li.has-tools')];
    const at = all.indexOf(e.target.closest('li'));
    const to = { ArrowUp: at - 1, ArrowDown: at + 1, Home: 0, End: all.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault(); // not a scroll: the focused message comes into view by itself
    const li = all[Math.max(0, Math.min(all.length - 1, to))];
    if (!li) return;
    keepRoving(view, li, true);
    li.querySelector('.msg-menu-btn').focus();
  });
  scroller.addEventListener('click', (e) => {
    const button = e.target.closest('.msg-menu-btn');
    if (button) return void toggleMenu(button);
    const action = e.target.closest('button');
    if (action && action.closest('.msg-menu')) menuAction(action);
  });
  document.addEventListener('click', (e) => {
    if (openMenu && !openMenu.li.contains(e.target)) closeMenu(false);
  });

  /** Message `id` of `room` was deleted (by `by`): off the page, and never shown again. */
  function forget(room, id, by) {
    room.deleted.add(id);
    const m = room.shown.get(id);
    if (!m || m.system) return;
    const hadFocus = m.li.contains(document.activeElement);
    if (openMenu && openMenu.li === m.li) closeMenu(false);
    const mine = !!me && m.user === me.user;
    unplace(room, id);
    if (room === view) {
      if (hadFocus) input.focus();
      renderHistoryTop();
      renderEmpty();
      if (mine && by && by !== me.user && replayOver) notice(`${by} deleted your message`, 'gap');
    }
    renderRoomsSoon();
  }

  // `message deleted ({ room, id, by, offset })`: live, or replayed after a reconnect.
  socket.on('message deleted', (d) => {
    if (!d || typeof d !== 'object' || !Number.isSafeInteger(d.id) || d.id <= 0) return;
    if (Number.isSafeInteger(d.offset) && d.offset > 0) advance(d.offset);
    const room = rooms.get(typeof d.room === 'string' ? d.room : defaultName);
    if (room) forget(room, d.id, typeof d.by === 'string' ? d.by : null);
  });

  /** The system line of a `room changed` notice: "alice muted bob", "You invited carol". */
  function changeText(c) {
    const who = (u) => (typeof u === 'string' && u ? (me && u === me.user ? 'you' : u) : 'someone');
    const by = typeof c.by === 'string' && c.by ? who(c.by) : 'the server';
    const user = who(c.user);
    let text;
    switch (c.action) {
      case 'create': {
        const flags = [c.private === true ? 'private' : '', c.readOnly === true ? 'read-only' : ''].filter(Boolean);
        text = `${by} created #${c.room}${flags.length ? ` (${flags.join(', ')})` : ''}`;
        break;
      }
      case 'role':
        text = `${by} made ${user} ${c.role === 'moderator' ? 'a moderator' : c.role === 'member' ? 'a member' : `“${String(c.role)}”`}`;
        break;
      case 'invite':
        text = `${by} invited ${user}`;
        break;
      case 'kick':
        text = `${by} removed ${user} from the room`;
        break;
      case 'ban':
        text = `${by} banned ${user} from the room`;
        break;
      case 'unban':
        text = `${by} lifted the ban on ${user}`;
        break;
      case 'mute':
        text = `${by} muted ${user}`;
        break;
      case 'unmute':
        text = `${by} unmuted ${user}`;
        break;
      default:
        text = `${by} changed who may do what here (${String(c.action)})`;
    }
    // "You …", "The server …"; a user id keeps its case
    return by === 'you' || by === 'the server' ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  // `room changed ({ room, action, user, by, offset, role?, private?, readOnly? })`.
  socket.on('room changed', (c) => {
    if (!c || typeof c !== 'object' || !isRoomName(c.room) || typeof c.action !== 'string') return;
    const offset = Number.isSafeInteger(c.offset) && c.offset > 0 ? c.offset : null;
    const aboutMe = !!me && c.user === me.user;
    const removed = aboutMe && (c.action === 'kick' || c.action === 'ban');
    // Our own removal may come straight from the server as the socket leaves the room, out
    // of the log's order: its offset is no place to resume from.
    if (offset !== null && !removed) advance(offset);
    const room = rooms.get(c.room);
    if (!room || room.state === 'leaving') return;
    if (c.action === 'create') {
      if (typeof c.private === 'boolean') room.private = c.private;
      if (typeof c.readOnly === 'boolean') room.readOnly = c.readOnly;
      renderRooms();
      if (room === view) renderRoomHead();
    }
    if (offset !== null && !(room.floor !== null && offset < room.floor && !room.beginning)) {
      const follow = room === view && atBottom();
      placeSystem(room, offset, changeText(c));
      if (follow) scrollToBottom();
      if (room === view) renderEmpty();
    }
    // Before `sync` this is the replay: old news (the server let this connection in, after it).
    if (removed && replayOver && inRoom(room)) removedFrom(room, c);
  });

  /** The server took this page out of `room` (kick or ban): not joined, and says so. */
  function removedFrom(room, c) {
    const by = typeof c.by === 'string' && c.by ? ` by ${c.by}` : '';
    const banned = c.action === 'ban';
    room.state = 'failed';
    room.error = banned ? 'banned from this room' : 'removed from the room';
    room.why = `You were ${banned ? 'banned' : 'removed'} from #${room.name}${by}.`;
    if (typingRoom === room) stopOwnTyping();
    for (const t of room.typing.values()) clearTimeout(t);
    room.typing.clear();
    room.presence = null;
    rememberJoined(room.name, false);
    notice(room.why, 'gap');
    renderEmpty();
    renderRooms();
    renderRoomHead();
    if (room === view) {
      renderPeople();
      renderTyping();
    }
  }

  // Creating a room: the form under "+ New".

  function openCreateForm() {
    closeJoinForm();
    createForm.hidden = false;
    createButton.setAttribute('aria-expanded', 'true');
    createInput.value = '';
    createPrivate.checked = false;
    createReadOnly.checked = false;
    createError.textContent = '';
    createInput.focus();
  }

  function closeCreateForm() {
    createForm.hidden = true;
    createButton.setAttribute('aria-expanded', 'false');
    createError.textContent = '';
  }

  createButton.addEventListener('click', () => (createForm.hidden ? openCreateForm() : closeCreateForm()));

  let creating = false;
  createForm.addEventListener('submit', (e) => {
    e.preventDefault();
    if (creating) return;
    const name = createInput.value.trim().replace(/^#/, '');
    const problem = roomProblem(name);
    if (problem) {
      createError.textContent = problem;
      createInput.focus();
      return;
    }
    const wanted = { room: name, private: createPrivate.checked, readOnly: createReadOnly.checked };
    // In the list (joining…) while the server answers: the server joins us before its ack,
    // and the room's first events must find the room here, not be taken for strays.
    const previous = rooms.get(name);
    const fresh = !inRoom(previous);
    const room = fresh ? makeRoom(name, 'joining') : previous;
    if (fresh) {
      rooms.set(name, room);
      renderRooms();
    }
    creating = true;
    createError.textContent = '';
    request('create room', wanted, (error, res) => {
      creating = false;
      if (error || !res || res.room !== name) {
        if (fresh && rooms.get(name) === room) {
          if (previous) rooms.set(name, previous);
          else rooms.delete(name);
          renderRooms();
        }
        createError.textContent = `Could not create #${name}: ${error || 'unexpected answer from the server.'}`;
        if (!createForm.hidden) createInput.focus();
        return;
      }
      if (rooms.get(name) !== room) return; // forgotten meanwhile
      const last = Number.isSafeInteger(res.last) && res.last >= 0 ? res.last : 0;
      room.state = 'joined';
      room.floor = last + 1;
      room.beginning = room.floor <= 1;
      room.private = wanted.private;
      room.readOnly = wanted.readOnly;
      if (room.lastRead === null) room.lastRead = last;
      rememberJoined(name, true);
      closeCreateForm();
      showRoom(room, { push: true });
      setPanel('rooms', false);
      renderRooms();
      renderRoomHead();
      renderEmpty();
      input.focus();
    });
  });

  // Managing the room in view: invite (private rooms), mute, kick, ban and their undoing,
  // roles; by user id (the `sub` of their sign-in). It reaches those who have no message in
  // view (someone to invite, someone banned); a message's own menu acts on its sender.

  function renderManageForm() {
    if (!view) return;
    manageRoom.textContent = view.name;
    inviteButton.hidden = !view.private;
    inviteButton.disabled = !view.private; // Enter in the field invites only where that means something
  }

  function openManageForm() {
    manageForm.hidden = false;
    manageButton.setAttribute('aria-expanded', 'true');
    manageResult.textContent = '';
    manageResult.classList.remove('error');
    renderManageForm();
    manageUser.focus();
  }

  function closeManageForm() {
    if (manageForm.hidden) return;
    manageForm.hidden = true;
    manageButton.setAttribute('aria-expanded', 'false');
  }

  manageButton.addEventListener('click', () => (manageForm.hidden ? openManageForm() : closeManageForm()));
  manageClose.addEventListener('click', () => {
    closeManageForm();
    manageButton.focus();
  });

  /** action → [event, extra arguments, what it did (for "Done"), what it is (for "Could not")]. */
  const MANAGE = {
    invite: ['invite', {}, (u, r) => `Invited ${u} to #${r}: they may join it now.`, (u) => `invite ${u}`],
    mute: ['mute', {}, (u, r) => `${u} is muted in #${r}.`, (u) => `mute ${u}`],
    unmute: ['unmute', {}, (u, r) => `${u} may post in #${r} again.`, (u) => `unmute ${u}`],
    kick: ['kick', {}, (u, r) => `${u} was removed from #${r}.`, (u) => `kick ${u}`],
    ban: ['ban', {}, (u, r) => `${u} is banned from #${r}.`, (u) => `ban ${u}`],
    unban: ['unban', {}, (u, r) => `${u} is no longer banned from #${r}.`, (u) => `unban ${u}`],
    moderator: ['set role', { role: 'moderator' }, (u, r) => `${u} is a moderator of #${r}.`, (u) => `make ${u} a moderator`],
    member: ['set role', { role: 'member' }, (u, r) => `${u} is a member of #${r}.`, (u) => `make ${u} a member`],
  };

  function manage(action) {
    const spec = MANAGE[action];
    const room = view;
    if (!spec || !room) return;
    const user = manageUser.value.trim();
    manageResult.classList.remove('error');
    if (!user) {
      manageResult.textContent = 'Please enter a user id.';
      manageResult.classList.add('error');
      manageUser.focus();
      return;
    }
    const [event, extra, done, what] = spec;
    manageResult.textContent = 'Sending…';
    request(event, { room: room.name, user, ...extra }, (error) => {
      if (manageForm.hidden || view !== room) return;
      manageResult.textContent = error ? `Could not ${what(user)}: ${error}` : done(user, room.name);
      manageResult.classList.toggle('error', !!error);
    });
  }

  manageForm.addEventListener('submit', (e) => {
    e.preventDefault();
    if (view && view.private) manage('invite');
  });
  manageForm.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (b && b.type === 'button') manage(b.dataset.action);
  });

  // ---- the room in the URL -------------------------------------------------------------

  function hashRoom() {
    const h = location.hash.slice(1);
    if (!h) return null;
    try {
      return decodeURIComponent(h);
    } catch {
      return h;
    }
  }

  /**
   * Shows (joining if need be) the room the URL names. False if it names none, or not a valid
   * name: then the room in view stays (and goes back in the URL), and a notice says why.
   */
  function openHashRoom(name = hashRoom()) {
    if (name === null) return false;
    const problem = roomProblem(name);
    if (problem) {
      setHash(view && view.name, false);
      notice(`The link names no room: ${problem}`, 'gap');
      return false;
    }
    const room = rooms.get(name);
    if (room && room.state !== 'leaving') showRoom(room);
    else joinRoom(name, { push: false });
    return true;
  }

  /** The room to show first: the URL's, else the last one shown, else the first in the list. */
  function openFirstRoom() {
    if (expectingDefault) return; // until the server says which room is the default
    const name = hashRoom();
    if (name !== null && !roomProblem(name)) return void openHashRoom(name);
    const saved = savedRooms().view;
    showRoom((isRoomName(saved) && rooms.get(saved)) || listed()[0] || null);
    if (name !== null) openHashRoom(name); // a bad name: says so, once a room is in view
  }

  globalThis.addEventListener('hashchange', () => {
    // A new token (`#token=…`: the application signed a fresh one) replaces the old one for
    // this connection (`refresh token`) and for the reconnects after it.
    if (takeToken()) {
      const fresh = session.get();
      const who = tokenIdentity(fresh);
      if (me && who && who.user === me.user) {
        token = fresh;
        auth.token = fresh;
        if (socket.connected) {
          socket.emit('refresh token', fresh, (err, reply) => {
            if (!err && reply && reply.ok) notice('Sign-in renewed', 'joined');
            else notice(`The new sign-in was refused: ${(reply && reply.error) || 'no answer'}`, 'gap');
          });
        }
      } else {
        // another user, or none before: a new connection as that user
        globalThis.location.reload();
        return;
      }
    }
    if (!expectingDefault) openHashRoom();
  });

  let signInExpired = false; // the server said so just before it disconnected us
  socket.on('token expired', () => {
    signInExpired = true;
  });
  socket.on('token expiring', (t) => {
    const grace = t && Number.isSafeInteger(t.graceMs) ? Math.round(t.graceMs / 1000) : 0;
    notice(`Your sign-in has expired: messages are refused${grace ? ` and you will be disconnected in ${grace} s` : ''} unless it is renewed`, 'gap');
  });


  // ---- typing (in the room in view) -----------------------------------------------------

  function renderTyping() {
    const names = view ? [...view.typing.keys()] : [];
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

  function stopTyping(room, name) {
    if (!room.typing.has(name)) return;
    clearTimeout(room.typing.get(name));
    room.typing.delete(name);
    if (room === view) renderTyping();
  }

  function clearTyping() {
    for (const room of rooms.values()) {
      for (const t of room.typing.values()) clearTimeout(t);
      room.typing.clear();
    }
    renderTyping();
  }

  socket.on('typing', (t) => {
    if (!t || typeof t.nickname !== 'string' || !t.nickname || t.nickname === nickname) return;
    const room = rooms.get(typeof t.room === 'string' ? t.room : defaultName);
    if (!inRoom(room)) return;
    if (t.typing) {
      clearTimeout(room.typing.get(t.nickname));
      room.typing.set(t.nickname, setTimeout(() => stopTyping(room, t.nickname), TYPING_EXPIRE_MS));
      if (room === view) renderTyping();
    } else {
      stopTyping(room, t.nickname);
    }
  });

  // Our own typing: announce it (at most every TYPING_REFRESH_MS), and say when we stop.
  // `volatile`: never queued or retried like messages; dropping one is harmless.
  let typingRoom = null; // the room we said we are typing in
  let lastTypingSent = 0;
  let typingIdle = null;

  function sendTyping(room, value) {
    if (!nickname || !socket.connected || !room) return;
    socket.volatile.emit('typing', { room: room.name, typing: value });
  }

  function stopOwnTyping() {
    clearTimeout(typingIdle);
    if (!typingRoom) return;
    const room = typingRoom;
    typingRoom = null;
    sendTyping(room, false);
  }

  input.addEventListener('input', () => {
    if (view) view.draft = input.value;
    if (!input.value || !view || view.state !== 'joined') return stopOwnTyping();
    const now = Date.now();
    if (typingRoom !== view || now - lastTypingSent >= TYPING_REFRESH_MS) {
      if (typingRoom !== view) stopOwnTyping();
      typingRoom = view;
      lastTypingSent = now;
      sendTyping(view, true);
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
      renderRoomHead();
      markRead(view);
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
  renderRooms();
  openFirstRoom();
  renderRoomHead();
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
