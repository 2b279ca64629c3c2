// OUR EXTENSION of the Socket.IO v4 tutorial chat server: rooms.
//
// This is NOT the official tutorial. It is the tutorial's server (a faithful copy of it is in
// ../shared/reference/node-tutorial, step #8 "client delivery") grown the way the tutorial's
// own building blocks would grow it to rooms, so that tidings' rooms can be measured against a
// peer (issue 28, bench/README and BENCHMARKS.md):
//   * Socket.IO rooms: `socket.join(room)` / `socket.leave(room)`, `io.to(room).emit(...)`;
//   * SQLite with a `room` column (and an index on (room, id), as anyone would add);
//   * the tutorial's replay query, per room: `SELECT ... WHERE id > ? AND room IN (...)`.
// It speaks tidings' shapes for what the bench uses (README "Rooms", issue 28 "Protocol"):
//   connect   auth: { serverOffset, rooms: ['general', 'dev'] }   (missing: ['general'])
//   join      (room, ack)  -> { room, last }           leave (room, ack) -> { ok: true }
//   send      chat message (content, clientOffset, { author, room }, ack)
//             -> ack() as in the tutorial, or { error } when not in the room
//   deliver   chat message (content, id, { author, time, room })   (to the room only)
//   history   ({ room, before, limit }, ack) -> { messages, hasMore }
//   rooms     (ack) -> { rooms: [{ name, members, last }] }
// Like the tutorial it keeps its weaknesses on purpose (one synced INSERT per message, replay
// and live interleaving, in-memory recovery). Every line that is not the tutorial's is in this
// file; the tutorial's lines are kept where they still apply.
const express = require('express');
const { createServer } = require('node:http');
const { Server } = require('socket.io');
const sqlite3 = require('sqlite3');
const { open } = require('sqlite');

// EXTENSION: room names as tidings accepts them; the default room.
const ROOM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const DEFAULT_ROOM = 'general';

function checkRoom(room) {
  if (typeof room !== 'string' || !ROOM_NAME.test(room)) {
    return 'invalid room name: 1-64 characters from a-z, 0-9, -, _, starting with a letter or digit';
  }
  return null;
}

async function main() {
  // open the database file
  const db = await open({
    filename: process.env.DB || 'chat.db',
    driver: sqlite3.Database
  });

  // create our 'messages' table; EXTENSION: a room per message (and its author and time), the
  // client offset unique per room, an index for the per-room queries.
  await db.exec(`
    CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_offset TEXT,
        content TEXT,
        room TEXT NOT NULL DEFAULT '${DEFAULT_ROOM}',
        author TEXT,
        time INTEGER,
        UNIQUE (room, client_offset)
    );
    CREATE INDEX IF NOT EXISTS messages_room_id ON messages (room, id);
  `);

  const app = express();
  const server = createServer(app);
  const io = new Server(server, {
    connectionStateRecovery: {}
  });

  app.get('/', (req, res) => {
    res.type('text/plain').send('tidings bench: the tutorial server extended with rooms\n');
  });

  // EXTENSION: auth.rooms must be a list of valid names (a connect_error otherwise).
  io.use((socket, next) => {
    const rooms = socket.handshake.auth.rooms;
    if (rooms === undefined || rooms === null) {
      return next();
    }
    if (!Array.isArray(rooms)) {
      return next(new Error('invalid rooms: expected a list of room names'));
    }
    for (const room of rooms) {
      const error = checkRoom(room);
      if (error) {
        return next(new Error(`invalid rooms: ${error}`));
      }
    }
    next();
  });

  // EXTENSION: the rooms a socket is in, without the room socket.io names after the socket.
  const roomsOf = (socket) => [...socket.rooms].filter((room) => room !== socket.id);

  io.on('connection', async (socket) => {
    // EXTENSION: join the rooms the client asked for (the default room when it named none).
    const asked = socket.handshake.auth.rooms;
    const rooms = Array.isArray(asked) ? [...new Set(asked)] : [DEFAULT_ROOM];
    if (!socket.recovered) {
      socket.join(rooms);
    }

    // EXTENSION: (content, clientOffset, { author, room }, ack); the tutorial's
    // (content, clientOffset, ack) and step-7's (content) still work (the default room).
    socket.on('chat message', async (msg, ...rest) => {
      const callback = typeof rest[rest.length - 1] === 'function' ? rest.pop() : undefined;
      const ack = callback || (() => {});
      const clientOffset = rest[0];
      const meta = rest[1] && typeof rest[1] === 'object' ? rest[1] : {};
      const room = meta.room === undefined || meta.room === null ? DEFAULT_ROOM : meta.room;
      const error = checkRoom(room);
      if (error) {
        return ack({ error });
      }
      if (!socket.rooms.has(room)) {
        return ack({ error: `not in room ${room}: join it first` });
      }
      const author = typeof meta.author === 'string' ? meta.author : null;
      const time = Date.now();
      let result;
      try {
        // store the message in the database
        result = await db.run(
          'INSERT INTO messages (content, client_offset, room, author, time) VALUES (?, ?, ?, ?, ?)',
          msg, clientOffset, room, author, time
        );
      } catch (e) {
        if (e.errno === 19 /* SQLITE_CONSTRAINT */ ) {
          // the message was already inserted, so we notify the client
          ack();
        } else {
          // nothing to do, just let the client retry
        }
        return;
      }
      // include the offset with the message; EXTENSION: to the room's members only
      io.to(room).emit('chat message', msg, result.lastID, { author, time, room });
      // acknowledge the event
      ack();
    });

    // EXTENSION: join (room, ack) -> { room, last }.
    socket.on('join', async (room, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      const error = checkRoom(room);
      if (error) {
        return reply({ error });
      }
      socket.join(room);
      const row = await db.get('SELECT MAX(id) AS last FROM messages WHERE room = ?', room);
      reply({ room, last: (row && row.last) || 0 });
    });

    // EXTENSION: leave (room, ack) -> { ok: true }.
    socket.on('leave', (room, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      const error = checkRoom(room);
      if (error) {
        return reply({ error });
      }
      socket.leave(room);
      reply({ ok: true });
    });

    // EXTENSION: history ({ room, before, limit }, ack) -> { messages, hasMore }.
    socket.on('history', async (query, ack) => {
      const reply = typeof ack === 'function' ? ack : () => {};
      const q = query && typeof query === 'object' ? query : {};
      const room = q.room === undefined || q.room === null ? DEFAULT_ROOM : q.room;
      const error = checkRoom(room);
      if (error) {
        return reply({ error });
      }
      const before = Number.isSafeInteger(q.before) ? q.before : Number.MAX_SAFE_INTEGER;
      const limit = Number.isSafeInteger(q.limit) ? Math.min(Math.max(q.limit, 1), 200) : 50;
      const rows = await db.all(
        'SELECT id, content, author, time, room FROM messages WHERE room = ? AND id < ? ORDER BY id DESC LIMIT ?',
        room, before, limit + 1
      );
      const hasMore = rows.length > limit;
      reply({ messages: rows.slice(0, limit).reverse(), hasMore });
    });

    // EXTENSION: rooms (ack) -> { rooms: [{ name, members, last }] }, 200 by name after `after`.
    socket.on('rooms', async (...args) => {
      const reply = typeof args[args.length - 1] === 'function' ? args.pop() : () => {};
      const after = args[0] && typeof args[0].after === 'string' ? args[0].after : '';
      const listed = new Map();
      for (const row of await db.all('SELECT room, MAX(id) AS last FROM messages GROUP BY room')) {
        listed.set(row.room, { name: row.room, members: 0, last: row.last });
      }
      for (const [name, members] of io.of('/').adapter.rooms) {
        if (io.of('/').sockets.has(name)) {
          continue; // the room socket.io makes for each socket
        }
        const entry = listed.get(name) || { name, members: 0, last: 0 };
        entry.members = members.size;
        listed.set(name, entry);
      }
      const rooms = [...listed.values()]
        .filter((r) => r.name > after)
        .sort((a, b) => (a.name < b.name ? -1 : 1))
        .slice(0, 200);
      reply({ rooms });
    });

    if (!socket.recovered) {
      // if the connection state recovery was not successful
      // EXTENSION: the tutorial's replay query, for the socket's rooms, in id order.
      const joined = roomsOf(socket);
      if (joined.length > 0) {
        try {
          await db.each(
            `SELECT id, content, author, time, room FROM messages WHERE id > ? AND room IN (${joined.map(() => '?').join(', ')}) ORDER BY id`,
            [socket.handshake.auth.serverOffset || 0, ...joined],
            (_err, row) => {
              socket.emit('chat message', row.content, row.id, { author: row.author, time: row.time, room: row.room });
            }
          )
        } catch (e) {
          // something went wrong
        }
      }
    }
  });

  const port = process.env.PORT || 3000;

  server.listen(port, () => {
    console.log(`server running at http://localhost:${port}`);
  });
}

main();
