// Units for static/js/connection.js: one line per message, backoff and reconnection.
import assert from "node:assert/strict";
import test from "node:test";

import {
  Connection,
  MAX_DELAY_MS,
  SUBPROTOCOL,
  backoffDelay,
} from "../../chatd/frontends/web/static/js/connection.js";
import { Notifier } from "../../chatd/frontends/web/static/js/notify.js";

class FakeSocket {
  static made = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.made.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen();
  }
  send(data) {
    this.sent.push(data);
  }
  close() {
    this.readyState = 3;
    this.onclose({ code: 1000 });
  }
  drop() {
    this.readyState = 3;
    this.onclose({ code: 1006 });
  }
}

function harness() {
  FakeSocket.made = [];
  const timers = [];
  const events = [];
  const connection = new Connection(
    "ws://chat.test/ws",
    {
      open: () => events.push("open"),
      line: (line) => events.push(`line ${line}`),
      closed: (info) => events.push(info),
    },
    {
      WebSocket: FakeSocket,
      setTimeout: (run, delay) => timers.push({ run, delay }) && timers.length,
      clearTimeout: () => timers.splice(0),
      random: () => 0.5,
    },
  );
  return { connection, timers, events };
}

test("backoff doubles from one second up to thirty, half of it random", () => {
  assert.equal(backoffDelay(0, () => 0), 500);
  assert.equal(backoffDelay(0, () => 1), 1000);
  assert.equal(backoffDelay(3, () => 1), 8000);
  assert.equal(backoffDelay(20, () => 1), MAX_DELAY_MS);
  assert.equal(backoffDelay(20, () => 0), MAX_DELAY_MS / 2);
});

test("it asks for chatd.v1 and hands over each text message as a line", () => {
  const { connection, events } = harness();
  connection.connect();
  const socket = FakeSocket.made[0];
  assert.deepEqual(socket.protocols, [SUBPROTOCOL]);
  socket.open();
  socket.onmessage({ data: "HELLO chatd 1 hi" });
  socket.onmessage({ data: new ArrayBuffer(2) });
  assert.deepEqual(events, ["open", "line HELLO chatd 1 hi"]);
  assert.ok(connection.send("/ping x"));
  assert.deepEqual(socket.sent, ["/ping x"]);
});

test("nothing is sent while closed: the caller keeps the text", () => {
  const { connection } = harness();
  assert.equal(connection.send("/ping x"), false);
  connection.connect();
  assert.equal(connection.send("/ping x"), false);
});

test("an unexpected close retries with growing delays; an open resets them", () => {
  const { connection, timers, events } = harness();
  connection.connect();
  FakeSocket.made[0].open();
  FakeSocket.made[0].drop();
  assert.deepEqual(events.at(-1), { willRetry: true, delay: 750, code: 1006 });
  timers.shift().run();
  FakeSocket.made[1].drop();
  assert.equal(events.at(-1).delay, 1500);
  timers.shift().run();
  FakeSocket.made[2].open();
  FakeSocket.made[2].drop();
  assert.equal(events.at(-1).delay, 750);
  assert.equal(FakeSocket.made.length, 3);
});

test("close() stops for good; retryNow skips the wait", () => {
  const { connection, timers, events } = harness();
  connection.connect();
  FakeSocket.made[0].drop();
  connection.retryNow();
  assert.equal(FakeSocket.made.length, 2);
  assert.equal(timers.length, 0);
  connection.close();
  assert.deepEqual(events.at(-1), { willRetry: false, delay: null, code: 1000 });
  assert.equal(timers.length, 0);
});

test("notifications are opt-in, need permission, and stay quiet while the page is seen", async () => {
  const shown = [];
  const storage = new Map();
  class FakeNotification {
    static permission = "default";
    static async requestPermission() {
      FakeNotification.permission = "granted";
      return "granted";
    }
    constructor(title, options) {
      shown.push([title, options.body]);
    }
  }
  const win = {
    Notification: FakeNotification,
    document: { hidden: false },
    localStorage: { getItem: (k) => storage.get(k) ?? null, setItem: (k, v) => storage.set(k, v) },
    focus() {},
  };
  const notifier = new Notifier(win);
  assert.equal(notifier.enabled, false);
  notifier.show("bob", "hi");
  assert.equal(await notifier.set(true), true);
  notifier.show("bob", "seen");
  win.document.hidden = true;
  notifier.show("bob", "away");
  assert.deepEqual(shown, [["bob", "away"]]);
  assert.equal(storage.get("chatd.notifications"), "on");
  assert.equal(new Notifier(win).enabled, true);
  await notifier.set(false);
  assert.equal(new Notifier(win).enabled, false);
});
