// Units for static/js/state.js: what each server line does to the page's state.
import assert from "node:assert/strict";
import test from "node:test";

import { ChatState, KEEP } from "../../chatd/frontends/web/static/js/state.js";

function loggedIn(name = "alice", lines = []) {
  let clock = 1000;
  const state = new ChatState(() => (clock += 1000));
  state.sent(`/login ${name} password1`, { name, password: "password1" });
  for (const line of [`JOIN #lobby ${name}`, `WHO #lobby ${name}`, ...lines, `OK login ${name}`]) {
    state.receive(line);
  }
  state.show("room", "#lobby");
  return state;
}

function texts(target) {
  return target.items.map((entry) => entry.text ?? `${entry.what}:${entry.user}`);
}

test("logging in: the login's own JOIN is not shown as an event; me is set", () => {
  const state = loggedIn();
  assert.equal(state.me, "alice");
  assert.deepEqual(state.room("#lobby").members, ["alice"]);
  assert.deepEqual(texts(state.room("#lobby")), []);
  assert.equal(state.pending.length, 0);
});

test("others' joins and parts are events and change the members", () => {
  const state = loggedIn();
  state.receive("JOIN #lobby bob");
  assert.deepEqual(state.room("#lobby").members, ["alice", "bob"]);
  state.receive("PART #lobby bob");
  assert.deepEqual(state.room("#lobby").members, ["alice"]);
  assert.deepEqual(texts(state.room("#lobby")), ["join:bob", "part:bob"]);
});

test("history at login becomes past messages with their times", () => {
  const state = loggedIn("alice", ["HISTORY #lobby 2026-11-25T10:00:00.000Z bob earlier"]);
  const [entry] = state.room("#lobby").items;
  assert.equal(entry.past, true);
  assert.equal(entry.time, Date.UTC(2026, 10, 25, 10));
  assert.equal(entry.sender, "bob");
});

test("messages in rooms not shown count as unread; showing the room reads them", () => {
  const state = loggedIn();
  state.receive("JOIN #dev alice");
  state.receive("MSG #dev bob one");
  state.receive("MSG #dev bob two");
  state.receive("MSG #lobby bob seen");
  assert.equal(state.room("#dev").unread, 2);
  assert.equal(state.room("#lobby").unread, 0);
  assert.equal(state.totalUnread(), 2);
  state.show("room", "#dev");
  assert.equal(state.totalUnread(), 0);
});

test("while the tab is hidden even the room shown counts unread", () => {
  const state = loggedIn();
  state.attentive = false;
  state.receive("MSG #lobby bob hello");
  assert.equal(state.totalUnread(), 1);
  state.attentive = true;
  state.markRead();
  assert.equal(state.totalUnread(), 0);
});

test("own messages are never unread and never notify", () => {
  const state = loggedIn();
  state.attentive = false;
  assert.deepEqual(state.receive("MSG #lobby alice hi alice"), []);
  assert.equal(state.totalUnread(), 0);
});

test("a mention notifies and marks the room", () => {
  const state = loggedIn();
  state.receive("JOIN #dev alice");
  const effects = state.receive("MSG #dev bob alice: look");
  assert.deepEqual(effects, [{ type: "notify", title: "bob in #dev", body: "alice: look" }]);
  assert.equal(state.room("#dev").mentioned, true);
});

test("DMs are conversations with the other person, both directions", () => {
  const state = loggedIn();
  const effects = state.receive("DM bob alice psst");
  assert.equal(effects[0].type, "notify");
  state.receive("DM alice bob hi back");
  const conversation = state.conversation("bob");
  assert.deepEqual(texts(conversation), ["psst", "hi back"]);
  assert.equal(conversation.unread, 1);
  assert.deepEqual(state.conversationList().map((c) => c.peer), ["bob"]);
});

test("stored DMs at login are a conversation, with their times, unread", () => {
  const state = loggedIn("alice", ["STORED 2026-11-25T10:00:00.000Z bob while you were out"]);
  const conversation = state.conversation("bob");
  assert.equal(conversation.items[0].stored, true);
  assert.equal(conversation.items[0].time, Date.UTC(2026, 10, 25, 10));
  assert.equal(conversation.unread, 1);
});

test("replies match the commands in the order they were sent", () => {
  const state = loggedIn();
  state.sent("/ping a");
  state.sent("/join #x", { show: true });
  const first = state.receive("OK ping a");
  assert.equal(first[0].command.line, "/ping a");
  state.receive("JOIN #x alice");
  state.receive("WHO #x alice");
  const second = state.receive("OK join #x");
  assert.equal(second[0].command.line, "/join #x");
  assert.ok(state.isShown("room", "#x"));
});

test("an ERR is shown in the view as an error notice", () => {
  const state = loggedIn();
  state.sent("/join bad");
  state.receive("ERR invalid-name rooms start with #");
  const last = state.room("#lobby").items.at(-1);
  assert.equal(last.kind, "notice");
  assert.equal(last.tone, "error");
  assert.equal(last.text, "invalid-name: rooms start with #");
});

test("PING is answered with /pong", () => {
  const state = loggedIn();
  assert.deepEqual(state.receive("PING 1a2b"), [{ type: "send", line: "/pong 1a2b" }]);
});

test("parting takes the room away and shows another", () => {
  const state = loggedIn();
  state.receive("JOIN #dev alice");
  state.show("room", "#dev");
  state.receive("PART #dev alice");
  assert.ok(!state.rooms.has("#dev"));
  assert.ok(state.isShown("room", "#lobby"));
});

test("older history replaces the past and keeps later live messages once", () => {
  const state = loggedIn("alice", ["HISTORY #lobby 2026-11-25T10:00:00.000Z bob b1"]);
  const room = state.room("#lobby");
  const request = state.sent("/history #lobby 100", { sentAfter: 1e12 });
  request.sentAfter = room.items.at(-1).id;
  state.receive("HISTORY #lobby 2026-11-25T09:00:00.000Z carol c0");
  state.receive("MSG #lobby bob live");
  state.receive("HISTORY #lobby 2026-11-25T10:00:00.000Z bob b1");
  state.receive("HISTORY #lobby 2026-11-25T10:01:00.000Z bob live");
  state.receive("MSG #lobby bob after");
  state.receive("OK history #lobby");
  assert.deepEqual(texts(room), ["c0", "b1", "live", "after"]);
});

test("a room keeps at most KEEP items", () => {
  const state = loggedIn();
  for (let n = 0; n < KEEP + 5; n += 1) state.receive(`MSG #lobby bob ${n}`);
  const room = state.room("#lobby");
  assert.equal(room.items.length, KEEP);
  assert.equal(room.items[0].text, "5");
});

test("topics, operators, kicks and invitations from the extensions", () => {
  const state = loggedIn();
  state.receive("JOIN #dev alice");
  state.receive("TOPIC #dev carol release on friday");
  state.receive("OPS #dev Carol");
  const room = state.room("#dev");
  assert.equal(room.topic, "release on friday");
  assert.equal(room.topicSetter, "carol");
  assert.ok(state.isOperator("#dev", "carol"));
  assert.ok(!state.isOperator("#dev", "alice"));
  state.receive("JOIN #dev mallory");
  state.receive("KICK #dev mallory carol spam");
  assert.ok(!room.members.includes("mallory"));
  assert.deepEqual(texts(room).slice(-3), ["release on friday", "join:mallory", "spam"]);
  const effects = state.receive("INVITE #secret carol");
  assert.equal(effects[0].type, "notify");
  assert.equal(state.room("#lobby").items.at(-1).room, "#secret");
  state.receive("KICK #dev alice carol bye");
  assert.ok(!state.rooms.has("#dev"));
});

test("a room's mode change (MODE) is a system line in that room, naming who made it", () => {
  const state = loggedIn();
  state.receive("MODE #lobby carol moderated on");
  state.receive("MODE #lobby carol voice on bob");
  state.receive("MODE #lobby carol ban off mallory");
  state.receive("MODE #lobby carol topic-open off");
  state.receive("MODE #nowhere carol secret on");
  const room = state.room("#lobby");
  assert.deepEqual(texts(room), [
    "carol made the room moderated (operators and voiced members speak)",
    "carol gave bob voice",
    "carol lifted mallory's ban",
    "carol let only operators set the topic",
  ]);
  assert.equal(room.items[0].what, "mode");
  assert.equal(room.items[0].user, "carol");
  assert.ok(!state.rooms.has("#nowhere"));
});

test("a topic sent while joining is not announced as a change", () => {
  const state = loggedIn();
  state.sent("/join #dev");
  state.receive("JOIN #dev alice");
  state.receive("WHO #dev alice");
  state.receive("TOPIC #dev carol hello");
  state.receive("OK join #dev");
  assert.equal(state.room("#dev").topic, "hello");
  assert.deepEqual(texts(state.room("#dev")), []);
});

test("/rooms collects the ROOM lines", () => {
  const state = loggedIn();
  state.sent("/rooms");
  state.receive("ROOM #lobby 3");
  state.receive("ROOM #dev 1");
  state.receive("OK rooms");
  assert.deepEqual(state.allRooms, [{ name: "#dev", count: 1 }, { name: "#lobby", count: 3 }]);
});

test("an unknown line changes nothing and breaks nothing", () => {
  const state = loggedIn();
  assert.deepEqual(state.receive("SOMETHING new here"), []);
});

test("actions (/me) live and from history are their own kind, like messages", () => {
  const state = loggedIn("alice", ["HISTORYACTION #lobby 2026-11-25T10:00:00.000Z bob waved"]);
  const room = state.room("#lobby");
  assert.equal(room.items[0].kind, "action");
  assert.equal(room.items[0].past, true);
  state.receive("JOIN #dev alice");
  state.receive("ACTION #dev bob waves at alice");
  const dev = state.room("#dev");
  assert.equal(dev.items.at(-1).kind, "action");
  assert.equal(dev.unread, 1);
  assert.equal(dev.mentioned, true);
});

test("older history keeps actions in their place", () => {
  const state = loggedIn();
  state.sent("/history #lobby 100");
  state.receive("HISTORY #lobby 2026-11-25T09:00:00.000Z carol one");
  state.receive("HISTORYACTION #lobby 2026-11-25T09:01:00.000Z carol nods");
  state.receive("OK history #lobby");
  assert.deepEqual(state.room("#lobby").items.map((entry) => entry.kind), ["message", "action"]);
});

test("AWAY and WHOIS answers are shown as notices", () => {
  const state = loggedIn();
  state.sent("/whois bob");
  state.receive("WHOIS bob offline 2026-11-25T10:00:00.000Z #dev #lobby");
  state.receive("AWAY bob gone fishing");
  state.receive("OK whois bob");
  const [whois, away] = state.room("#lobby").items.slice(-2);
  assert.match(whois.text, /^bob: offline, last seen .*; rooms you share: #dev #lobby$/);
  assert.equal(away.text, "bob is away: gone fishing");
  state.receive("WHOIS carol offline -");
  assert.equal(state.room("#lobby").items.at(-1).text, "carol: never logged in");
});

test("a conversation's history (/history <user>, HISTORYDM) replaces its past, keeps live DMs once", () => {
  const state = loggedIn("alice", ["STORED 2026-11-25T09:30:00.000Z bob while you were out"]);
  const conversation = state.conversation("bob");
  assert.equal(conversation.historyAsked, false);
  const request = state.sent("/history bob 50");
  request.sentAfter = 0;
  state.receive("HISTORYDM 2026-11-25T09:00:00.000Z alice bob earlier");
  state.receive("DM bob alice live meanwhile");
  state.receive("HISTORYDM 2026-11-25T09:30:00.000Z bob alice while you were out");
  state.receive("HISTORYDM 2026-11-25T09:40:00.000Z bob alice live meanwhile");
  state.receive("OK history bob");
  assert.deepEqual(texts(conversation), ["earlier", "while you were out", "live meanwhile"]);
  assert.ok(conversation.items.every((entry) => entry.past));
  // The stored message keeps its mark (✉) from before.
  assert.deepEqual(conversation.items.map((entry) => !!entry.stored), [false, true, false]);
  assert.equal(conversation.items[0].time, Date.parse("2026-11-25T09:00:00.000Z"));
  // Three of the 50 asked for: nothing older to load.
  assert.equal(state.hasOlder(conversation), false);
  assert.deepEqual([...state.conversations.keys()], ["bob"]);
});
