// Units for static/js/protocol.js: parsing server lines, names, and what the input box sends.
import assert from "node:assert/strict";
import test from "node:test";

import {
  LINE_KINDS,
  commandOf,
  firstArgument,
  isFinal,
  isRoomName,
  isUserName,
  linesForInput,
  parseLine,
} from "../../chatd/frontends/web/static/js/protocol.js";

test("each kind's last field is the rest of the line, spaces included", () => {
  assert.deepEqual(parseLine("MSG #lobby alice hello  there "), {
    kind: "MSG", room: "#lobby", sender: "alice", text: "hello  there ",
  });
  assert.deepEqual(parseLine("DM bob alice psst"), {
    kind: "DM", sender: "bob", recipient: "alice", text: "psst",
  });
  assert.deepEqual(parseLine("ERR bad-arguments <room> is missing"), {
    kind: "ERR", code: "bad-arguments", text: "<room> is missing",
  });
});

test("an empty last field may be absent", () => {
  assert.deepEqual(parseLine("OK quit"), { kind: "OK", command: "quit", text: "" });
  assert.deepEqual(parseLine("OK rooms "), { kind: "OK", command: "rooms", text: "" });
  assert.deepEqual(parseLine("TOPIC #a bob"), { kind: "TOPIC", room: "#a", setter: "bob", text: "" });
});

test("WHO and OPS carry lists of names", () => {
  assert.deepEqual(parseLine("WHO #lobby alice bob").members, ["alice", "bob"]);
  assert.deepEqual(parseLine("WHO #lobby").members, []);
  assert.deepEqual(parseLine("OPS #dev carol").names, ["carol"]);
});

test("timestamps become milliseconds", () => {
  const history = parseLine("HISTORY #lobby 2026-11-25T10:00:00.123Z bob hi there");
  assert.equal(history.time, Date.UTC(2026, 10, 25, 10, 0, 0, 123));
  assert.equal(history.text, "hi there");
  const stored = parseLine("STORED 2026-11-25T10:00:00.000Z bob later");
  assert.equal(stored.sender, "bob");
  assert.equal(parseLine("STORED nonsense bob x").time, null);
});

test("the extension lines parse", () => {
  assert.deepEqual(parseLine("KICK #dev mallory carol spam and more"), {
    kind: "KICK", room: "#dev", user: "mallory", by: "carol", reason: "spam and more",
  });
  assert.deepEqual(parseLine("INVITE #secret carol"), { kind: "INVITE", room: "#secret", by: "carol" });
});

test("MODE lines: the user field only for voice and bans", () => {
  assert.deepEqual(parseLine("MODE #a carol private on"), {
    kind: "MODE", room: "#a", by: "carol", feature: "private", state: "on", user: "",
  });
  assert.deepEqual(parseLine("MODE #a carol ban on mallory"), {
    kind: "MODE", room: "#a", by: "carol", feature: "ban", state: "on", user: "mallory",
  });
});

test("an unknown kind is kept whole rather than failing", () => {
  assert.deepEqual(parseLine("FUTURE a b c"), { kind: "UNKNOWN", line: "FUTURE a b c" });
  assert.deepEqual(parseLine(""), { kind: "UNKNOWN", line: "" });
});

test("every kind of the contract has a row", () => {
  for (const kind of ["HELLO", "OK", "ERR", "MSG", "DM", "JOIN", "PART", "WHO", "ROOM",
    "HISTORY", "STORED", "PING", "INFO", "BYE", "TOPIC", "OPS", "KICK", "INVITE"]) {
    assert.ok(LINE_KINDS[kind], kind);
  }
  assert.ok(isFinal(parseLine("OK x")) && isFinal(parseLine("ERR x y")));
  assert.ok(!isFinal(parseLine("MSG #a b c")));
});

test("names follow the protocol's rules", () => {
  assert.ok(isUserName("alice") && isUserName("a".repeat(32)) && isUserName("b.o_b-1"));
  assert.ok(!isUserName("1alice") && !isUserName("a".repeat(33)) && !isUserName("al ice"));
  assert.ok(isRoomName("#lobby") && isRoomName(`#${"x".repeat(32)}`));
  assert.ok(!isRoomName("lobby") && !isRoomName("#") && !isRoomName(`#${"x".repeat(33)}`));
});

test("typed commands are sent as they are", () => {
  const view = { type: "room", name: "#dev" };
  assert.deepEqual(linesForInput("/join #new", view), ["/join #new"]);
  assert.deepEqual(linesForInput("/topic #dev a b  c", view), ["/topic #dev a b  c"]);
  assert.deepEqual(linesForInput("/me waves", view), ["/me waves"]);
});

test("text goes to the room or the person shown", () => {
  assert.deepEqual(linesForInput("hello", { type: "room", name: "#dev" }), ["/say #dev hello"]);
  assert.deepEqual(linesForInput("hello", { type: "dm", name: "bob" }), ["/msg bob hello"]);
  assert.deepEqual(linesForInput("hello", null), ["hello"]);
});

test("//text is text starting with a slash", () => {
  assert.deepEqual(linesForInput("//shrug", { type: "room", name: "#a" }), ["/say #a /shrug"]);
});

test("a pasted block is one message per non-empty line, never a line break inside one", () => {
  assert.deepEqual(linesForInput("one\r\n\ntwo  \n/ping x", { type: "room", name: "#a" }), [
    "/say #a one", "/say #a two", "/ping x",
  ]);
  assert.deepEqual(linesForInput("   \n", { type: "room", name: "#a" }), []);
});

test("command names and first arguments of sent lines", () => {
  assert.equal(commandOf("/JOIN #a"), "join");
  assert.equal(commandOf("/rooms"), "rooms");
  assert.equal(commandOf("hello"), "say");
  assert.equal(commandOf("//x"), "say");
  assert.equal(firstArgument("/history #a 100"), "#a");
  assert.equal(firstArgument("/rooms"), "");
});

test("the actions, away and whois extensions parse", () => {
  assert.deepEqual(parseLine("ACTION #dev bob waves hello"), {
    kind: "ACTION", room: "#dev", sender: "bob", text: "waves hello",
  });
  const past = parseLine("HISTORYACTION #dev 2026-11-25T10:00:00.000Z bob waved");
  assert.equal(past.time, Date.UTC(2026, 10, 25, 10));
  assert.deepEqual(parseLine("AWAY bob gone fishing"), { kind: "AWAY", user: "bob", text: "gone fishing" });
  const whois = parseLine("WHOIS bob online 2026-11-25T10:00:00.000Z #a #b");
  assert.deepEqual(whois.rooms, ["#a", "#b"]);
  assert.equal(whois.seen, Date.UTC(2026, 10, 25, 10));
  assert.equal(parseLine("WHOIS carol offline -").seen, null);
  assert.deepEqual(parseLine("WHOIS carol offline -").rooms, []);
});
