// The seeds' own session policies around an unmodified whatsapp-web.js, for
// `wasup bench --versus whatsapp-web.js`. One process runs WASUP_CLIENTS
// sessions (clients `bench-0`, `bench-1`, …, each with its LocalAuth profile
// under WASUP_WWEBJS_DIR), each following, as the seed documents write them:
//
// - 002 (session persistence): on `disconnected`, a logout (`LOGOUT`) is
//   not retried (LocalAuth has wiped the profile; the library offers a new
//   QR by itself); any other reason is a connection loss, retried with a
//   backoff of 5 s, 10 s, … capped at 30 s, at most 5 attempts, the count
//   reset on `ready`.
// - 003 (connection persistence): a 30 s heartbeat calls `getState()`;
//   `CONNECTED` or `OPENING` is healthy, anything else is a failure, and
//   after 3 failures in a row it reconnects (through 002's backoff) if the
//   profile still exists, else it waits for a QR.
// - 001 (API gateway): a 30 s health check; a `getState()` that fails or
//   does not answer ("Session closed") restarts the client at once (destroy,
//   new client, initialize). Sends go through a queue, one at a time, each
//   retried 5 s after a failure until it is sent or 2 minutes old; a
//   "Session closed" error while sending also starts the recovery.
//
// Protocol: one JSON object per line.
// - stdin: {"cmd": "send", "client": i, "to": "<digits>", "body": "…"}
// - stdout: {"ev": "qr", "client", "qr"}, {"ev": "status", "client",
//   "status", "why"}, {"ev": "queue", "client", "pending"}, {"ev": "sent" |
//   "dropped", "client", "body"}; every line has "at_ms" (Unix epoch ms).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { loadLibrary, newClient } = require('./sim');

const SIM = process.env.WASUP_SIM;
const DATA = process.env.WASUP_WWEBJS_DIR;
const CLIENTS = Number(process.env.WASUP_CLIENTS || 1);
const GAP_MS = Number(process.env.WASUP_SEND_GAP_MS || 1000);
if (!SIM || !DATA) {
  console.error('set WASUP_SIM and WASUP_WWEBJS_DIR');
  process.exit(2);
}
const lib = loadLibrary(SIM);

const HEARTBEAT_MS = 30_000; // 003
const HEALTH_MS = 30_000; // 001
const HEARTBEAT_FAILURES = 3; // 003
const BACKOFF_STEP_MS = 5_000; // 002: 5 s, 10 s, 15 s, …
const BACKOFF_CAP_MS = 30_000; // 002
const MAX_ATTEMPTS = 5; // 002
const QUEUE_TIMEOUT_MS = 120_000; // 001
const QUEUE_RETRY_MS = 5_000; // 001
const STATE_TIMEOUT_MS = 10_000; // 001: "Failed to recover session within timeout"

function emit(ev) {
  process.stdout.write(JSON.stringify({ ...ev, at_ms: Date.now() }) + '\n');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sessionClosed = (e) => /Session closed|Target closed|detached|Connection closed|crashed|not opened/i.test(String(e && e.message));

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms (Session closed?)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

class Session {
  constructor(i) {
    this.i = i;
    this.clientId = `bench-${i}`;
    this.status = 'starting';
    this.attempts = 0;
    this.failures = 0;
    this.queue = [];
    this.restarting = false;
    this.reconnectTimer = null;
    this.client = null;
  }

  setStatus(status, why) {
    if (status === this.status) return;
    this.status = status;
    emit({ ev: 'status', client: this.i, status, why });
  }

  profileExists() {
    return fs.existsSync(path.join(DATA, `session-${this.clientId}`, 'Default'));
  }

  async start() {
    const client = newClient(lib, { dataPath: DATA, clientId: this.clientId });
    this.client = client;
    client.on('qr', (qr) => {
      if (client !== this.client) return;
      this.setStatus('qr', 'waiting for a scan');
      emit({ ev: 'qr', client: this.i, qr });
    });
    client.on('ready', () => {
      if (client !== this.client) return;
      this.attempts = 0; // 002: reset on a successful connection
      this.failures = 0;
      this.setStatus('connected', 'ready');
    });
    client.on('disconnected', (reason) => {
      if (client !== this.client) return;
      if (reason === 'LOGOUT') {
        // 002: a logout is not retried; the library shows a new QR.
        this.setStatus('logged_out', 'LOGOUT');
      } else {
        this.setStatus('disconnected', String(reason));
        this.scheduleReconnect(`disconnected: ${reason}`);
      }
    });
    try {
      await client.initialize();
    } catch (e) {
      if (client !== this.client) return;
      this.setStatus('disconnected', `initialize failed: ${e && e.message}`);
      this.scheduleReconnect('initialize failed');
    }
  }

  /** 002: backoff 5 s → 30 s, at most 5 attempts. */
  scheduleReconnect(why) {
    if (this.reconnectTimer || this.restarting) return;
    if (this.attempts >= MAX_ATTEMPTS) {
      this.setStatus('failed', 'Maximum initialization attempts reached');
      return;
    }
    this.attempts += 1;
    const delay = Math.min(BACKOFF_STEP_MS * this.attempts, BACKOFF_CAP_MS);
    this.setStatus('reconnecting', `${why}; attempt ${this.attempts} in ${delay} ms`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.restart(why);
    }, delay);
  }

  /** 001: graceful restart, cleanup first. */
  async restart(why) {
    if (this.restarting) return;
    this.restarting = true;
    this.setStatus('restarting', why);
    const old = this.client;
    this.client = null;
    try {
      if (old) await withTimeout(old.destroy(), STATE_TIMEOUT_MS, 'destroy');
    } catch (e) {
      // The browser may be gone already; kill what is left of it.
      try {
        old && old.pupBrowser && old.pupBrowser.process() && old.pupBrowser.process().kill('SIGKILL');
      } catch (e2) {
        /* already gone */
      }
    }
    this.restarting = false;
    await this.start();
  }

  async state() {
    if (!this.client || !this.client.pupPage) throw new Error('Session closed: no page');
    return withTimeout(this.client.getState(), STATE_TIMEOUT_MS, 'getState');
  }

  /** 003's heartbeat. */
  async heartbeat() {
    if (this.restarting || this.reconnectTimer || !this.client || this.status === 'qr' || this.status === 'failed') return;
    let state = null;
    try {
      state = await this.state();
    } catch (e) {
      state = null;
    }
    if (state === 'CONNECTED' || state === 'OPENING') {
      this.failures = 0;
      if (this.status === 'unstable' || this.status === 'disconnected') this.setStatus('connected', `heartbeat: ${state}`);
      return;
    }
    this.failures += 1;
    if (this.status === 'connected') this.setStatus('unstable', `heartbeat: ${state}`);
    if (this.failures >= HEARTBEAT_FAILURES) {
      this.failures = 0;
      if (this.profileExists()) this.scheduleReconnect(`${HEARTBEAT_FAILURES} heartbeat failures`);
      else this.setStatus('logged_out', 'no saved session: needs a QR');
    }
  }

  /** 001's health check: a closed session is restarted at once. */
  async healthCheck() {
    if (this.restarting || this.reconnectTimer || !this.client || this.status === 'failed') return;
    try {
      await this.state();
    } catch (e) {
      this.setStatus('unhealthy', `Session health check failed: ${e && e.message}`);
      this.restart('Session health check failed');
    }
  }

  /** 001's message queue: one at a time, retried, 2 minute timeout. */
  async runQueue() {
    for (;;) {
      const head = this.queue[0];
      if (!head) {
        await sleep(100);
        continue;
      }
      if (Date.now() - head.since > QUEUE_TIMEOUT_MS) {
        this.queue.shift();
        emit({ ev: 'dropped', client: this.i, body: head.body });
        emit({ ev: 'queue', client: this.i, pending: this.queue.length });
        continue;
      }
      if (this.status !== 'connected' && this.status !== 'unstable') {
        await sleep(200);
        continue;
      }
      try {
        await withTimeout(this.client.sendMessage(`${head.to}@c.us`, head.body), QUEUE_RETRY_MS * 6, 'sendMessage');
        this.queue.shift();
        emit({ ev: 'sent', client: this.i, body: head.body });
        emit({ ev: 'queue', client: this.i, pending: this.queue.length });
        await sleep(GAP_MS);
      } catch (e) {
        if (sessionClosed(e) && !this.restarting && !this.reconnectTimer) this.restart(`send failed: ${e.message}`);
        await sleep(QUEUE_RETRY_MS);
      }
    }
  }
}

const sessions = Array.from({ length: CLIENTS }, (_, i) => new Session(i));
process.on('unhandledRejection', (e) => emit({ ev: 'error', error: String(e && e.message ? e.message : e) }));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    return;
  }
  const s = sessions[cmd.client];
  if (cmd.cmd === 'send' && s) {
    s.queue.push({ to: String(cmd.to), body: String(cmd.body), since: Date.now() });
    emit({ ev: 'queue', client: s.i, pending: s.queue.length });
  }
}).on('close', () => {
  // The bench closed our stdin: shut every browser down and leave.
  Promise.allSettled(sessions.map((s) => s.client && withTimeout(s.client.destroy(), 10_000, 'destroy'))).then(() => process.exit(0));
});

for (const s of sessions) {
  s.start();
  s.runQueue();
  setInterval(() => s.heartbeat(), HEARTBEAT_MS);
  setInterval(() => s.healthCheck(), HEALTH_MS);
}
