// Opt-in desktop notifications for direct messages and mentions, shown only
// while the reader is not looking at the page. The choice (never a password)
// is remembered in localStorage.

const KEY = "chatd.notifications";

export class Notifier {
  constructor(win = globalThis) {
    this.win = win;
    this.enabled = this.supported() && this.storedChoice() && win.Notification.permission === "granted";
  }

  supported() {
    return typeof this.win.Notification === "function";
  }

  storedChoice() {
    try {
      return this.win.localStorage.getItem(KEY) === "on";
    } catch {
      return false;
    }
  }

  /** Turn on (asking the browser's permission) or off; resolves to the new state. */
  async set(wanted) {
    if (wanted && this.supported()) {
      const permission = await this.win.Notification.requestPermission();
      this.enabled = permission === "granted";
    } else {
      this.enabled = false;
    }
    try {
      this.win.localStorage.setItem(KEY, this.enabled ? "on" : "off");
    } catch {
      // Storage may be off (private windows): the choice lasts for this page.
    }
    return this.enabled;
  }

  /** Show a notification if on and the page is not being looked at. */
  show(title, body, onClick) {
    if (!this.enabled || (this.win.document && !this.win.document.hidden)) return null;
    const notification = new this.win.Notification(title, { body, tag: title });
    notification.onclick = () => {
      this.win.focus();
      if (onClick) onClick();
      notification.close();
    };
    return notification;
  }
}
