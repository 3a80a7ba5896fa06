/**
 * Nautilus hub client for browsers: protocol v1 (protocol/README.md) as one ES module, no build
 * step, no dependencies. The hub serves it at /client.js:
 *
 *   import {HubClient} from "/client.js";
 *   const hub = new HubClient("ws://127.0.0.1:8600/ws");
 *   hub.addEventListener("messages", (e) => queueForNextAnimationFrame(e.detail));
 *   hub.addEventListener("error", (e) => showBanner(e.detail.message));
 *   hub.connect();
 *   await hub.subscribe(["trades.SPY", "bars.1m.SPY"]);
 *
 * What it owns (the same contract as the Python client, realtime/client.py):
 *  - requests with ids: subscribe/unsubscribe/list/ping return promises settled by the reply
 *    with that id; an `error` reply rejects with a RequestError. Requests are idempotent on the
 *    hub, so one cut off by a dropped connection is sent again after reconnecting.
 *  - batch frames unpacked; every message checked; a frame or message that breaks the protocol
 *    is an `error` event (kind "malformed") and the connection stays.
 *  - per-channel seq tracking: a message at or below the position held is a duplicate and is
 *    dropped; a seq jump on an ordered-lossless channel that the hub did not announce with a
 *    `gap` status is a `gap` event {channel, epoch, from_seq, to_seq, count}.
 *  - reconnect with jittered exponential backoff, then one subscribe of every channel with
 *    `resume` from the last (epoch, seq) held; the hub's answer per channel is a `status` event
 *    and a `recovered` or `not_recovered` event.
 *  - heartbeat watchdog: no frame for missedHeartbeats × heartbeatIntervalMs drops the socket
 *    and reconnects.
 *  - render-friendly events: `messages` carries the data messages of one frame as one array
 *    (a batch of hundreds is one event; a status, gap or error inside the frame splits it, so
 *    the order is kept); `message` fires per message for simple pages. Listeners
 *    run synchronously on the socket's message task: keep them cheap, store what arrived and
 *    paint on requestAnimationFrame.
 *
 * Events (CustomEvent, payload in `detail`): open {url, reconnects}, close {code, reason,
 * retryInMs}, messages [msg...], message msg, status msg, recovered msg, not_recovered msg,
 * gap {...}, error {kind: "malformed"|"server"|"schema", message, channel, error, frame}.
 *
 * Limits: JSON numbers are doubles, so the ns stamps in `ts` (19 digits) are rounded to ±128 ns
 * and integers above 2^53 in `data` lose precision. A channel never heard from has no position,
 * so what was published while disconnected is not recovered for it. Payloads are checked only
 * by the `validate(channel, data)` option (throw to reject: an `error` event of kind "schema";
 * the message is dropped, its position still advances).
 */

/** Every stream kind and its delivery class: protocol/channels.py STREAM_KINDS (a test keeps
 * the two equal). */
export const STREAM_KINDS = Object.freeze({
  trades: "ordered-lossless", bars: "ordered-lossless", quotes: "latest-value",
  book: "latest-value", vpin: "latest-value", evpin: "latest-value", features: "latest-value",
  factor: "latest-value", ml: "latest-value", signals: "latest-value",
  intents: "ordered-lossless", orders: "ordered-lossless", fills: "ordered-lossless",
  positions: "latest-value", pnl: "latest-value", risk: "latest-value",
  "risk.denials": "ordered-lossless", analytics: "latest-value", collateral: "latest-value",
  "collateral.calls": "ordered-lossless", backtest: "latest-value",
});

/** The kind of a channel name: the two-segment kind wins (protocol/channels.py kind_of). */
export function kindOf(name) {
  const [first, second] = name.split(".");
  const longer = first + "." + second;
  return second !== undefined && longer in STREAM_KINDS ? longer : first;
}

export function deliveryOf(name) {
  return STREAM_KINDS[kindOf(name)] || "latest-value";
}

/** A JSON Schema subset enough for protocol/schemas.py: type, required, properties,
 * additionalProperties, items (schema or tuple), prefixItems, min/maxItems, anyOf, const, enum,
 * $ref; protocol/schemas.py check_payload reads the same subset. */
function makeChecker(components) {
  const resolve = (s) => {
    while (s && s.$ref) s = components[s.$ref.split("/").pop()] || {};
    return s === undefined || s === null ? {} : s;  // false stays false: nothing allowed
  };
  const typeOk = (t, v) => {
    switch (t) {
      case "null": return v === null;
      case "integer": return Number.isInteger(v);
      case "number": return typeof v === "number";
      case "string": return typeof v === "string";
      case "boolean": return typeof v === "boolean";
      case "array": return Array.isArray(v);
      case "object": return v !== null && typeof v === "object" && !Array.isArray(v);
      default: return true;
    }
  };
  const check = (schema, v, path) => {
    const s = resolve(schema);
    if (s === true || s === undefined) return;
    if (s === false) throw new Error(path + ": not allowed");
    if (s.anyOf) {
      const ok = s.anyOf.some((alt) => { try { check(alt, v, path); return true; } catch (e) { return false; } });
      if (!ok) throw new Error(path + ": matches none of the allowed forms");
    }
    if (s.type !== undefined) {
      const types = Array.isArray(s.type) ? s.type : [s.type];
      if (!types.some((t) => typeOk(t, v))) throw new Error(path + ": expected " + types.join(" or ") + ", got " + JSON.stringify(v));
    }
    if ("const" in s && v !== s.const) throw new Error(path + ": must be " + JSON.stringify(s.const));
    if (s.enum && !s.enum.includes(v)) throw new Error(path + ": not one of " + s.enum.join(", "));
    if (Array.isArray(v)) {
      if (s.minItems !== undefined && v.length < s.minItems) throw new Error(path + ": fewer than " + s.minItems + " items");
      if (s.maxItems !== undefined && v.length > s.maxItems) throw new Error(path + ": more than " + s.maxItems + " items");
      const head = Array.isArray(s.items) ? s.items : (s.prefixItems || []);
      head.forEach((it, i) => i < v.length && check(it, v[i], path + "[" + i + "]"));
      const rest = Array.isArray(s.items) ? s.additionalItems : s.items;
      if (rest !== undefined) v.forEach((x, i) => i >= head.length && check(rest, x, path + "[" + i + "]"));
    } else if (v !== null && typeof v === "object") {
      for (const k of s.required || []) if (!(k in v)) throw new Error(path + "." + k + ": missing");
      const props = s.properties || {};
      for (const [k, x] of Object.entries(v)) {
        if (k in props) check(props[k], x, path + "." + k);
        else if (s.additionalProperties !== undefined && s.additionalProperties !== true) check(s.additionalProperties, x, path + "." + k);
      }
    }
  };
  return check;
}

/** A `validate` option built from the hub's AsyncAPI document (`GET /asyncapi.json`): each
 * payload is checked against its stream kind's schema (the platform's own, protocol/schemas.py);
 * a mismatch throws naming the JSON path (`data.p: missing`), which the client turns into an
 * `error` event of kind "schema". A channel of no known kind passes.
 *
 *   const doc = await (await fetch("/asyncapi.json")).json();
 *   const hub = new HubClient(url, {validate: payloadChecker(doc)});
 */
export function payloadChecker(asyncapi) {
  const components = asyncapi.components.schemas, messages = asyncapi.components.messages;
  const check = makeChecker(components);
  const byKind = new Map();
  for (const channel of Object.values(asyncapi.channels)) {
    const ref = channel.messages && channel.messages.update && channel.messages.update.$ref;
    const message = ref && messages[ref.split("/").pop()];
    const data = message && message.payload && message.payload.properties && message.payload.properties.data;
    if (data) byKind.set(channel.title, data);
  }
  return (channel, data) => {
    const schema = byKind.get(kindOf(channel));
    if (schema) check(schema, data, "data");
  };
}

export const DEFAULTS = Object.freeze({
  heartbeatIntervalMs: 5000,  // the hub's heartbeat_interval_s
  missedHeartbeats: 3,        // periods of silence before reconnecting
  reconnectMinMs: 250,
  reconnectMaxMs: 10000,
  requestTimeoutMs: 10000,    // a request and its reply, reconnects included
  snapshot: true,             // current value of latest-value channels on subscribe
  validate: null,             // (channel, data) => void; throw to reject (see payloadChecker)
  random: Math.random,        // backoff jitter (injectable for tests)
});

const STATES = new Set(["lagging", "conflated", "gap", "stale", "live", "recovered", "not_recovered"]);

/** The hub answered a request with an `error` message (kept in `.error`). */
export class RequestError extends Error {
  constructor(error) {
    super(error.code + ": " + error.message);
    this.name = "RequestError";
    this.error = error;
  }
}

class ConnectionLost extends Error {}

function isInt(v) { return Number.isInteger(v); }

/** Throws when a data or status message breaks protocol v1; returns it otherwise. */
function check(m) {
  if (m === null || typeof m !== "object" || Array.isArray(m)) throw new Error("a message must be a JSON object");
  switch (m.type) {
    case "update": case "snapshot": {
      if (typeof m.channel !== "string" || typeof m.epoch !== "string" || !m.epoch) throw new Error("channel and epoch must be strings");
      if (!isInt(m.seq) || m.seq <= 0) throw new Error("seq must be a positive integer, not " + JSON.stringify(m.seq));
      const ts = m.ts;
      if (!ts || !["event", "publish", "hub"].every((k) => typeof ts[k] === "number")) throw new Error("ts stamps must be numbers");
      if (!("data" in m)) throw new Error("data message without 'data'");
      return m;
    }
    case "status":
      if (typeof m.channel !== "string") throw new Error("channel must be a string");
      if (!STATES.has(m.state)) throw new Error("unknown status state " + JSON.stringify(m.state));
      return m;
    case "ack": case "error": case "pong": case "heartbeat":
      return m;
    default:
      throw new Error("unknown server message type " + JSON.stringify(m.type));
  }
}

export class HubClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = Object.assign({}, DEFAULTS, options);
    this.state = "closed";  // connecting | open | reconnecting | closed
    this.stats = {frames: 0, messages: 0, heartbeats: 0, duplicates: 0, gaps: 0, errors: 0, connects: 0, ignored: 0};
    this._channels = new Map();  // name -> {lossless, epoch, seq, received, missing, duplicates, announcedTo, announcedEpoch}
    this._pending = new Map();   // id -> {resolve, reject, resubscribe}
    this._nextId = 1;
    this._ws = null;
    this._failures = 0;
    this._retryTimer = null;
    this._watchTimer = null;
    this._lastFrame = 0;
    this._closed = true;
    this._waiters = [];          // resolvers waiting for an open connection
    this._frameData = [];        // data messages of the frame being read, not yet dispatched
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /** Start connecting (and keep reconnecting until close()). */
  connect() {
    if (!this._closed) return this;
    this._closed = false;
    this._open();
    return this;
  }

  /** Close (1000) and stop reconnecting. */
  close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000, "client closed");
    this._setState("closed");
    this._emit("close", {code: 1000, reason: "closed by the client", retryInMs: null});
    for (const w of this._waiters.splice(0)) w.reject(new Error("client closed"));
  }

  /** Drop the socket as a network fault would; the client reconnects and resumes. */
  dropConnection(reason = "dropped by the application") {
    if (this._ws) this._lost(this._ws, null, reason);
  }

  get connected() { return this.state === "open"; }

  _open() {
    let ws;
    try { ws = new WebSocket(this.url); } catch (e) {
      this._closed = true;
      this._setState("closed");
      this._error("malformed", "bad URL " + this.url + ": " + e.message);
      return;
    }
    this._ws = ws;
    this._setState(this.stats.connects ? "reconnecting" : "connecting");
    let opened = false;
    ws.onopen = () => {
      if (ws !== this._ws) return;
      opened = true;
      this._failures = 0;
      this.stats.connects += 1;
      this._lastFrame = performance.now();
      this._setState("open");
      const period = this.options.heartbeatIntervalMs;
      this._watchTimer = setInterval(() => this._watch(ws), Math.max(10, period / 2));
      this._emit("open", {url: this.url, reconnects: this.stats.connects - 1});
      for (const w of this._waiters.splice(0)) w.resolve();
      this._resubscribe();
    };
    ws.onmessage = (ev) => { if (ws === this._ws) this._onFrame(ev.data); };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._lost(ws, opened ? ev.code : null, opened ? (ev.reason || "closed") : "connect failed");
    };
  }

  _detach() {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._watchTimer);
    if (ws) { ws.onopen = ws.onmessage = ws.onclose = null; }
    for (const p of this._pending.values()) p.reject(new ConnectionLost("connection lost"));
    this._pending.clear();
  }

  _lost(ws, code, reason) {
    const wasOpen = this.state === "open";
    this._detach();
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
      try { ws.close(4000, reason.slice(0, 100)); } catch (e) { /* already closing */ }
    }
    if (this._closed) return;
    const o = this.options;
    const failures = wasOpen ? 0 : this._failures++;
    const delay = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** failures) * (0.8 + 0.4 * o.random());
    this._setState("reconnecting");
    this._emit("close", {code, reason, retryInMs: delay});
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _watch(ws) {
    if (ws !== this._ws) return;
    const limit = this.options.heartbeatIntervalMs * this.options.missedHeartbeats;
    if (performance.now() - this._lastFrame > limit) {
      this._lost(ws, null, "heartbeat timeout: no frame for " + limit / 1000 + " s");
    }
  }

  _setState(state) { this.state = state; }

  /** Dispatch one event; data messages of the current frame go out first, so that listeners
   * see data, statuses, gaps and errors in the order the hub sent them. */
  _emit(type, detail) {
    if (type !== "message" && this._frameData.length) {
      this.dispatchEvent(new CustomEvent("messages", {detail: this._frameData.splice(0)}));
    }
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }

  _error(kind, message, extra = {}) {
    this.stats.errors += 1;
    this._emit("error", Object.assign({kind, message, channel: null, error: null, frame: null}, extra));
  }

  // --- state the application reads -----------------------------------------------------------

  /** {channel: {epoch, seq}}: the last message held per channel (what a reconnect resumes). */
  positions() {
    const out = {};
    for (const [name, c] of this._channels) if (c.epoch !== null && c.seq > 0) out[name] = {epoch: c.epoch, seq: c.seq};
    return out;
  }

  /** Seq bookkeeping of a subscribed channel: {lossless, epoch, seq, received, missing, duplicates}. */
  channel(name) {
    const c = this._channels.get(name);
    return c ? {lossless: c.lossless, epoch: c.epoch, seq: c.seq, received: c.received, missing: c.missing, duplicates: c.duplicates} : null;
  }

  get subscriptions() { return [...this._channels.keys()]; }

  // --- requests ------------------------------------------------------------------------------

  /** Subscribe; resolves with the ack, rejects with RequestError (then nothing changed).
   * `resume` gives positions to start from, e.g. saved positions(). */
  async subscribe(channels, {resume} = {}) {
    const names = [...new Set(channels)];
    const added = names.filter((n) => !this._channels.has(n));
    for (const n of added) {
      const c = this._track(n);
      const pos = resume && resume[n];
      if (pos) { c.epoch = pos.epoch; c.seq = pos.seq; }
    }
    try {
      return await this._request(() => this._subscribeBody(names));
    } catch (e) {
      for (const n of added) this._channels.delete(n);
      throw e;
    }
  }

  /** Unsubscribe and forget the positions; resolves with the ack, or null when not connected. */
  async unsubscribe(channels) {
    const names = [...new Set(channels)];
    for (const n of names) this._channels.delete(n);
    if (!this.connected) return null;
    try { return await this._send({op: "unsubscribe", channels: names}); } catch (e) {
      if (e instanceof ConnectionLost) return null;
      throw e;
    }
  }

  /** Every channel the hub carries (that the token grants): [{name, delivery, epoch, seq,
   * subscribers}], by name, read page by page (`after` = the previous page's `next`). */
  async list() {
    const channels = [];
    let after = null;
    do {
      const body = after === null ? {op: "list"} : {op: "list", after};
      const ack = await this._request(() => body);
      channels.push(...(ack.available || []));
      after = typeof ack.next === "string" ? ack.next : null;
    } while (after !== null);
    return channels;
  }

  /** Round trip of one ping, ms. */
  async ping() {
    const started = performance.now();
    await this._request(() => ({op: "ping"}));
    return performance.now() - started;
  }

  _track(name) {
    const c = {lossless: deliveryOf(name) === "ordered-lossless", epoch: null, seq: 0, received: 0,
               missing: 0, duplicates: 0, announcedTo: 0, announcedEpoch: null};
    this._channels.set(name, c);
    return c;
  }

  _subscribeBody(names) {
    const body = {op: "subscribe", channels: names};
    const resume = {};
    for (const n of names) {
      const c = this._channels.get(n);
      if (c && c.epoch !== null && c.seq > 0) resume[n] = {epoch: c.epoch, seq: c.seq};
    }
    if (Object.keys(resume).length) body.resume = resume;
    if (!this.options.snapshot) body.snapshot = false;
    return body;
  }

  async _request(build) {
    const deadline = performance.now() + this.options.requestTimeoutMs;
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("request timed out");
      await this._whenOpen(left);
      try {
        return await this._send(build(), {timeoutMs: deadline - performance.now()});
      } catch (e) {
        if (!(e instanceof ConnectionLost)) throw e;
      }
    }
  }

  _whenOpen(timeoutMs) {
    if (this.connected) return Promise.resolve();
    if (this._closed) return Promise.reject(new Error("client not connected (call connect())"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("request timed out")), timeoutMs);
      this._waiters.push({resolve: () => { clearTimeout(timer); resolve(); },
                          reject: (e) => { clearTimeout(timer); reject(e); }});
    });
  }

  _send(body, {resubscribe = false, timeoutMs = this.options.requestTimeoutMs} = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new ConnectionLost("not connected"));
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new Error("request timed out"));
      }, timeoutMs);
      const settle = (fn) => (v) => { clearTimeout(timer); fn(v); };
      this._pending.set(id, {resolve: settle(resolve), reject: settle(reject), resubscribe});
      ws.send(JSON.stringify(Object.assign({id}, body)));
    });
  }

  /** After (re)connecting: every channel again with resume; a refused channel is dropped (an
   * error event says which) and the rest sent again, as subscribe is all or nothing. */
  _resubscribe() {
    if (!this._channels.size) return;
    this._send(this._subscribeBody([...this._channels.keys()]), {resubscribe: true}).catch((e) => {
      if (e instanceof RequestError && this._channels.has(e.error.channel)) {
        this._channels.delete(e.error.channel);
        this._resubscribe();
      }
    });
  }

  // --- inbound -------------------------------------------------------------------------------

  _onFrame(text) {
    this.stats.frames += 1;
    this._lastFrame = performance.now();
    if (typeof text !== "string") { this._error("malformed", "binary frame", {frame: "<binary>"}); return; }
    let obj;
    try { obj = JSON.parse(text); } catch (e) {
      this._error("malformed", "not valid JSON: " + e.message, {frame: text.slice(0, 200)});
      return;
    }
    let items = [obj];
    if (obj !== null && typeof obj === "object" && obj.type === "batch") {
      if (!Array.isArray(obj.messages)) { this._error("malformed", "batch without a 'messages' list", {frame: text.slice(0, 200)}); return; }
      items = obj.messages;
    }
    const data = this._frameData;
    for (const item of items) {
      let m;
      try { m = check(item); } catch (e) {
        this._error("malformed", e.message, {frame: JSON.stringify(item).slice(0, 200)});
        continue;
      }
      this._onMessage(m, data);
    }
    if (data.length) this.dispatchEvent(new CustomEvent("messages", {detail: data.splice(0)}));
  }

  _onMessage(m, data) {
    switch (m.type) {
      case "update": case "snapshot": this._onData(m, data); break;
      case "status": {
        const c = this._channels.get(m.channel);
        if (!c) { this.stats.ignored += 1; break; }
        if (m.state === "gap" && isInt(m.to_seq)) { c.announcedTo = m.to_seq; c.announcedEpoch = m.epoch; }
        this._emit("status", m);
        if (m.state === "recovered" || m.state === "not_recovered") this._emit(m.state, m);
        break;
      }
      case "heartbeat": this.stats.heartbeats += 1; break;
      case "error": {
        this._error("server", m.message, {channel: m.channel || null, error: m});
        const p = this._pending.get(m.id);
        if (p) { this._pending.delete(m.id); p.reject(new RequestError(m)); }
        break;
      }
      default: {  // ack, pong
        const p = this._pending.get(m.id);
        if (p) { this._pending.delete(m.id); p.resolve(m); }
      }
    }
  }

  _onData(m, data) {
    const c = this._channels.get(m.channel);
    if (!c) { this.stats.ignored += 1; return; }
    if (m.epoch === c.epoch && m.seq <= c.seq) {
      c.duplicates += 1; this.stats.duplicates += 1;
      return;
    }
    if (m.epoch === c.epoch && m.seq > c.seq + 1 && c.lossless) {
      c.missing += m.seq - c.seq - 1;
      let from = c.seq + 1;
      if (c.announcedEpoch === m.epoch) from = Math.max(from, c.announcedTo + 1);
      if (from < m.seq) {
        this.stats.gaps += 1;
        this._emit("gap", {channel: m.channel, epoch: m.epoch, from_seq: from, to_seq: m.seq - 1, count: m.seq - from});
      }
    }
    c.epoch = m.epoch; c.seq = m.seq; c.received += 1;
    c.announcedTo = 0; c.announcedEpoch = null;
    this.stats.messages += 1;
    const validate = this.options.validate;
    if (validate) {
      try { validate(m.channel, m.data); } catch (e) {
        this._error("schema", String(e && e.message || e), {channel: m.channel});
        return;
      }
    }
    data.push(m);
    this._emit("message", m);
  }
}
