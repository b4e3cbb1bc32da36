// The line protocol's server lines, as a table: a new line kind is one entry here
// (and, to be shown, one entry in render.js's table). Every line is
// "TYPE field field ... rest": each kind has a fixed number of fields and the last
// one is the rest of the line, spaces included (it may be empty or absent).

export const LINE_KINDS = {
  HELLO: ["server", "version", "text"],
  OK: ["command", "text"],
  ERR: ["code", "text"],
  MSG: ["room", "sender", "text"],
  DM: ["sender", "recipient", "text"],
  JOIN: ["room", "user"],
  PART: ["room", "user"],
  WHO: ["room", "members"],
  ROOM: ["room", "count"],
  HISTORY: ["room", "time", "sender", "text"],
  STORED: ["time", "sender", "text"],
  PING: ["token"],
  INFO: ["text"],
  BYE: ["reason"],
  // Extensions (rooms people live in).
  TOPIC: ["room", "setter", "text"],
  OPS: ["room", "names"],
  KICK: ["room", "user", "by", "reason"],
  INVITE: ["room", "by"],
  // Extensions (actions, away, whois).
  ACTION: ["room", "sender", "text"],
  HISTORYACTION: ["room", "time", "sender", "text"],
  AWAY: ["user", "text"],
  WHOIS: ["user", "status", "seen", "rooms"],
  // Extension: /history <user>, a conversation's past direct messages.
  HISTORYDM: ["time", "sender", "recipient", "text"],
  // Extension: a room's feature switched (IRC's MODE +i/+s/+m/-t/+v/+b), told to every member.
  MODE: ["room", "by", "feature", "state", "user"],
};

// How a MODE line reads, by feature and whether it was switched on.
const MODE_PHRASES = {
  "private on": (e) => `${e.by} made the room private (members and the invited only)`,
  "private off": (e) => `${e.by} made the room public`,
  "secret on": (e) => `${e.by} made the room secret (listed to its members only)`,
  "secret off": (e) => `${e.by} made the room no longer secret`,
  "moderated on": (e) => `${e.by} made the room moderated (operators and voiced members speak)`,
  "moderated off": (e) => `${e.by} made the room no longer moderated`,
  "topic-open on": (e) => `${e.by} let every member set the topic`,
  "topic-open off": (e) => `${e.by} let only operators set the topic`,
  "voice on": (e) => `${e.by} gave ${e.user} voice`,
  "voice off": (e) => `${e.by} took ${e.user}'s voice`,
  "ban on": (e) => `${e.by} banned ${e.user}`,
  "ban off": (e) => `${e.by} lifted ${e.user}'s ban`,
};

/** The sentence a parsed MODE line is shown as in its room (a feature unknown yet: plainly). */
export function modeText(event) {
  const phrase = MODE_PHRASES[`${event.feature} ${event.state}`];
  if (phrase) return phrase(event);
  return [event.by, "set", event.feature, event.state, event.user].filter(Boolean).join(" ");
}

// Fields that hold a list of names separated by single spaces.
const NAME_LISTS = new Set(["members", "names", "rooms"]);

/**
 * Parse one server line into {kind, ...fields}; an unknown kind gives
 * {kind: "UNKNOWN", line} so that a newer server never breaks the page.
 */
export function parseLine(line) {
  const space = line.indexOf(" ");
  const kind = space < 0 ? line : line.slice(0, space);
  const names = LINE_KINDS[kind];
  if (!names) return { kind: "UNKNOWN", line };
  let rest = space < 0 ? "" : line.slice(space + 1);
  const event = { kind };
  names.forEach((name, index) => {
    let value;
    if (index === names.length - 1) {
      value = rest;
    } else {
      const next = rest.indexOf(" ");
      value = next < 0 ? rest : rest.slice(0, next);
      rest = next < 0 ? "" : rest.slice(next + 1);
    }
    event[name] = NAME_LISTS.has(name) ? splitNames(value) : value;
  });
  if (event.time !== undefined) event.time = parseTime(event.time);
  if (event.seen !== undefined) event.seen = event.seen === "-" ? null : parseTime(event.seen);
  return event;
}

function splitNames(value) {
  return value === "" ? [] : value.split(" ");
}

/** The protocol's timestamps (ISO 8601 UTC with milliseconds) as milliseconds. */
export function parseTime(text) {
  const value = Date.parse(text);
  return Number.isNaN(value) ? null : value;
}

/** Whether a line is a final reply (OK or ERR), which answers the oldest command sent. */
export function isFinal(event) {
  return event.kind === "OK" || event.kind === "ERR";
}

const USER = /^[A-Za-z][A-Za-z0-9_.-]{0,31}$/;
const ROOM = /^#[A-Za-z0-9_.-]{1,32}$/;

export function isUserName(text) {
  return USER.test(text);
}

export function isRoomName(text) {
  return ROOM.test(text);
}

/** Case-insensitive key of a user or room name, as the server compares them. */
export function fold(name) {
  return name.toLowerCase();
}

/**
 * The lines to send for what was typed in the input box, in the view it was typed
 * in: one per line typed (a paste of several lines is several messages). A command
 * (one leading "/") goes as it is; text goes to the room shown (/say) or to the
 * person of the conversation shown (/msg); "//text" is text starting with "/".
 */
export function linesForInput(typed, view) {
  const lines = [];
  for (const raw of typed.split(/\r\n|\r|\n/)) {
    const text = raw.trimEnd();
    if (text.trim() === "") continue;
    if (text.startsWith("/") && !text.startsWith("//")) {
      lines.push(text);
      continue;
    }
    const body = text.startsWith("//") ? text.slice(1) : text;
    if (view && view.type === "room") lines.push(`/say ${view.name} ${body}`);
    else if (view && view.type === "dm") lines.push(`/msg ${view.name} ${body}`);
    else lines.push(text);
  }
  return lines;
}

/** The command name of a line the page sent ("say" for text), lower case. */
export function commandOf(line) {
  if (!line.startsWith("/") || line.startsWith("//")) return "say";
  const end = line.indexOf(" ");
  return (end < 0 ? line.slice(1) : line.slice(1, end)).toLowerCase();
}

/** The first argument of a command line, or "" (the room of /join, /history, /say...). */
export function firstArgument(line) {
  const parts = line.split(" ");
  return parts.length > 1 ? parts[1] : "";
}
