// The chat page: wires the connection, the protocol, the state and the rendering.
const insecure = document.getElementById("insecure");
const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/;
if (location.protocol === "http:" && !loopback.test(location.hostname)) {
  insecure.hidden = false;
}
