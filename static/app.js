// tidings chat page: the Socket.IO tutorial's step-8 client, fixed.
// Served as /app.js (no inline script, so a `script-src 'self'` CSP works).
'use strict';

(() => {
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

  const clientId = randomId();
  let counter = 0;
  let lastId = 0; // highest message id rendered so far

  const socket = io({
    auth: { serverOffset: 0 },
    // enable retries: the client adds an ack and re-sends until the server acks
    ackTimeout: 10000,
    retries: 3,
  });

  const form = document.getElementById('form');
  const input = document.getElementById('input');
  const messages = document.getElementById('messages');
  const toggleButton = document.getElementById('toggle-btn');

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.value) {
      // unique per message, stable across the client's retries
      const clientOffset = `${clientId}-${counter++}`;
      socket.emit('chat message', input.value, clientOffset);
      input.value = '';
    }
  });

  toggleButton.addEventListener('click', (e) => {
    e.preventDefault();
    if (socket.connected) {
      toggleButton.textContent = 'Connect';
      socket.disconnect();
    } else {
      toggleButton.textContent = 'Disconnect';
      socket.connect();
    }
  });

  socket.on('chat message', (msg, serverOffset) => {
    // ids increase strictly: skip replays and duplicates of what is on screen
    if (!Number.isSafeInteger(serverOffset) || serverOffset <= lastId) return;
    lastId = serverOffset;
    socket.auth.serverOffset = serverOffset;
    const item = document.createElement('li');
    item.textContent = String(msg);
    messages.appendChild(item);
    window.scrollTo(0, document.body.scrollHeight);
  });
})();
