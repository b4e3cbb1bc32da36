// The WebSocket to the server, one line per text message, with reconnection.
// After an unexpected close it tries again after a growing, jittered delay
// (1 s, 2 s, 4 s ... at most 30 s); the page logs in again when it opens.

export const SUBPROTOCOL = "chatd.v1";
export const FIRST_DELAY_MS = 1000;
export const MAX_DELAY_MS = 30000;

/** How long to wait before attempt number ``attempt`` (0 first): half fixed, half random. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** Math.min(attempt, 15));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export class Connection {
  /**
   * handlers: {open(), line(text), closed({willRetry, delay, code})}.
   * options: {WebSocket, setTimeout, clearTimeout, random} for tests.
   */
  constructor(url, handlers, options = {}) {
    this.url = url;
    this.handlers = handlers;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.setTimeout = options.setTimeout || globalThis.setTimeout.bind(globalThis);
    this.clearTimeout = options.clearTimeout || globalThis.clearTimeout.bind(globalThis);
    this.random = options.random || Math.random;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.wanted = false;
  }

  get open() {
    return !!this.socket && this.socket.readyState === 1;
  }

  /** Connect, and keep reconnecting after unexpected closes until ``close()``. */
  connect() {
    this.wanted = true;
    this.cancelRetry();
    if (this.socket) return;
    const socket = new this.WebSocket(this.url, [SUBPROTOCOL]);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.handlers.open();
    };
    socket.onmessage = (message) => {
      if (typeof message.data === "string") this.handlers.line(message.data);
    };
    socket.onclose = (close) => this.closed(socket, close);
  }

  closed(socket, close) {
    if (socket !== this.socket) return;
    this.socket = null;
    let delay = null;
    if (this.wanted) {
      delay = backoffDelay(this.attempt, this.random);
      this.attempt += 1;
      this.timer = this.setTimeout(() => {
        this.timer = null;
        this.connect();
      }, delay);
    }
    this.handlers.closed({ willRetry: this.wanted, delay, code: close ? close.code : null });
  }

  /** Try again now (the reader asked), not after the delay. */
  retryNow() {
    if (this.timer !== null) {
      this.cancelRetry();
      this.connect();
    }
  }

  cancelRetry() {
    if (this.timer !== null) {
      this.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Send one line; false when not connected (the caller keeps it). */
  send(line) {
    if (!this.open) return false;
    this.socket.send(line);
    return true;
  }

  /** Close for good (logging out): no reconnection. */
  close() {
    this.wanted = false;
    this.cancelRetry();
    if (this.socket) this.socket.close(1000);
  }
}
