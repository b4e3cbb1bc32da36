// Units for static/js/format.js: safe links, mentions, grouping, the title, the address checks.
import assert from "node:assert/strict";
import test from "node:test";

import {
  GROUP_MS,
  groupMessages,
  insecureOrigin,
  isLoopback,
  mentions,
  safeUrl,
  socketUrl,
  splitLinks,
  titleFor,
} from "../../chatd/frontends/web/static/js/format.js";

test("http and https links are found, trailing punctuation left out", () => {
  assert.deepEqual(splitLinks("see https://example.com/a?b=1. ok"), [
    { text: "see " },
    { text: "https://example.com/a?b=1", href: "https://example.com/a?b=1" },
    { text: ". ok" },
  ]);
  assert.deepEqual(splitLinks("(http://x.test/y)"), [
    { text: "(" },
    { text: "http://x.test/y", href: "http://x.test/y" },
    { text: ")" },
  ]);
});

test("www. names link to https", () => {
  assert.deepEqual(splitLinks("www.example.org"), [
    { text: "www.example.org", href: "https://www.example.org/" },
  ]);
});

test("other schemes never become links", () => {
  for (const text of [
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:x",
    "file:///etc/passwd",
    "JaVaScRiPt:alert(1)",
  ]) {
    assert.ok(splitLinks(text).every((part) => !part.href), text);
  }
  assert.equal(safeUrl("javascript:alert(1)"), null);
  assert.equal(safeUrl("https://"), null);
});

test("markup stays text: splitLinks returns text parts, never HTML", () => {
  const parts = splitLinks('<script>alert("x")</script> <img src=x onerror=alert(1)>');
  assert.deepEqual(parts, [{ text: '<script>alert("x")</script> <img src=x onerror=alert(1)>' }]);
});

test("a link with quotes or brackets ends before them", () => {
  const parts = splitLinks('https://a.test/"onmouseover="x');
  assert.equal(parts[0].href, "https://a.test/");
});

test("mentions are whole words in any case", () => {
  assert.ok(mentions("hey alice, look", "alice"));
  assert.ok(mentions("@Alice look", "alice"));
  assert.ok(mentions("alice", "alice"));
  assert.ok(!mentions("malice aforethought", "alice"));
  assert.ok(!mentions("alice_b is here", "alice"));
  assert.ok(!mentions("anything", null));
  assert.ok(mentions("ask a.b now", "a.b") && !mentions("ask axb now", "a.b"));
});

test("messages group by sender within five minutes; events stand alone", () => {
  const at = (minutes) => minutes * 60 * 1000;
  const items = [
    { kind: "message", sender: "bob", text: "1", time: at(0) },
    { kind: "message", sender: "bob", text: "2", time: at(1) },
    { kind: "event", what: "join", user: "carol", time: at(2) },
    { kind: "message", sender: "bob", text: "3", time: at(2) },
    { kind: "message", sender: "alice", text: "4", time: at(3) },
    { kind: "message", sender: "alice", text: "5", time: at(3) + GROUP_MS },
  ];
  const groups = groupMessages(items);
  assert.deepEqual(
    groups.map((group) => [group.kind, group.sender, group.items.map((entry) => entry.text || entry.what)]),
    [
      ["message", "bob", ["1", "2"]],
      ["event", undefined, ["join"]],
      ["message", "bob", ["3"]],
      ["message", "alice", ["4"]],
      ["message", "alice", ["5"]],
    ],
  );
});

test("the title shows the unread count first", () => {
  assert.equal(titleFor(0, "#lobby"), "#lobby – chatd");
  assert.equal(titleFor(3, "#lobby", "home"), "(3) #lobby – home");
  assert.equal(titleFor(0, null), "chatd");
});

test("plain HTTP is a risk only away from this computer", () => {
  assert.ok(isLoopback("localhost") && isLoopback("127.0.0.1") && isLoopback("127.1.2.3"));
  assert.ok(isLoopback("[::1]") && isLoopback("app.localhost"));
  assert.ok(!isLoopback("chat.example.com") && !isLoopback("192.168.1.5") && !isLoopback("127.example.com"));
  assert.ok(insecureOrigin({ protocol: "http:", hostname: "192.168.1.5" }));
  assert.ok(!insecureOrigin({ protocol: "http:", hostname: "localhost" }));
  assert.ok(!insecureOrigin({ protocol: "https:", hostname: "chat.example.com" }));
});

test("the socket is on the page's own host, wss under https", () => {
  assert.equal(socketUrl({ protocol: "http:", host: "127.0.0.1:8080" }), "ws://127.0.0.1:8080/ws");
  assert.equal(socketUrl({ protocol: "https:", host: "chat.example.com" }), "wss://chat.example.com/ws");
});
