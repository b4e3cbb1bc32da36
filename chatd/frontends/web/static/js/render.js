// Drawing the state into the page. Text from the server is only ever put in
// with textContent (or as an attribute value): never as HTML. Links are made
// from format.js's splitLinks, which lets through only http and https URLs.

import { formatMoment, formatTime, groupMessages, splitLinks } from "./format.js";
import { fold } from "./protocol.js";

/** An element with attributes and children (strings become text nodes). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/** Message text with its links: a text node per plain part, an <a> per link. */
export function richText(text) {
  const fragment = document.createDocumentFragment();
  for (const part of splitLinks(text)) {
    if (part.href) {
      const link = el("a", { href: part.href, target: "_blank", rel: "noopener noreferrer nofollow" });
      link.textContent = part.text;
      fragment.append(link);
    } else {
      fragment.append(document.createTextNode(part.text));
    }
  }
  return fragment;
}

function timeElement(ms) {
  if (ms === null || ms === undefined) return null;
  return el("time", { datetime: new Date(ms).toISOString(), title: formatMoment(ms) }, formatTime(ms));
}

// How each event item reads, by what happened. A new kind of event is one entry.
const EVENT_TEXT = {
  join: (entry) => `${entry.user} joined`,
  part: (entry) => `${entry.user} left`,
  topic: (entry) =>
    entry.text ? `${entry.user} set the topic: ${entry.text}` : `${entry.user} cleared the topic`,
  kick: (entry) => `${entry.by} removed ${entry.user}${entry.text ? `: ${entry.text}` : ""}`,
  // A room's feature switched (MODE): the sentence protocol.js made of it.
  mode: (entry) => entry.text,
};

// How each group of items is drawn, by item kind. A new kind is one entry.
const GROUP_RENDERERS = {
  message(group, context) {
    const own = context.me && fold(group.sender) === fold(context.me);
    return el(
      "li",
      { class: `group${own ? " own" : ""}` },
      el("div", { class: "head" }, el("span", { class: "sender" }, group.sender), " ", timeElement(group.time)),
      group.items.map((entry) =>
        el(
          "p",
          {
            class: `text${entry.stored ? " stored" : ""}${entry.past ? " past" : ""}`,
            title: entry.stored ? "sent while you were away" : null,
          },
          richText(entry.text),
        ),
      ),
    );
  },
  action(group) {
    return group.items.map((entry) =>
      el(
        "li",
        { class: `action${entry.past ? " past" : ""}` },
        timeElement(entry.time),
        " * ",
        el("span", { class: "sender" }, entry.sender),
        " ",
        richText(entry.text),
      ),
    );
  },
  event(group) {
    return group.items.map((entry) =>
      el("li", { class: `event ${entry.what}` }, timeElement(entry.time), " ", richText(EVENT_TEXT[entry.what](entry))),
    );
  },
  notice(group, context) {
    return group.items.map((entry) =>
      el(
        "li",
        { class: `notice ${entry.tone}` },
        richText(entry.text),
        entry.tone === "invite"
          ? [" ", el("button", { type: "button", class: "secondary small", onclick: () => context.join(entry.room) }, `Join ${entry.room}`)]
          : null,
      ),
    );
  },
};

/** The messages of the room or conversation shown, grouped by sender. */
export function renderMessages(list, target, context) {
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const previousHeight = list.scrollHeight;
  const previousTop = list.scrollTop;
  const nodes = [];
  for (const group of groupMessages(target ? target.items : [])) {
    const drawn = (GROUP_RENDERERS[group.kind] || GROUP_RENDERERS.notice)(group, context);
    nodes.push(...[drawn].flat());
  }
  list.replaceChildren(...nodes);
  if (context.keepPosition) {
    // Older messages were added above: keep what the reader was looking at in place.
    list.scrollTop = previousTop + (list.scrollHeight - previousHeight);
  } else if (nearBottom || context.toBottom) {
    list.scrollTop = list.scrollHeight;
  }
}

function badge(count, mentioned) {
  if (!count) return null;
  return el("span", { class: `badge${mentioned ? " mention" : ""}`, "aria-label": `${count} unread` }, String(count));
}

/** The room list, with unread counts and the room shown marked. */
export function renderRoomList(list, state, choose) {
  list.replaceChildren(
    ...state.roomList().map((room) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: `entry${state.isShown("room", room.name) ? " current" : ""}`,
            "aria-current": state.isShown("room", room.name) ? "page" : null,
            onclick: () => choose("room", room.name),
          },
          el("span", { class: "name" }, room.name),
          badge(room.unread, room.mentioned),
        ),
      ),
    ),
  );
}

/** The conversations, with unread counts. */
export function renderConversationList(list, state, choose) {
  list.replaceChildren(
    ...state.conversationList().map((conversation) =>
      el(
        "li",
        {},
        el(
          "button",
          {
            type: "button",
            class: `entry${state.isShown("dm", conversation.peer) ? " current" : ""}`,
            onclick: () => choose("dm", conversation.peer),
          },
          el("span", { class: "name" }, conversation.peer),
          badge(conversation.unread, conversation.unread > 0),
        ),
      ),
    ),
  );
}

/** Every room on the server (from /rooms), each with a button to join it. */
export function renderAllRooms(list, state, join) {
  list.replaceChildren(
    ...state.allRooms.map((room) =>
      el(
        "li",
        {},
        el(
          "button",
          { type: "button", class: "entry", onclick: () => join(room.name) },
          el("span", { class: "name" }, room.name),
          el("span", { class: "count" }, `${room.count}`),
        ),
      ),
    ),
  );
}

/**
 * The members of the room shown: operators first and marked, everyone listed
 * online (the server lists members with a session), operators who are away
 * shown as offline. actions: {message(user), kick(user), op(user), deop(user)}.
 */
export function renderMembers(list, count, state, actions) {
  const room = state.view && state.view.type === "room" ? state.shown() : null;
  if (!room) {
    list.replaceChildren();
    count.textContent = "";
    return;
  }
  const online = new Set(room.members.map(fold));
  const iAmOperator = state.me && room.ops.has(fold(state.me));
  const people = [...room.members];
  for (const op of room.ops) if (!online.has(op)) people.push(op);
  people.sort((a, b) => {
    const opA = room.ops.has(fold(a)) ? 0 : 1;
    const opB = room.ops.has(fold(b)) ? 0 : 1;
    return opA - opB || fold(a).localeCompare(fold(b));
  });
  count.textContent = `(${room.members.length})`;
  list.replaceChildren(
    ...people.map((name) => {
      const operator = room.ops.has(fold(name));
      const me = state.me && fold(name) === fold(state.me);
      const here = online.has(fold(name));
      return el(
        "li",
        { class: `member${operator ? " operator" : ""}${here ? " online" : " offline"}` },
        el("span", { class: "presence", title: here ? "online" : "offline" }),
        el("span", { class: "name", title: operator ? "operator" : null }, operator ? `@${name}` : name),
        me
          ? null
          : el(
              "span",
              { class: "member-actions" },
              el("button", { type: "button", class: "link small", onclick: () => actions.message(name) }, "Message"),
              iAmOperator && here
                ? [
                    el("button", { type: "button", class: "link small", onclick: () => (operator ? actions.deop(name) : actions.op(name)) }, operator ? "Deop" : "Op"),
                    el("button", { type: "button", class: "link small danger", onclick: () => actions.kick(name) }, "Kick"),
                  ]
                : null,
            ),
      );
    }),
  );
}
