// What the page knows: rooms, conversations, the view, and the commands in flight.
// ChatState.receive(line) applies one server line; it returns effects for the page
// to carry out (answer a PING, notify, show a reply). No DOM here.

import { commandOf, firstArgument, fold, isFinal, modeText, parseLine } from "./protocol.js";
import { mentions } from "./format.js";

// A room or conversation keeps at most this many items (older ones are dropped).
export const KEEP = 1000;
// /history asks for this many more messages each time the reader scrolls up.
export const HISTORY_STEP = 50;
export const HISTORY_MAX = 500;

let nextId = 1;

function item(kind, fields) {
  return { id: nextId++, kind, ...fields };
}

function byName(a, b) {
  return fold(a).localeCompare(fold(b));
}

export class ChatState {
  constructor(now = () => Date.now()) {
    this.now = now;
    this.server = "chatd";
    this.me = null;
    this.rooms = new Map();
    this.conversations = new Map();
    this.view = null;
    // Commands sent and not yet answered, oldest first: final replies come in order.
    this.pending = [];
    this.allRooms = [];
    // Set by the page: whether the reader is looking (the tab is visible).
    this.attentive = true;
  }

  // --- what the page sends -------------------------------------------------

  /** Remember a line sent to the server, to match its final reply. */
  sent(line, purpose = {}) {
    const command = commandOf(line);
    const entry = { line, command, argument: firstArgument(line), ...purpose };
    if (command === "history" || command === "rooms") entry.collected = [];
    this.pending.push(entry);
    return entry;
  }

  /** The connection closed: nothing in flight will be answered. */
  disconnected() {
    this.pending = [];
  }

  // --- rooms and conversations ------------------------------------------------

  room(name) {
    let room = this.rooms.get(fold(name));
    if (!room) {
      room = {
        name,
        members: [],
        ops: new Set(),
        topic: "",
        topicSetter: "",
        items: [],
        unread: 0,
        mentioned: false,
        historyWanted: HISTORY_STEP,
        pastCount: 0,
        olderAvailable: true,
      };
      this.rooms.set(fold(name), room);
    }
    return room;
  }

  conversation(peer) {
    let conversation = this.conversations.get(fold(peer));
    if (!conversation) {
      conversation = {
        peer,
        items: [],
        unread: 0,
        // Its history is asked for (/history <peer>) when it is first shown.
        historyAsked: false,
        historyWanted: HISTORY_STEP,
        pastCount: 0,
        olderAvailable: true,
      };
      this.conversations.set(fold(peer), conversation);
    }
    return conversation;
  }

  /** The rooms and the conversations, sorted by name, for the lists. */
  roomList() {
    return [...this.rooms.values()].sort((a, b) => byName(a.name, b.name));
  }

  conversationList() {
    return [...this.conversations.values()].sort((a, b) => byName(a.peer, b.peer));
  }

  /** The room or conversation shown now, or null. */
  shown() {
    if (!this.view) return null;
    return this.view.type === "room"
      ? this.rooms.get(fold(this.view.name)) || null
      : this.conversations.get(fold(this.view.name)) || null;
  }

  /** Show a room or conversation; what it had unread is read now. */
  show(type, name) {
    const target = type === "room" ? this.room(name) : this.conversation(name);
    this.view = { type, name: type === "room" ? target.name : target.peer };
    this.markRead();
  }

  markRead() {
    const target = this.shown();
    if (target && this.attentive) {
      target.unread = 0;
      target.mentioned = false;
    }
  }

  isShown(type, name) {
    return !!this.view && this.view.type === type && fold(this.view.name) === fold(name);
  }

  totalUnread() {
    let total = 0;
    for (const room of this.rooms.values()) total += room.unread;
    for (const conversation of this.conversations.values()) total += conversation.unread;
    return total;
  }

  /** Whether ``name`` is this user (while logging in, the name being logged in). */
  isMe(name) {
    const running = this.running();
    const me = this.me || (running && running.command === "login" ? running.name : null);
    return !!me && fold(name) === fold(me);
  }

  /** Whether scrolling up can show more: the room (or conversation) had as much
   * history as was asked for. */
  hasOlder(room) {
    return room.olderAvailable && room.pastCount >= room.historyWanted;
  }

  isOperator(roomName, user) {
    const room = this.rooms.get(fold(roomName));
    return !!room && room.ops.has(fold(user));
  }

  // --- what the server sends ------------------------------------------------------

  /** Apply one server line; return the effects the page must carry out. */
  receive(line) {
    const event = parseLine(line);
    const effects = [];
    const handler = HANDLERS[event.kind];
    if (handler) handler.call(this, event, effects);
    if (isFinal(event)) {
      const command = this.pending.shift() || null;
      const finish = command && FINISH[command.command];
      if (finish && event.kind === "OK") finish.call(this, command, event, effects);
      effects.push({ type: "reply", command, event });
      if (event.kind === "ERR") this.notice(`${event.code}: ${event.text}`, "error");
    }
    return effects;
  }

  /** The command the next final reply answers (lines it causes come before that reply). */
  running() {
    return this.pending[0] || null;
  }

  add(target, entry) {
    target.items.push(entry);
    if (target.items.length > KEEP) target.items.splice(0, target.items.length - KEEP);
    return entry;
  }

  /** A line for the reader in the view shown (an error, INFO, an invitation). */
  notice(text, tone = "info", extra = {}) {
    const target = this.shown();
    const entry = item("notice", { text, tone, time: this.now(), ...extra });
    if (target) this.add(target, entry);
    else this.orphanNotices = [...(this.orphanNotices || []), entry];
    return entry;
  }

  unseen(target) {
    const type = target.peer !== undefined ? "dm" : "room";
    const name = type === "dm" ? target.peer : target.name;
    return !this.attentive || !this.isShown(type, name);
  }

  leaveRoom(name) {
    this.rooms.delete(fold(name));
    if (this.view && this.view.type === "room" && fold(this.view.name) === fold(name)) {
      const next = this.roomList()[0];
      this.view = next ? { type: "room", name: next.name } : null;
    }
  }
}

// One entry per line kind: what the line does to the state. A new kind of line
// is one entry here (and its fields in protocol.js's LINE_KINDS).
const HANDLERS = {
  HELLO(event) {
    this.server = event.server;
  },
  PING(event, effects) {
    effects.push({ type: "send", line: `/pong ${event.token}` });
  },
  BYE(event, effects) {
    effects.push({ type: "bye", reason: event.reason });
  },
  INFO(event) {
    this.notice(event.text);
  },
  JOIN(event) {
    const room = this.room(event.room);
    if (this.isMe(event.user)) {
      // Our own join: the server sends WHO and the latest history next.
      room.items = [];
      room.historyWanted = HISTORY_STEP;
      room.pastCount = 0;
      room.olderAvailable = true;
      room.stale = false;
      return;
    }
    if (!room.members.some((name) => fold(name) === fold(event.user))) {
      room.members = [...room.members, event.user].sort(byName);
    }
    this.add(room, item("event", { what: "join", user: event.user, time: this.now() }));
  },
  PART(event) {
    if (this.isMe(event.user)) {
      this.leaveRoom(event.room);
      return;
    }
    const room = this.rooms.get(fold(event.room));
    if (!room) return;
    room.members = room.members.filter((name) => fold(name) !== fold(event.user));
    this.add(room, item("event", { what: "part", user: event.user, time: this.now() }));
  },
  WHO(event) {
    this.room(event.room).members = [...event.members].sort(byName);
  },
  ROOM(event) {
    const running = this.running();
    if (running && running.command === "rooms") {
      running.collected.push({ name: event.room, count: Number(event.count) });
    }
  },
  MSG(event, effects) {
    roomMessage.call(this, "message", event, effects);
  },
  ACTION(event, effects) {
    roomMessage.call(this, "action", event, effects);
  },
  HISTORY(event) {
    pastMessage.call(this, "message", event);
  },
  HISTORYACTION(event) {
    pastMessage.call(this, "action", event);
  },
  HISTORYDM(event) {
    const peer = this.isMe(event.sender) ? event.recipient : event.sender;
    const fields = { sender: event.sender, text: event.text, time: event.time, past: true };
    const running = this.running();
    if (running && running.command === "history" && fold(running.argument) === fold(peer)) {
      running.collected.push(item("message", fields));
      return;
    }
    const conversation = this.conversation(peer);
    conversation.pastCount += 1;
    this.add(conversation, item("message", fields));
  },
  AWAY(event) {
    this.notice(`${event.user} is away: ${event.text}`);
  },
  WHOIS(event) {
    const online = event.status === "online";
    const when = event.seen === null ? "never logged in" : new Date(event.seen).toLocaleString();
    const status = online ? `online since ${when}` : `offline, last seen ${when}`;
    const rooms = event.rooms.length ? `; rooms you share: ${event.rooms.join(" ")}` : "";
    this.notice(`${event.user}: ${event.seen === null ? "never logged in" : status}${rooms}`);
  },
  DM(event, effects) {
    const own = this.isMe(event.sender);
    const conversation = this.conversation(own ? event.recipient : event.sender);
    this.add(
      conversation,
      item("message", { sender: event.sender, text: event.text, time: this.now() }),
    );
    if (own) return;
    if (this.unseen(conversation)) conversation.unread += 1;
    effects.push({ type: "notify", title: `${event.sender} (direct)`, body: event.text });
  },
  STORED(event, effects) {
    const conversation = this.conversation(event.sender);
    this.add(
      conversation,
      item("message", { sender: event.sender, text: event.text, time: event.time, stored: true }),
    );
    conversation.unread += 1;
    effects.push({ type: "notify", title: `${event.sender} (while you were away)`, body: event.text });
  },
  TOPIC(event) {
    const room = this.room(event.room);
    const changed = room.topic !== event.text || room.topicSetter !== event.setter;
    room.topic = event.text;
    room.topicSetter = event.setter;
    const running = this.running();
    const joining = running && ["join", "login"].includes(running.command);
    if (changed && !joining) {
      this.add(room, item("event", { what: "topic", user: event.setter, text: event.text, time: this.now() }));
    }
  },
  OPS(event) {
    this.room(event.room).ops = new Set(event.names.map(fold));
  },
  MODE(event) {
    const room = this.rooms.get(fold(event.room));
    if (!room) return;
    this.add(room, item("event", { what: "mode", user: event.by, text: modeText(event), time: this.now() }));
  },
  KICK(event) {
    const room = this.rooms.get(fold(event.room));
    if (this.isMe(event.user)) {
      this.leaveRoom(event.room);
      this.notice(`${event.by} removed you from ${event.room}: ${event.reason}`, "error");
      return;
    }
    if (!room) return;
    room.members = room.members.filter((name) => fold(name) !== fold(event.user));
    this.add(room, item("event", { what: "kick", user: event.user, by: event.by, text: event.reason, time: this.now() }));
  },
  INVITE(event, effects) {
    this.notice(`${event.by} invites you to ${event.room}`, "invite", { room: event.room });
    effects.push({ type: "notify", title: `${event.by} invites you`, body: event.room });
  },
};

// A message or an action said in a room now.
function roomMessage(kind, event, effects) {
  const room = this.room(event.room);
  this.add(room, item(kind, { sender: event.sender, text: event.text, time: this.now() }));
  if (this.isMe(event.sender)) return;
  if (this.unseen(room)) room.unread += 1;
  if (mentions(event.text, this.me)) {
    if (this.unseen(room)) room.mentioned = true;
    effects.push({ type: "notify", title: `${event.sender} in ${room.name}`, body: event.text });
  }
}

// A message or an action from a room's history (at login, on join, or /history).
function pastMessage(kind, event) {
  const running = this.running();
  const fields = { sender: event.sender, text: event.text, time: event.time, past: true };
  if (running && running.command === "history" && fold(running.argument) === fold(event.room)) {
    running.collected.push(item(kind, fields));
    return;
  }
  const room = this.room(event.room);
  room.pastCount += 1;
  this.add(room, item(kind, fields));
}

// What an OK does for the command it answers, by command name.
const FINISH = {
  login(command, event) {
    this.me = event.text;
  },
  join(command, event) {
    if (command.show) this.show("room", event.text);
  },
  history(command) {
    // A room's, or (a user's name) a conversation's.
    const room = command.argument.startsWith("#")
      ? this.rooms.get(fold(command.argument))
      : this.conversation(command.argument);
    if (!room) return;
    // The answer is the latest N messages: it replaces what was shown from
    // history, and messages that came live since stay after it.
    const older = command.collected;
    const said = (entry) => `${entry.sender} ${entry.text}`;
    const tail = older.slice(-HISTORY_STEP).map(said);
    const recent = room.items.filter(
      (entry) => !entry.past && entry.id > (command.sentAfter || 0),
    );
    // A message said while the request ran may be in the answer already: shown
    // once, from the answer, which keeps its mark (a stored one's ✉).
    const answered = recent.filter((entry) => entry.sender !== undefined && tail.includes(said(entry)));
    const stored = new Set(answered.filter((entry) => entry.stored).map(said));
    for (const entry of older) if (stored.has(said(entry))) entry.stored = true;
    const live = recent.filter((entry) => !answered.includes(entry));
    room.pastCount = older.length;
    room.olderAvailable = room.historyWanted < HISTORY_MAX;
    room.items = [...older, ...live];
  },
  rooms(command) {
    this.allRooms = command.collected.sort((a, b) => byName(a.name, b.name));
  },
};

/** The id the next item will get: a /history request remembers it to keep later live lines. */
export function nextItemId() {
  return nextId;
}
