// The chat page: wires the connection, the state, the rendering and the controls.

import { Connection } from "./connection.js";
import { insecureOrigin, socketUrl, titleFor } from "./format.js";
import { Notifier } from "./notify.js";
import { isRoomName, isUserName, linesForInput } from "./protocol.js";
import {
  renderAllRooms,
  renderConversationList,
  renderMembers,
  renderMessages,
  renderRoomList,
} from "./render.js";
import { ChatState, HISTORY_MAX, HISTORY_STEP, nextItemId } from "./state.js";

const $ = (id) => document.getElementById(id);
const ui = {
  insecure: $("insecure"),
  status: $("status"),
  login: $("login"),
  loginForm: $("login-form"),
  loginName: $("login-name"),
  loginPassword: $("login-password"),
  loginError: $("login-error"),
  chat: $("chat"),
  viewName: $("view-name"),
  viewTopic: $("view-topic"),
  roomActions: $("room-actions"),
  meName: $("me-name"),
  connection: $("connection"),
  roomList: $("room-list"),
  allRooms: $("all-rooms"),
  dmList: $("dm-list"),
  messages: $("messages"),
  older: $("older-button"),
  inputForm: $("input-form"),
  input: $("input"),
  members: $("member-list"),
  memberCount: $("member-count"),
  notifyToggle: $("notify-toggle"),
  ask: $("ask"),
  askForm: $("ask-form"),
  askLabel: $("ask-label"),
  askInput: $("ask-input"),
};

ui.insecure.hidden = !insecureOrigin(location);

let state = new ChatState();
const notifier = new Notifier();
ui.notifyToggle.checked = notifier.enabled;
// Held in memory only, to log in again after a reconnection; never stored or put in a URL.
let credentials = null;
let loggedIn = false;
// Whatever must be sent once the socket opens (the first /register or /login).
let onOpen = null;

const connection = new Connection(socketUrl(location), {
  open() {
    setStatus(null);
    ui.connection.classList.add("online");
    // Tells the server this client answers PING, so a dead connection is noticed.
    send("/pong page");
    if (onOpen) {
      const run = onOpen;
      onOpen = null;
      run();
    } else if (credentials) {
      relogin();
    }
  },
  line(line) {
    for (const effect of state.receive(line)) handle(effect);
    scheduleRender();
  },
  closed({ willRetry, delay }) {
    ui.connection.classList.remove("online");
    state.disconnected();
    if (willRetry && credentials) {
      const seconds = Math.max(1, Math.round(delay / 1000));
      setStatus(`Disconnected. Reconnecting in ${seconds} s… (what you type is kept)`, true);
    } else if (!loggedIn) {
      ui.loginError.textContent = "Cannot reach the server.";
      connection.close();
    }
    scheduleRender();
  },
});

function send(line, purpose = {}) {
  if (!connection.send(line)) return false;
  state.sent(line, purpose);
  return true;
}

function setStatus(text, retry = false) {
  ui.status.hidden = !text;
  ui.status.replaceChildren();
  if (!text) return;
  ui.status.append(text);
  if (retry) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = "Retry now";
    button.addEventListener("click", () => connection.retryNow());
    ui.status.append(" ", button);
  }
}

// --- logging in -------------------------------------------------------------------

ui.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.loginName.value.trim();
  const password = ui.loginPassword.value;
  const register = event.submitter && event.submitter.value === "register";
  ui.loginError.textContent = "";
  if (!isUserName(name)) {
    ui.loginError.textContent = "A name starts with a letter: letters, digits, _ . - (up to 32).";
    return;
  }
  const start = () => {
    if (register) send(`/register ${name} ${password}`, { name, password });
    else send(`/login ${name} ${password}`, { name, password });
  };
  if (connection.open) start();
  else {
    onOpen = start;
    connection.connect();
  }
});

function relogin() {
  // Rooms the server does not put us back in are joined again after the login.
  for (const room of state.rooms.values()) room.stale = true;
  send(`/login ${credentials.name} ${credentials.password}`, { ...credentials, again: true });
}

function loggedInAs(command) {
  credentials = { name: command.name, password: command.password };
  ui.loginPassword.value = "";
  loggedIn = true;
  ui.login.hidden = true;
  ui.chat.hidden = false;
  ui.meName.textContent = state.me;
  if (command.again) {
    for (const room of [...state.rooms.values()]) {
      if (room.stale) send(`/join ${room.name}`);
    }
    // Last, so the room shown is the server's current room again.
    if (state.view && state.view.type === "room") send(`/join ${state.view.name}`);
  }
  if (!state.view || !state.shown()) state.show("room", "#lobby");
  if (state.orphanNotices) {
    for (const entry of state.orphanNotices) state.shown().items.push(entry);
    state.orphanNotices = null;
  }
  if (!command.again) ui.input.focus();
}

function loginFailed(command, event) {
  const text = event.code === "bad-credentials" ? "Wrong name or password." : event.text;
  if (command.again) {
    // The account is gone or banned: stop trying and show the login form again.
    connection.close();
    logout(text);
    return;
  }
  ui.loginError.textContent = text;
}

// --- what the server's lines ask of the page ------------------------------------------

// BYE reasons after which the page does not reconnect by itself.
const FINAL_BYES = new Set(["kicked", "banned", "account-deleted"]);

function handle(effect) {
  if (effect.type === "send") {
    connection.send(effect.line);
    state.sent(effect.line);
  } else if (effect.type === "notify") {
    notifier.show(effect.title, effect.body);
  } else if (effect.type === "bye") {
    if (FINAL_BYES.has(effect.reason)) {
      // The operator removed this session: coming straight back would undo that.
      logout(`The server ended your session (${effect.reason}).`);
    } else if (effect.reason !== "quit") {
      setStatus(`The server closed the connection (${effect.reason}).`);
    }
  } else if (effect.type === "reply") {
    reply(effect.command, effect.event);
  }
}

function reply(command, event) {
  if (!command) return;
  const ok = event.kind === "OK";
  if (command.command === "register") {
    if (ok) send(`/login ${command.name} ${command.password}`, { name: command.name, password: command.password });
    else ui.loginError.textContent = event.text;
  } else if (command.command === "login" && command.password !== undefined) {
    if (ok) loggedInAs(command);
    else loginFailed(command, event);
  } else if (command.command === "history" && ok) {
    renderNext.keepPosition = !!command.keepPosition;
  } else if (command.command === "rooms" && ok) {
    ui.allRooms.hidden = false;
  } else if (command.command === "join" && ok && command.show) {
    renderNext.toBottom = true;
    closePanels();
  }
}

// --- rendering --------------------------------------------------------------------

let renderScheduled = false;
let renderNext = {};
// A busy room sends many messages a second, each its own event: the page is
// drawn at most once per RENDER_MS, with everything that arrived meanwhile.
const RENDER_MS = 30;

function scheduleRender() {
  if (renderScheduled) return;
  renderScheduled = true;
  setTimeout(render, RENDER_MS);
}

function render() {
  renderScheduled = false;
  const options = renderNext;
  renderNext = {};
  state.markRead();
  const view = state.view;
  const target = state.shown();
  ui.viewName.textContent = view ? view.name : "";
  const room = view && view.type === "room" ? target : null;
  ui.viewTopic.textContent = room ? room.topic : view ? "direct messages" : "";
  ui.viewTopic.title = room && room.topicSetter ? `set by ${room.topicSetter}` : "";
  ui.roomActions.hidden = !room;
  ui.chat.classList.toggle("no-members", !room);
  ui.older.hidden = !target || !state.hasOlder(target);
  renderRoomList(ui.roomList, state, choose);
  renderConversationList(ui.dmList, state, choose);
  renderAllRooms(ui.allRooms, state, joinRoom);
  renderMembers(ui.members, ui.memberCount, state, memberActions);
  renderMessages(ui.messages, target, { me: state.me, join: joinRoom, ...options });
  document.title = titleFor(state.totalUnread(), view ? view.name : null, state.server);
}

function choose(type, name) {
  // The server's current room (where /me and plain text go) follows the room shown.
  if (type === "room" && !state.isShown("room", name)) send(`/join ${name}`);
  state.show(type, name);
  const conversation = type === "dm" ? state.shown() : null;
  if (conversation && !conversation.historyAsked) {
    // The conversation's past direct messages, once (older ones as the reader scrolls up).
    conversation.historyAsked = true;
    // What it shows already (stored messages, DMs of this session) stays, once.
    send(`/history ${conversation.peer} ${conversation.historyWanted}`, { sentAfter: 0 });
  }
  renderNext.toBottom = true;
  closePanels();
  scheduleRender();
  ui.input.focus();
}

// --- typing and sending --------------------------------------------------------------

ui.inputForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const lines = linesForInput(ui.input.value, state.view);
  if (lines.length === 0) return;
  if (!connection.open) {
    setStatus("Not connected: your text is kept and can be sent once the page reconnects.", true);
    return;
  }
  for (const line of lines) send(line, /^\/join /i.test(line) ? { show: true } : {});
  ui.input.value = "";
  renderNext.toBottom = true;
  scheduleRender();
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.inputForm.requestSubmit();
  }
});

// --- buttons -----------------------------------------------------------------------

function ask(label, value = "") {
  return new Promise((resolve) => {
    ui.askLabel.textContent = label;
    ui.askInput.value = value;
    const done = (answer) => {
      ui.ask.removeEventListener("close", onClose);
      resolve(answer);
    };
    const onClose = () => done(ui.ask.returnValue === "ok" ? ui.askInput.value.trim() : null);
    ui.ask.addEventListener("close", onClose);
    ui.ask.returnValue = "";
    ui.ask.showModal();
    ui.askInput.focus();
  });
}
$("ask-cancel").addEventListener("click", () => ui.ask.close("cancel"));

function currentRoom() {
  return state.view && state.view.type === "room" ? state.view.name : null;
}

function joinRoom(name) {
  const room = name.startsWith("#") ? name : `#${name}`;
  if (!isRoomName(room)) {
    state.notice(`${room} is not a room name: # then letters, digits, _ . - (up to 32)`, "error");
    scheduleRender();
    return;
  }
  send(`/join ${room}`, { show: true });
}

$("join-button").addEventListener("click", async () => {
  const name = await ask("Room to join or create");
  if (name) joinRoom(name);
});
$("browse-button").addEventListener("click", () => {
  if (!ui.allRooms.hidden) ui.allRooms.hidden = true;
  else send("/rooms");
});
$("dm-button").addEventListener("click", async () => {
  const name = await ask("Send a direct message to");
  if (name && isUserName(name)) choose("dm", name);
});
$("part-button").addEventListener("click", () => {
  const room = currentRoom();
  if (room) send(`/part ${room}`);
});
$("topic-button").addEventListener("click", async () => {
  const room = currentRoom();
  if (!room) return;
  const topic = await ask(`Topic of ${room}`, state.shown().topic);
  if (topic) send(`/topic ${room} ${topic}`);
});
$("invite-button").addEventListener("click", async () => {
  const room = currentRoom();
  const name = room && (await ask(`Invite to ${room}`));
  if (name) send(`/invite ${room} ${name}`);
});

const memberActions = {
  message: (user) => choose("dm", user),
  op: (user) => send(`/op ${currentRoom()} ${user}`),
  deop: (user) => send(`/deop ${currentRoom()} ${user}`),
  async kick(user) {
    const room = currentRoom();
    const reason = await ask(`Remove ${user} from ${room}; reason (optional)`);
    if (reason !== null) send(`/kick ${room} ${user}${reason ? ` ${reason}` : ""}`);
  },
};

function loadOlder() {
  // A room's older messages, or a conversation's (its name is the other's).
  const target = state.shown();
  if (!target || !state.hasOlder(target) || state.pending.some((c) => c.command === "history")) {
    return;
  }
  target.historyWanted = Math.min(HISTORY_MAX, target.historyWanted + HISTORY_STEP);
  const name = target.peer ?? target.name;
  send(`/history ${name} ${target.historyWanted}`, { sentAfter: nextItemId() - 1, keepPosition: true });
}
ui.older.addEventListener("click", loadOlder);
ui.messages.addEventListener("scroll", () => {
  if (ui.messages.scrollTop === 0) loadOlder();
});

ui.notifyToggle.addEventListener("change", async () => {
  ui.notifyToggle.checked = await notifier.set(ui.notifyToggle.checked);
});

function logout(reason = "") {
  if (connection.open) send("/quit");
  connection.close();
  credentials = null;
  loggedIn = false;
  state = new ChatState();
  ui.chat.hidden = true;
  ui.login.hidden = false;
  ui.loginError.textContent = reason;
  setStatus(null);
  document.title = "chatd";
}
$("logout-button").addEventListener("click", () => logout());

// Phone-sized screens: the lists and the members slide over the messages.
function closePanels() {
  document.body.classList.remove("show-sidebar", "show-members");
}
$("show-rooms").addEventListener("click", () => {
  document.body.classList.toggle("show-sidebar");
  document.body.classList.remove("show-members");
});
const phone = window.matchMedia("(max-width: 720px)");
$("show-members").addEventListener("click", () => {
  if (phone.matches) {
    document.body.classList.toggle("show-members");
    document.body.classList.remove("show-sidebar");
  } else {
    document.body.classList.toggle("hide-members");
  }
});

document.addEventListener("visibilitychange", () => {
  state.attentive = !document.hidden;
  scheduleRender();
});
state.attentive = !document.hidden;

// For the end-to-end tests and the curious: the state, read-only by convention.
window.chatd = { get state() { return state; }, connection };
