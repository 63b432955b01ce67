// A subscribe-only NATS client over WebSocket, for live updates. It speaks the
// NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol)
// itself instead of using nats.ws: that is an npm package with a build step,
// and this app has neither a registry nor a bundler. Subscribing needs only
// INFO, CONNECT, PING/PONG, SUB/UNSUB, MSG/HMSG and -ERR, which fit here and
// are tested in tests/browser (nats_test.go). No publishing, no request-reply.
//
//   const conn = connect({ url: "ws://localhost:8405", getToken: () => token });
//   conn.addEventListener("status", (e) => show(e.detail.state));
//   conn.addEventListener("error", (e) => warn(e.detail.code, e.detail.message));
//   const sub = conn.subscribe("authmesh.live.abc.orders.>", (msg) => use(msg.json()));
//   sub.unsubscribe(); conn.close();
//
// The token is sent in CONNECT only; it is never stored on the connection,
// logged, or put into an error.

export const VERSION = "1.0.0";

const CRLF = new Uint8Array([13, 10]);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// NatsError is what the server said in -ERR (or a protocol failure here),
// with a code callers can switch on.
export class NatsError extends Error {
  constructor(message, code = errorCode(message), subject = "") {
    super(message);
    this.name = "NatsError";
    this.code = code;
    this.subject = subject; // the refused subject of a permissions violation
  }
}

// errorCode classifies a -ERR text. The server closes the connection after
// all of them but a permissions violation.
export function errorCode(text) {
  const t = text.toLowerCase();
  if (t.startsWith("authorization violation")) return "authorization_violation";
  if (t.startsWith("permissions violation")) return "permissions_violation";
  if (t.startsWith("user authentication expired")) return "authentication_expired";
  if (t.startsWith("user authentication revoked")) return "authentication_revoked";
  return "server_error";
}

// errorFromServer builds the NatsError for a -ERR argument ('quoted text').
export function errorFromServer(arg) {
  const message = arg.trim().replace(/^'(.*)'$/s, "$1");
  const subject = /Subscription to "([^"]*)"/.exec(message)?.[1] || "";
  return new NatsError(message, errorCode(message), subject);
}

// ---- parsing ----------------------------------------------------------------

function indexOfCRLF(bytes, from = 0) {
  for (let i = from; i + 1 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10) return i;
  }
  return -1;
}

function concat(a, b) {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function byteCount(s) {
  if (!/^\d+$/.test(s ?? "")) throw new NatsError(`bad byte count ${JSON.stringify(s)}`, "protocol_error");
  return Number(s);
}

// parseHeaders reads an HMSG header block: "NATS/1.0[ code[ description]]"
// then "Name: value" lines. Names keep their case (NATS headers are
// case-sensitive); a repeated name collects its values in order.
export function parseHeaders(bytes) {
  const lines = decoder.decode(bytes).split("\r\n");
  const status = /^NATS\/1\.0(?:\s+(\d{3}))?(?:\s+(.*))?$/.exec(lines[0]);
  if (!status) throw new NatsError(`bad header block ${JSON.stringify(lines[0])}`, "protocol_error");
  const headers = new Map();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).trim();
    headers.set(name, [...(headers.get(name) || []), value]);
  }
  return { status: status[1] || "", description: status[2] || "", headers };
}

// message is what a subscription's callback receives.
function message(subject, sid, reply, headerBytes, data) {
  const h = headerBytes ? parseHeaders(headerBytes) : { status: "", description: "", headers: new Map() };
  return {
    subject,
    sid,
    reply,
    headers: h.headers,
    status: h.status,
    description: h.description,
    data,
    text: () => decoder.decode(data),
    json: () => JSON.parse(decoder.decode(data)),
  };
}

// Parser turns the server's byte stream into operations, whatever the
// WebSocket framing: a frame may end mid-message, or carry several. MSG and
// HMSG sizes count bytes, so the buffer holds bytes and only complete
// control lines and payloads are decoded.
export class Parser {
  #buf = new Uint8Array(0);
  #onOp;

  // onOp receives {op: "INFO", info} | {op: "MSG", msg} | {op: "PING"} |
  // {op: "PONG"} | {op: "+OK"} | {op: "-ERR", error}.
  constructor(onOp) {
    this.#onOp = onOp;
  }

  // push appends a chunk and hands every complete operation to onOp. A
  // malformed stream throws a NatsError with code "protocol_error".
  push(chunk) {
    this.#buf = concat(this.#buf, chunk);
    for (;;) {
      const next = this.#next();
      if (!next) return;
      this.#buf = this.#buf.subarray(next.consumed);
      this.#onOp(next.op);
    }
  }

  // #next reads one operation from the front of the buffer, or null when it
  // is not all there yet.
  #next() {
    const eol = indexOfCRLF(this.#buf);
    if (eol < 0) return null;
    const line = decoder.decode(this.#buf.subarray(0, eol));
    const [verb = "", ...args] = line.split(/[ \t]+/);
    const afterLine = eol + 2;
    switch (verb.toUpperCase()) {
      case "MSG":
        return this.#payload(afterLine, args, false);
      case "HMSG":
        return this.#payload(afterLine, args, true);
      case "INFO":
        return { consumed: afterLine, op: { op: "INFO", info: JSON.parse(line.slice(4).trim() || "{}") } };
      case "PING":
      case "PONG":
      case "+OK":
        return { consumed: afterLine, op: { op: verb.toUpperCase() } };
      case "-ERR":
        return { consumed: afterLine, op: { op: "-ERR", error: errorFromServer(line.slice(4)) } };
      default:
        throw new NatsError(`unexpected ${JSON.stringify(line.slice(0, 40))}`, "protocol_error");
    }
  }

  // #payload reads "MSG subject sid [reply] size" or "HMSG subject sid
  // [reply] header-size total-size" and the payload that follows.
  #payload(start, args, withHeaders) {
    const counts = withHeaders ? 2 : 1;
    if (args.length !== 2 + counts && args.length !== 3 + counts) {
      throw new NatsError(`bad ${withHeaders ? "HMSG" : "MSG"} arguments`, "protocol_error");
    }
    const [subject, sid] = args;
    const reply = args.length === 3 + counts ? args[2] : "";
    const total = byteCount(args[args.length - 1]);
    const headerSize = withHeaders ? byteCount(args[args.length - 2]) : 0;
    if (headerSize > total) throw new NatsError("header size exceeds total size", "protocol_error");
    const end = start + total;
    if (this.#buf.length < end + 2) return null;
    if (this.#buf[end] !== CRLF[0] || this.#buf[end + 1] !== CRLF[1]) throw new NatsError("payload not followed by CRLF", "protocol_error");
    const headerBytes = withHeaders ? this.#buf.slice(start, start + headerSize) : null;
    const data = this.#buf.slice(start + headerSize, end);
    return { consumed: end + 2, op: { op: "MSG", msg: message(subject, sid, reply, headerBytes, data) } };
  }
}

// ---- connection -------------------------------------------------------------

// connectOptions is the CONNECT body: a subscriber that authenticates with a
// token and wants headers. proof, when set, goes in sig: the DPoP proof a
// DPoP-bound token needs, which signs the server's INFO nonce (the server
// hands sig and its nonce to the auth callout).
export function connectOptions(token, name, proof = "") {
  return {
    auth_token: token,
    ...(proof ? { sig: proof } : {}),
    headers: true,
    no_responders: false,
    verbose: false,
    pedantic: false,
    protocol: 1,
    lang: "javascript",
    version: VERSION,
    name,
  };
}

// backoffDelay is the wait before reconnect attempt n (0-based): doubling from
// min to max, with up to 25% jitter so many tabs do not return in step.
export function backoffDelay(n, minMs, maxMs, random = Math.random) {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(n, 30));
  return Math.round(base * (0.75 + 0.25 * random()));
}

// Connection keeps one WebSocket to the server open, reconnecting with backoff
// and asking getToken() for the token on every connect (tokens refresh, and
// the server closes the connection when the token expires). Subscriptions
// survive reconnects. proveConnect(info, token), when given, returns (a
// promise of) the proof CONNECT carries for that token ("" for none), from
// the server's INFO (its nonce).
//
// Events (CustomEvent, read e.detail):
//   "status": {state} with state "connecting" | "connected" | "disconnected" | "closed"
//   "error":  a NatsError: code "authorization_violation", "permissions_violation"
//             (with .subject), "authentication_expired", "server_error",
//             "protocol_error", "token_unavailable" or "connect_timeout"
export class Connection extends EventTarget {
  #url;
  #getToken;
  #proveConnect;
  #name;
  #minDelayMs;
  #maxDelayMs;
  #connectTimeoutMs;
  #ws = null;
  #attempt = 0;
  #timer = 0;
  #nextSid = 1;
  #subs = new Map(); // sid → {subject, onMessage}
  #state = "disconnected";

  constructor({ url, getToken, proveConnect = null, name = "authmesh-web", minDelayMs = 500, maxDelayMs = 30000, connectTimeoutMs = 10000 }) {
    super();
    if (!url) throw new TypeError("nats: url is required");
    if (typeof getToken !== "function") throw new TypeError("nats: getToken must be a function");
    this.#url = url;
    this.#getToken = getToken;
    this.#proveConnect = proveConnect;
    this.#name = name;
    this.#minDelayMs = minDelayMs;
    this.#maxDelayMs = maxDelayMs;
    this.#connectTimeoutMs = connectTimeoutMs;
  }

  // state is "connecting", "connected", "disconnected" or "closed".
  get state() {
    return this.#state;
  }

  // subscribe sends SUB now if connected, and again after every reconnect.
  // onMessage receives {subject, sid, reply, headers, status, description,
  // data, text(), json()}.
  subscribe(subject, onMessage) {
    const sid = String(this.#nextSid++);
    this.#subs.set(sid, { subject, onMessage });
    if (this.state === "connected") this.#send(`SUB ${subject} ${sid}`);
    return { sid, subject, unsubscribe: () => this.unsubscribe(sid) };
  }

  unsubscribe(sid) {
    if (!this.#subs.delete(sid)) return;
    if (this.state === "connected") this.#send(`UNSUB ${sid}`);
  }

  // open starts connecting, after the caller's current task so that its
  // listeners see the first "connecting"; the connection then lives until
  // close().
  open() {
    if (this.state === "disconnected" && !this.#ws && !this.#timer) this.#timer = setTimeout(() => this.#connect());
    return this;
  }

  // close stops everything: the socket, any pending reconnect, all
  // subscriptions. A closed Connection stays closed.
  close() {
    clearTimeout(this.#timer);
    this.#timer = 0;
    this.#subs.clear();
    const ws = this.#ws;
    this.#ws = null;
    ws?.close();
    this.#setState("closed");
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state } }));
  }

  #error(err) {
    this.dispatchEvent(new CustomEvent("error", { detail: err }));
  }

  // #connect asks for the current token, opens the socket and wires the
  // handshake; the token stays in this call's closure.
  async #connect() {
    this.#timer = 0;
    this.#setState("connecting");
    let token = "";
    try {
      token = await this.#getToken();
    } catch {
      token = "";
    }
    if (this.state === "closed") return;
    if (!token) {
      this.#error(new NatsError("no access token to connect with", "token_unavailable"));
      this.#retry();
      return;
    }
    const ws = new WebSocket(this.#url);
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    let handshake = "info"; // → "pong" after CONNECT+PING → "done"
    const deadline = setTimeout(() => {
      this.#error(new NatsError("no answer to CONNECT in time", "connect_timeout"));
      ws.close();
    }, this.#connectTimeoutMs);
    const parser = new Parser((op) => {
      if (op.op === "INFO" && handshake === "info") {
        handshake = "pong";
        const prove = this.#proveConnect ? Promise.resolve().then(() => this.#proveConnect(op.info, token)) : Promise.resolve("");
        prove
          .catch(() => "") // without its proof the server refuses a bound token: reported as any refusal
          .then((proof) => {
            if (ws === this.#ws) this.#send(`CONNECT ${JSON.stringify(connectOptions(token, this.#name, proof))}\r\nPING`);
          });
      } else if (op.op === "PONG" && handshake === "pong") {
        handshake = "done";
        clearTimeout(deadline);
        this.#connected();
      } else {
        this.#handle(op);
      }
    });
    ws.onmessage = (e) => {
      if (ws !== this.#ws) return;
      try {
        parser.push(new Uint8Array(e.data));
      } catch (err) {
        this.#error(err instanceof NatsError ? err : new NatsError(String(err?.message || err), "protocol_error"));
        ws.close();
      }
    };
    ws.onclose = () => {
      clearTimeout(deadline);
      if (ws !== this.#ws) return; // closed by close(), or replaced
      this.#ws = null;
      this.#retry();
    };
  }

  // #connected runs once the server answered the PING after CONNECT: the
  // token was accepted. Subscriptions are (re)sent now.
  #connected() {
    this.#attempt = 0;
    this.#setState("connected");
    const subs = [...this.#subs].map(([sid, s]) => `SUB ${s.subject} ${sid}`);
    if (subs.length) this.#send(subs.join("\r\n"));
  }

  // #handle answers server PINGs, delivers messages and surfaces -ERR.
  #handle(op) {
    switch (op.op) {
      case "PING":
        this.#send("PONG");
        break;
      case "MSG": {
        const sub = this.#subs.get(op.msg.sid);
        if (!sub) return; // unsubscribed while the message was in flight
        try {
          sub.onMessage(op.msg);
        } catch (err) {
          // A failing callback must not stop the parser or other subscribers.
          reportError(err);
        }
        break;
      }
      case "-ERR":
        this.#error(op.error);
        break;
    }
  }

  // #retry schedules the next connect with backoff.
  #retry() {
    if (this.state === "closed") return;
    this.#setState("disconnected");
    const delay = backoffDelay(this.#attempt++, this.#minDelayMs, this.#maxDelayMs);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  #send(lines) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(encoder.encode(`${lines}\r\n`));
  }
}

// connect creates a Connection and starts connecting.
export function connect(options) {
  return new Connection(options).open();
}
