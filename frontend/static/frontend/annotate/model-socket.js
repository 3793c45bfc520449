// The click-to-mask websocket (annotator/ws/annotate.py): one connection per open image.
//
// The server keeps the low-res logits of its recent answers under handles, so a refinement
// click can name the mask it continues from. Those handles die with the connection: after a
// reconnect the page must not send old ones (see `generation`).

const RETRY_SECONDS = [1, 2, 4, 8, 15];

export class ModelSocket {
  /**
   * @param {string} path  e.g. "/ws/images/7/annotate/"
   * @param {object} handlers  onReady(msg), onPrediction(msg, rttMs), onError(msg),
   *   onState(state, text)
   */
  constructor(path, handlers) {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    this.url = `${scheme}://${window.location.host}${path}`;
    this.handlers = handlers;
    this.socket = null;
    this.ready = false;
    this.generation = 0; // +1 per successful "ready": handles of older generations are void
    this.nextId = 1;
    this.sentAt = new Map(); // id -> performance.now() of the send, for the round-trip time
    this.attempt = 0;
    this.closedByUs = false;
    this.retryTimer = null;
  }

  connect() {
    this.closedByUs = false;
    this.handlers.onState("connecting", "Connecting to the model…");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.ready = false;
      if (this.closedByUs) return;
      if (event.code === 4403) {
        // Not a member, or the image is gone: retrying cannot help.
        this.handlers.onState("failed", "The model refused this image (no access).");
        return;
      }
      const wait = RETRY_SECONDS[Math.min(this.attempt, RETRY_SECONDS.length - 1)];
      this.attempt += 1;
      this.handlers.onState("offline", `Model connection lost; retrying in ${wait} s…`);
      this.retryTimer = window.setTimeout(() => this.connect(), wait * 1000);
    });
  }

  close() {
    this.closedByUs = true;
    window.clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close();
  }

  receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "ready") {
      this.ready = true;
      this.attempt = 0;
      this.generation += 1;
      this.handlers.onReady(message);
    } else if (message.type === "prediction") {
      const sent = this.sentAt.get(message.id);
      this.sentAt.delete(message.id);
      this.handlers.onPrediction(message, sent === undefined ? null : performance.now() - sent);
    } else if (message.type === "error") {
      this.sentAt.delete(message.id);
      this.handlers.onError(message);
    }
  }

  /** Send a prompt; returns its id, or null when the model is not connected yet. */
  predict(prompt) {
    if (!this.ready || this.socket.readyState !== WebSocket.OPEN) return null;
    const id = this.nextId;
    this.nextId += 1;
    this.sentAt.set(id, performance.now());
    this.socket.send(JSON.stringify({ type: "predict", id, ...prompt }));
    return id;
  }
}
