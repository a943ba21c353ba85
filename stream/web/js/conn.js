// The WebSocket connection to /v1/ws: reconnects with exponential backoff and
// jitter, keeps the connection alive with {"op":"ping"}, splits every frame on
// '\n' and hands each parsed message to the owner.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const PING_EVERY_MS = 15000;
const PONG_TIMEOUT_MS = 20000; // a ping followed by this long of silence: reconnect

/**
 * Connection owns one WebSocket at a time. Callbacks:
 *   onopen()             a new socket is open (subscribe here)
 *   onmessage(msg, n)    one parsed message; n is the byte length of its line
 *   onstatus(state, info) 'connecting' | 'open' | 'waiting' (info.retryMs) | 'closed'
 *   onpong(rttMs)
 */
export class Connection {
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.ws = null;
    this.nextId = 1;
    this.attempt = 0;
    this.pings = new Map(); // ping id -> performance.now() when sent
    this.lastRx = 0;
    this.lastPing = 0; // when the oldest ping not followed by any message was sent
    this.timer = null; // reconnect timer
    this.keepalive = null;
    this.stopped = false;
    this.opens = 0;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    this.timer = null;
    this.h.onstatus?.('connecting', { attempt: this.attempt });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleReconnect(String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.opens++;
      this.lastRx = performance.now();
      this.lastPing = 0;
      this.pings.clear();
      this.h.onstatus?.('open', {});
      this.keepalive = setInterval(() => this.tick(), PING_EVERY_MS);
      this.h.onopen?.();
      this.ping(); // a first round trip time at once
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastRx = performance.now();
      if (typeof ev.data !== 'string') return; // the protocol sends text frames only
      // A frame carries one message or several separated by '\n'.
      for (const line of ev.data.split('\n')) {
        if (line === '') continue;
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          this.h.onbadline?.(line);
          continue;
        }
        if (msg && msg.type === 'pong') this.pong(msg);
        this.h.onmessage(msg, line.length);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.cleanup();
      if (!this.stopped) this.scheduleReconnect(closeReason(ev));
    };
    ws.onerror = () => {}; // onclose follows and reconnects
  }

  cleanup() {
    clearInterval(this.keepalive);
    this.keepalive = null;
    this.ws = null;
  }

  scheduleReconnect(reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(base / 2 + Math.random() * base / 2); // "equal jitter"
    this.attempt++;
    this.h.onstatus?.('waiting', { retryMs: delay, reason });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /**
   * tick sends a keepalive ping, and drops a connection on which nothing at
   * all arrived since a ping sent long ago (the server answers every ping at
   * once). Judging by the last ping, not by a fixed silence, keeps a quiet
   * market or a hidden tab, whose timers the browser slows down, connected.
   */
  tick() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    if (this.lastPing > this.lastRx && now - this.lastPing > PONG_TIMEOUT_MS) {
      this.drop('no answer to ping');
      return;
    }
    this.ping();
  }

  ping() {
    const id = this.send({ op: 'ping' });
    if (!id) return;
    const now = performance.now();
    if (!(this.lastPing > this.lastRx)) this.lastPing = now; // keep the oldest unanswered one
    this.pings.set(id, now);
    if (this.pings.size > 16) this.pings.delete(this.pings.keys().next().value);
  }

  pong(msg) {
    const sent = this.pings.get(msg.id);
    if (sent === undefined) return;
    this.pings.delete(msg.id);
    this.h.onpong?.(performance.now() - sent);
  }

  /** send assigns the next id to an op, sends it and returns the id (0 when not open). */
  send(op) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return 0;
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ ...op, id }));
    return id;
  }

  get open() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** drop closes the current socket as if the network failed; a reconnect follows. */
  drop(reason) {
    const ws = this.ws;
    if (!ws) return;
    this.cleanup();
    ws.onclose = null;
    ws.close(4000, reason.slice(0, 100));
    if (!this.stopped) this.scheduleReconnect(reason);
  }
}

function closeReason(ev) {
  const names = { 1001: 'server shutting down', 1006: 'connection lost', 1008: 'policy', 1009: 'message too big', 4008: 'slow consumer' };
  const why = ev.reason || names[ev.code] || '';
  return why ? `${ev.code} ${why}` : String(ev.code);
}
