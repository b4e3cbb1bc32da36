// Pure helpers for showing messages: links, times, grouping, mentions, the title.
// Nothing here touches the DOM, so Node's test runner checks all of it.

// http(s) URLs and bare www. names, up to whitespace; trailing punctuation is not
// part of a link ("see https://example.com." ends before the dot).
const LINK = /\b(?:https?:\/\/|www\.)[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'")\]}]+$/;

/** A URL that may become a link: only http and https, with a host. */
export function safeUrl(text) {
  const candidate = /^www\./i.test(text) ? `https://${text}` : text;
  let url;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return null;
  if (!url.hostname) return null;
  return url.href;
}

/**
 * Split text into parts: {text} for plain text and {text, href} for links. The
 * renderer puts each part in as text (a link's text too): nothing is ever HTML.
 */
export function splitLinks(text) {
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    let found = match[0];
    const trailing = found.match(TRAILING);
    if (trailing) found = found.slice(0, found.length - trailing[0].length);
    const href = safeUrl(found);
    if (!href) continue;
    if (match.index > last) parts.push({ text: text.slice(last, match.index) });
    parts.push({ text: found, href });
    last = match.index + found.length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}

/** Whether text mentions the user by name, as a whole word, in any case. */
export function mentions(text, name) {
  if (!name) return false;
  const escaped = name.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
  return new RegExp(`(^|[^A-Za-z0-9_.-])@?${escaped}($|[^A-Za-z0-9_-])`, "i").test(text);
}

/** The time of a message, as the reader's clock shows it (hours and minutes). */
export function formatTime(ms, locale = undefined) {
  return new Date(ms).toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
}

/** Day and time, for a message's tooltip. */
export function formatMoment(ms, locale = undefined) {
  return new Date(ms).toLocaleString(locale);
}

// Messages from the same sender closer than this share one heading.
export const GROUP_MS = 5 * 60 * 1000;

/**
 * Group consecutive messages from one sender (within GROUP_MS of the previous)
 * so the name and time are shown once per group. Events (joins, topics, ...)
 * and notices stand alone.
 */
export function groupMessages(items) {
  const groups = [];
  let current = null;
  for (const item of items) {
    const joinable =
      item.kind === "message" &&
      current &&
      current.kind === "message" &&
      current.sender === item.sender &&
      item.time - current.items[current.items.length - 1].time < GROUP_MS;
    if (joinable) {
      current.items.push(item);
    } else {
      current = { kind: item.kind, sender: item.sender, time: item.time, items: [item] };
      groups.push(current);
    }
  }
  return groups;
}

/** The page title: unread count first, so it shows in a crowded tab bar. */
export function titleFor(unread, viewName, server = "chatd") {
  const base = viewName ? `${viewName} – ${server}` : server;
  return unread > 0 ? `(${unread}) ${base}` : base;
}

/** Whether a host name is this computer (where plain HTTP is not a risk). */
export function isLoopback(hostname) {
  return (
    hostname === "localhost" ||
    hostname.endsWith(".localhost") ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname) ||
    hostname === "[::1]" ||
    hostname === "::1"
  );
}

/** Whether the page should warn that it came over plain HTTP from elsewhere. */
export function insecureOrigin(location) {
  return location.protocol === "http:" && !isLoopback(location.hostname);
}

/** The WebSocket address for a page at ``location``: ws(s)://same host/ws. */
export function socketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
