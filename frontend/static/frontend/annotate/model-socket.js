// The click-to-mask websocket (annotator/ws/annotate.py): one connection per open image.
//
// The server keeps the low-res logits of its recent answers under handles, so a refinement
// click can name the mask it continues from. Those handles die with the connection: after a
// reconnect the page must not send old ones (see `generation`).
//
// A server that restarts (a deploy, `docker stop`) first sends {"type": "restart", retry_ms}
// and closes with "service restart" (annotator/ws/shutdown.py): the page then reconnects after
// about retry_ms, with jitter so that a room of annotators does not arrive in the same
// millisecond, and backs off while no server answers. Every new connection sets the session
// up again (a new "ready"); annotate.js re-sends the prompt that was in flight. The draft
// stays on the page throughout.

const RETRY_SECONDS = [1, 2, 4, 8, 15];
// 1012 is the registered "service restart"; our daphne sends 4012 (it lets applications
// close only with 1000 or 3000-4999).
const RESTART_CODES = new Set([1012, 4012]);
const RESTART_RETRY_MS = 1000; // when the server gave no hint

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
    this.restartHintMs = null; // the server said it is restarting: reconnect after this
    this.restarting = false; // from that word until the next "ready"
  }

  connect() {
    this.closedByUs = false;
    if (this.generation > 0 || this.attempt > 0) {
      this.handlers.onState("reconnecting", "Reconnecting to the model…");
    } else {
      this.handlers.onState("connecting", "Connecting to the model…");
    }
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.ready = false;
      this.sentAt.clear(); // their answers died with the connection
      if (this.closedByUs) return;
      if (event.code === 4403) {
        // Not a member, or the image is gone: retrying cannot help.
        this.handlers.onState("failed", "The model refused this image (no access).");
        return;
      }
      if (RESTART_CODES.has(event.code) || this.restartHintMs !== null) {
        const hint = this.restartHintMs ?? RESTART_RETRY_MS;
        this.restartHintMs = null;
        this.restarting = true;
        this.attempt = 1; // should the new server not be up yet, back off from there
        this.handlers.onState("reconnecting", "The server is restarting; reconnecting…");
        const jittered = hint * (0.5 + Math.random());
        this.retryTimer = window.setTimeout(() => this.connect(), jittered);
        return;
      }
      const wait = RETRY_SECONDS[Math.min(this.attempt, RETRY_SECONDS.length - 1)];
      this.attempt += 1;
      if (this.restarting) {
        // The new server is not listening yet: still a restart, not a lost connection.
        this.handlers.onState("reconnecting", `The server is restarting; retrying in ${wait} s…`);
      } else {
        this.handlers.onState("offline", `Model connection lost; retrying in ${wait} s…`);
      }
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
    if (message.type === "restart") {
      // The close follows; no prompt goes out on this connection any more.
      this.ready = false;
      this.restartHintMs = Number(message.retry_ms) || RESTART_RETRY_MS;
      this.handlers.onState("reconnecting", "The server is restarting; reconnecting…");
    } else if (message.type === "ready") {
      this.ready = true;
      this.restarting = false;
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
