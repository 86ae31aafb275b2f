// The simulated WhatsApp Web page: the module surface a client drives
// (`window.require('WAWeb…')`, `window.Debug.VERSION`), kept alive by one
// WebSocket to the simulated servers (`/ws`).
//
// The page knows nothing by itself: QR refs, login, history, acks all arrive
// over the socket, and the credential and keys live in IndexedDB, so a
// reload, a browser restart on the same profile and a network drop behave
// as they do on the real site. Frames are JSON tagged by `type` (see
// src/sim/protocol.rs).
(function () {
  'use strict';

  const BOOT_DELAY_MS = __BOOT_DELAY_MS__;
  const VERSION = '2.3000.1017054665';
  const DEVICE_PLATFORM = 'WEB';
  const DB_NAME = 'wawc';
  const DB_STORE = 'user';
  const RETRY_MS = 1000;
  const LOGOUT_CONFIRM_MS = 3000;

  // ----- events and models (Backbone-like) ----------------------------

  /** Splits `'change:a change:b'` into its names, as Backbone does. */
  function eventNames(name) {
    return typeof name === 'string' && /\s/.test(name.trim()) ? name.trim().split(/\s+/) : null;
  }

  /**
   * An event emitter: on(name, cb, ctx), off(name?, cb?), once, trigger.
   * Like Backbone, one call may name several events separated by spaces.
   */
  class Events {
    on(name, cb, ctx) {
      const names = eventNames(name);
      if (names) {
        for (const n of names) this.on(n, cb, ctx);
        return this;
      }
      if (typeof cb !== 'function') return this;
      if (!this._events) Object.defineProperty(this, '_events', { value: new Map() });
      if (!this._events.has(name)) this._events.set(name, []);
      this._events.get(name).push({ cb, ctx });
      return this;
    }
    once(name, cb, ctx) {
      const wrapper = (...args) => {
        this.off(name, wrapper);
        cb.apply(ctx === undefined ? this : ctx, args);
      };
      return this.on(name, wrapper, ctx);
    }
    off(name, cb) {
      const names = eventNames(name);
      if (names) {
        for (const n of names) this.off(n, cb);
        return this;
      }
      if (!this._events) return this;
      if (name === undefined) {
        this._events.clear();
      } else if (cb === undefined) {
        this._events.delete(name);
      } else if (this._events.has(name)) {
        this._events.set(name, this._events.get(name).filter((l) => l.cb !== cb));
      }
      return this;
    }
    trigger(name, ...args) {
      const list = this._events && this._events.get(name);
      if (!list) return this;
      for (const l of list.slice()) {
        try {
          l.cb.apply(l.ctx === undefined ? this : l.ctx, args);
        } catch (e) {
          // A failing listener must not break the page; report it like an
          // uncaught error.
          setTimeout(() => { throw e; });
        }
      }
      return this;
    }
  }

  /** A model: attributes readable as properties; set() fires change:<attr>. */
  class Model extends Events {
    constructor(attrs) {
      super();
      Object.defineProperty(this, 'attributes', { value: {} });
      Object.defineProperty(this, '_collection', { value: null, writable: true });
      for (const [k, v] of Object.entries(attrs || {})) {
        defineAttr(this, k);
        this.attributes[k] = v;
      }
    }
    get(k) { return this.attributes[k]; }
    /** The model itself (whatsapp-web.js asks for it before quoting a message). */
    unsafe() { return this; }
    set(k, v) {
      if (k !== null && typeof k === 'object') {
        for (const [kk, vv] of Object.entries(k)) this.set(kk, vv);
        return this;
      }
      if (!(k in this.attributes)) defineAttr(this, k);
      const prev = this.attributes[k];
      this.attributes[k] = v;
      if (prev !== v) {
        this.trigger('change:' + k, this, v);
        this.trigger('change', this);
      }
      return this;
    }
    serialize() {
      const out = {};
      for (const [k, v] of Object.entries(this.attributes)) out[k] = plain(v);
      return out;
    }
    trigger(name, ...args) {
      super.trigger(name, ...args);
      if (this._collection) this._collection.trigger(name, ...args);
      return this;
    }
  }

  function defineAttr(model, k) {
    if (Object.prototype.hasOwnProperty.call(model, k)) return;
    Object.defineProperty(model, k, {
      get() { return this.attributes[k]; },
      set(v) { this.set(k, v); },
      enumerable: true,
      configurable: true,
    });
  }

  function plain(v) {
    if (v instanceof Wid) return { server: v.server, user: v.user, _serialized: v._serialized };
    if (v instanceof MsgKey) {
      return { fromMe: v.fromMe, remote: plain(v.remote), id: v.id, _serialized: v._serialized };
    }
    return v;
  }

  /** A collection of models keyed by their serialized id; re-emits model events. */
  class Collection extends Events {
    constructor() {
      super();
      // Enumerable: whatsapp-web.js looks for a Map among the call
      // collection's own keys to watch new calls.
      Object.defineProperty(this, '_byId', { value: new Map(), enumerable: true });
    }
    static keyOf(id) {
      if (id === null || id === undefined) return undefined;
      if (typeof id === 'string') return id;
      if (typeof id._serialized === 'string') return id._serialized;
      return String(id);
    }
    get(id) {
      const k = Collection.keyOf(id);
      return k === undefined ? undefined : this._byId.get(k);
    }
    add(model) {
      const k = Collection.keyOf(model.id);
      const existing = this._byId.get(k);
      if (existing) return existing;
      this._byId.set(k, model);
      model._collection = this;
      this.trigger('add', model, this);
      return model;
    }
    remove(id) {
      const k = Collection.keyOf(id);
      const m = this._byId.get(k);
      if (!m) return undefined;
      this._byId.delete(k);
      m._collection = null;
      this.trigger('remove', m, this);
      return m;
    }
    reset() {
      for (const m of this._byId.values()) m._collection = null;
      this._byId.clear();
      this.trigger('reset', this);
    }
    get models() { return Array.from(this._byId.values()); }
    get length() { return this._byId.size; }
    getModelsArray() { return this.models; }
    filter(fn) { return this.models.filter(fn); }
    forEach(fn) { this.models.forEach(fn); }
    /** The model with this id, as a promise; rejects when the page has none. */
    find(id) {
      const m = this.get(id);
      return m ? Promise.resolve(m) : Promise.reject(new Error('no model with id ' + Collection.keyOf(id)));
    }
  }

  // ----- wids and message keys ---------------------------------------

  /** A WhatsApp id: `<user>@c.us` (a person) or `<id>@g.us` (a group). */
  class Wid {
    constructor(user, server) {
      this.server = server;
      this.user = user;
      this._serialized = user + '@' + server;
    }
    toString() { return this._serialized; }
    isUser() { return this.server === 'c.us'; }
    isGroup() { return this.server === 'g.us'; }
    // The simulator knows only `c.us` and `g.us` ids: no LIDs, status
    // broadcasts or newsletters (createWid refuses them).
    isLid() { return false; }
    isStatus() { return false; }
    isBroadcast() { return false; }
    isNewsletter() { return false; }
    equals(other) {
      if (other === null || other === undefined) return false;
      const s = typeof other === 'string' ? other : other._serialized;
      return s === this._serialized;
    }
  }

  function createWid(id) {
    if (id instanceof Wid) return id;
    const s = typeof id === 'string' ? id
      : (id && typeof id._serialized === 'string' ? id._serialized : null);
    let m;
    if (s !== null && (m = /^(\d{5,20})@c\.us$/.exec(s))) return new Wid(m[1], 'c.us');
    if (s !== null && (m = /^(\d+(?:-\d+)?)@g\.us$/.exec(s))) return new Wid(m[1], 'g.us');
    throw new Error('wid error: invalid wid');
  }

  /** A message key; serialises as `<fromMe>_<remote>_<id>`. */
  class MsgKey {
    constructor(opts) {
      if (!opts || typeof opts !== 'object') throw new Error('MsgKey error: options required');
      let fromMe;
      if (opts.selfDir === 'out') fromMe = true;
      else if (opts.selfDir === 'in') fromMe = false;
      else if (typeof opts.fromMe === 'boolean') fromMe = opts.fromMe;
      else throw new Error('MsgKey error: selfDir or fromMe required');
      if (typeof opts.id !== 'string' || opts.id === '') throw new Error('MsgKey error: id required');
      this.fromMe = fromMe;
      this.remote = createWid(fromMe ? opts.to : opts.from);
      this.id = opts.id;
      if (opts.participant) this.participant = createWid(opts.participant);
      this._serialized = String(fromMe) + '_' + this.remote._serialized + '_' + this.id;
    }
    toString() { return this._serialized; }
    equals(other) {
      if (other === null || other === undefined) return false;
      const s = typeof other === 'string' ? other : other._serialized;
      return s === this._serialized;
    }
    static newId() {
      return '3EB0' + hex(randomBytes(8)).toUpperCase();
    }
    /** Parses a serialized key, `<fromMe>_<remote>_<id>`. */
    static fromString(s) {
      const m = /^(true|false)_([^_]+)_([^_]+)$/.exec(String(s));
      if (!m) throw new Error('MsgKey error: cannot parse ' + s);
      const fromMe = m[1] === 'true';
      return new MsgKey({ fromMe, from: m[2], to: m[2], id: m[3] });
    }
  }

  // ----- bytes ---------------------------------------------------------

  function randomBytes(n) {
    const b = new Uint8Array(n);
    crypto.getRandomValues(b);
    return b;
  }

  function hex(bytes) {
    return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  function encodeB64(data) {
    let bytes;
    if (data instanceof Uint8Array) bytes = data;
    else if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else if (Array.isArray(data)) bytes = Uint8Array.from(data);
    else throw new TypeError('encodeB64: bytes expected');
    let s = '';
    for (const x of bytes) s += String.fromCharCode(x);
    return btoa(s);
  }

  function decodeB64(str) {
    const s = atob(String(str));
    return Uint8Array.from(s, (c) => c.charCodeAt(0));
  }

  // ----- the models the surface exposes ---------------------------------

  const Socket = new Model({ state: 'OPENING', hasSynced: false });
  const Conn = new Model({ ref: null, connected: false, pushname: null, platform: null });
  const Cmd = new Events();
  const Chat = new Collection();
  const Msg = new Collection();
  Msg.modelClass = Model;
  /** `Msg.getMessagesById(ids)`: the ones this page has (history sync brought them). */
  Msg.getMessagesById = (ids) => Promise.resolve({ messages: (ids || []).map((id) => Msg.get(id)).filter(Boolean) });
  Msg.search = () => Promise.reject(new Error('wasup sim: message search is not simulated'));
  const Contact = new Collection();
  /** A contact model for `wid`, added if the page has none yet. */
  Contact.gadd = (wid) => Contact.get(wid) || Contact.add(new Model({ id: createWid(wid), isUser: true }));
  // Whether the presence says "online" (Stream.markAvailable / markUnavailable).
  const Stream = new Model({ available: false });
  Stream.markAvailable = () => Stream.set('available', true);
  Stream.markUnavailable = () => Stream.set('available', false);
  const OfflineMessageHandler = {
    /** Percent of the messages held while offline that reached the page. */
    getOfflineDeliveryProgress: () => (Socket.hasSynced ? 100 : 0),
  };
  const Features = {
    F: {},
    supportsFeature: () => false,
    setFeature: () => undefined,
  };
  const prefs = { autoDownloadAudio: true, autoDownloadDocuments: false, autoDownloadPhotos: true, autoDownloadVideos: false, globalOfflineNotifications: true };

  // ----- page state ------------------------------------------------------

  const page = {
    db: null,          // IndexedDB handle (null if unavailable)
    keys: null,        // this profile's key pairs and ADV secret
    cred: null,        // {device, secret, phone, pushname} once linked
    me: null,          // own Wid once connected
    ws: null,          // the live socket, if any
    gen: 0,            // socket generation: events of older sockets are ignored
    authed: false,     // the server accepted the credential on this socket
    expectClose: false,// the server announced the end of this socket
    leaving: false,    // navigating away: no more reconnects
    wantTakeover: false,// the next hello takes the account back (after CONFLICT)
    retryTimer: null,
    outbox: [],        // sends not yet accepted by the server, in order
    requests: new Map(),
    nextReq: 1,
    nextN: 1,
    nonce: hex(randomBytes(4)),
  };

  let keysReadyResolve;
  const keysReady = new Promise((resolve) => { keysReadyResolve = resolve; });

  function setState(s) {
    Socket.set('state', s);
    render();
  }

  // ----- IndexedDB ---------------------------------------------------------

  function idbOpen() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => { req.result.createObjectStore(DB_STORE); };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error('IndexedDB open blocked'));
    });
  }

  function idbRead(key) {
    if (!page.db) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const tx = page.db.transaction(DB_STORE, 'readonly');
      const r = tx.objectStore(DB_STORE).get(key);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
  }

  /** Applies puts and deletes in one durable transaction; resolves on completion. */
  function idbWrite(puts, deletes) {
    if (!page.db) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const tx = page.db.transaction(DB_STORE, 'readwrite', { durability: 'strict' });
      const store = tx.objectStore(DB_STORE);
      for (const [k, v] of Object.entries(puts || {})) store.put(v, k);
      for (const k of deletes || []) store.delete(k);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error('IndexedDB transaction aborted'));
    });
  }

  function newKeys() {
    return {
      noisePub: randomBytes(32),
      noisePriv: randomBytes(32),
      identityPub: randomBytes(32),
      identityPriv: randomBytes(32),
      adv: randomBytes(32),
      registrationId: (randomBytes(2)[0] << 6) | 1,
    };
  }

  async function loadKeys() {
    const stored = await idbRead('keys');
    if (stored && stored.noisePub && stored.identityPub && stored.adv) return stored;
    const keys = newKeys();
    await idbWrite({ keys }, []);
    return keys;
  }

  function publicKeys() {
    const k = page.keys;
    return {
      noise: encodeB64(k.noisePub),
      identity: encodeB64(k.identityPub),
      adv: encodeB64(k.adv),
      platform: DEVICE_PLATFORM,
    };
  }

  /** Forgets the credential and the keys; new keys for the next QR. */
  async function voidCredential() {
    page.cred = null;
    page.keys = newKeys();
    try {
      await idbWrite({ keys: page.keys }, ['cred']);
    } catch (e) {
      console.error('could not void the stored credential', e);
    }
  }

  // ----- the socket ----------------------------------------------------------

  function socketUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  function sendFrame(frame) {
    if (!page.ws || page.ws.readyState !== WebSocket.OPEN) return false;
    page.ws.send(JSON.stringify(frame));
    return true;
  }

  function connect(takeover) {
    if (page.leaving) return;
    clearTimeout(page.retryTimer);
    // A takeover stays wanted until a socket gets through.
    if (takeover) page.wantTakeover = true;
    const gen = ++page.gen;
    if (page.ws) {
      try { page.ws.close(); } catch (e) { /* already closed */ }
    }
    page.ws = null;
    page.authed = false;
    page.expectClose = false;
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      lost(gen);
      return;
    }
    page.ws = ws;
    ws.onopen = () => {
      if (gen !== page.gen) return;
      const cred = page.cred ? { device: page.cred.device, secret: page.cred.secret } : null;
      sendFrame({ type: 'hello', cred, keys: publicKeys(), takeover: !!page.wantTakeover });
    };
    ws.onmessage = (ev) => {
      if (gen !== page.gen) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      onFrame(frame);
    };
    ws.onclose = () => {
      if (gen !== page.gen) return;
      page.ws = null;
      page.authed = false;
      if (page.expectClose || page.leaving) return;
      lost(gen);
    };
  }

  /** The connection is gone without notice: TIMEOUT, then retry about every second. */
  function lost(gen) {
    if (gen !== page.gen || page.leaving) return;
    Conn.set('connected', false);
    if (Conn.ref !== null) Conn.set('ref', null);
    setState('TIMEOUT');
    page.retryTimer = setTimeout(() => {
      if (gen !== page.gen || page.leaving) return;
      setState('OPENING');
      connect(false);
    }, RETRY_MS + Math.floor(Math.random() * 200));
  }

  function onFrame(f) {
    switch (f.type) {
      case 'qr':
        Conn.set('ref', f.ref);
        setState('UNPAIRED');
        break;
      case 'qr_idle':
        Conn.set('ref', null);
        setState('UNPAIRED_IDLE');
        break;
      case 'paired':
        onPaired(f);
        break;
      case 'connected':
        onConnected(f);
        break;
      case 'history':
        onHistory(f.msgs || []);
        break;
      case 'sent':
        onSent(f);
        break;
      case 'ack':
        raiseAck(f.to, f.id, f.ack);
        break;
      case 'msg':
        onIncoming(f);
        break;
      case 'exists': {
        const r = page.requests.get(f.req);
        if (r) {
          page.requests.delete(f.req);
          r.resolve(!!f.exists);
        }
        break;
      }
      case 'logout':
      case 'logged_out':
        leaveLoggedOut();
        break;
      case 'stream_error':
        onStreamError(f);
        break;
      default:
        break;
    }
  }

  async function onPaired(f) {
    // The real page stores what pairing gave it and reloads itself.
    page.leaving = true;
    clearTimeout(page.retryTimer);
    // The ref stays as it was: the page reloads at once.
    setState('PAIRING');
    const cred = { device: f.device, secret: f.secret, phone: f.phone, pushname: f.pushname };
    try {
      await idbWrite({ cred, keys: page.keys }, []);
    } catch (e) {
      console.error('could not store the credential', e);
    }
    // The reload goes to the app's root: a page reached through
    // `?post_logout=1` must not come back logged in under that URL (a
    // client reads the URL to tell a logout; whatsapp-web.js wipes its
    // LocalAuth profile on it).
    location.replace('/');
  }

  function onConnected(f) {
    page.authed = true;
    page.wantTakeover = false;
    try {
      page.me = createWid(f.me);
    } catch (e) {
      page.me = null;
    }
    Conn.set({ pushname: f.pushname, platform: f.platform, connected: true });
    if (Conn.ref !== null) Conn.set('ref', null);
    setState('CONNECTED');
    for (const entry of page.outbox) transmit(entry);
    for (const r of page.requests.values()) sendFrame(r.frame);
  }

  function onHistory(msgs) {
    for (const m of msgs) {
      let to;
      let key;
      try {
        to = createWid(m.to);
        key = new MsgKey({ from: page.me, to, id: m.id, selfDir: 'out' });
      } catch (e) {
        continue;
      }
      const existing = Msg.get(key);
      if (existing) {
        raiseAck(m.to, m.id, m.ack);
        continue;
      }
      ensureChat(to, m.t);
      Msg.add(new Model({
        id: key, body: m.body, type: 'chat', from: page.me, to, t: m.t, ack: m.ack,
      }));
    }
    Socket.set('hasSynced', true);
    Cmd.trigger('offline_progress_update_from_bridge');
    render();
  }

  function onSent(f) {
    const i = page.outbox.findIndex((e) => e.n === f.n);
    const entry = i >= 0 ? page.outbox.splice(i, 1)[0] : null;
    const msg = Msg.get('true_' + f.to + '_' + f.id);
    if (f.ok) {
      if (msg && msg.ack < 1) msg.set('ack', 1);
      if (entry) entry.resolve({ messageSendResult: 'OK' });
    } else {
      if (msg) msg.set('ack', -1);
      if (entry) entry.resolve({ messageSendResult: 'ERROR', errorCode: f.error });
    }
  }

  function raiseAck(to, id, ack) {
    const msg = Msg.get('true_' + to + '_' + id);
    if (msg && typeof ack === 'number' && ack > msg.ack) msg.set('ack', ack);
  }

  function onStreamError(f) {
    page.expectClose = true;
    switch (f.kind) {
      case 'device_removed':
      case 'logged_out':
        // The credential is void: back to a QR, without a navigation.
        endSession();
        setState('UNPAIRED');
        voidCredential().then(() => {
          if (!page.leaving) connect(false);
        });
        break;
      case 'replaced':
        Conn.set('connected', false);
        setState('CONFLICT');
        break;
      case 'tos_block':
        Conn.set('connected', false);
        setState('TOS_BLOCK');
        break;
      default:
        page.expectClose = false;
        break;
    }
  }

  function endSession() {
    page.me = null;
    page.outbox = [];
    Conn.set({ ref: null, connected: false, pushname: null, platform: null });
    Socket.set('hasSynced', false);
  }

  /** Logged out (by the phone or the page): tell listeners, forget, navigate. */
  async function leaveLoggedOut() {
    if (page.leaving && page.leftLoggedOut) return;
    page.leaving = true;
    page.leftLoggedOut = true;
    page.expectClose = true;
    clearTimeout(page.retryTimer);
    Cmd.trigger('logout');
    page.cred = null;
    try {
      await idbWrite({}, ['cred', 'keys']);
    } catch (e) {
      console.error('could not delete the stored credential', e);
    }
    location.assign('/?post_logout=1');
  }

  // ----- sending -------------------------------------------------------

  function transmit(entry) {
    if (!page.authed) return;
    if (sendFrame({ type: 'send', n: entry.n, attempt: entry.attempts, ...entry.frame })) {
      entry.attempts += 1;
    }
  }

  function request(frame) {
    return new Promise((resolve, reject) => {
      const req = page.nextReq++;
      const full = { ...frame, req };
      page.requests.set(req, { frame: full, resolve, reject });
      if (page.authed) sendFrame(full);
    });
  }

  function ensureChat(wid, t) {
    return Chat.get(wid) || Chat.add(new Model({
      id: wid, t: t || Math.floor(Date.now() / 1000), unreadCount: 0, archive: false, pin: 0,
      isReadOnly: false, mute: { expiration: 0 }, formattedTitle: '+' + wid.user,
    }));
  }

  function requireLogin() {
    if (!page.cred) throw new Error('not logged in');
  }

  async function queryWidExists(wid) {
    const w = createWid(wid);
    requireLogin();
    if (!w.isUser()) return null;
    const exists = await request({ type: 'exists', jid: w._serialized });
    return exists ? { wid: w } : null;
  }

  /** `WAWebChatStateBridge`: show "typing…" (or stop) in a chat. */
  function chatState(state) {
    return async function (chatId) {
      const w = createWid(chatId);
      requireLogin();
      sendFrame({ type: 'chat_state', jid: w._serialized, state });
    };
  }

  async function findOrCreateLatestChat(wid) {
    const w = createWid(wid);
    const existing = Chat.get(w);
    if (existing) return { chat: existing, created: false };
    requireLogin();
    if (!w.isUser()) throw new Error('Chat not found');
    const exists = await request({ type: 'exists', jid: w._serialized });
    if (!exists) throw new Error('No LID for user');
    return { chat: ensureChat(w), created: true };
  }

  function addAndSendMsgToChat(chat, msgData) {
    let settle;
    const resultPromise = new Promise((resolve) => { settle = resolve; });
    const msgPromise = Promise.resolve().then(() => {
      if (!(chat instanceof Model) || !(chat.id instanceof Wid)) throw new Error('addAndSendMsgToChat: not a chat');
      if (!msgData || typeof msgData !== 'object') throw new Error('addAndSendMsgToChat: no message');
      const key = msgData.id;
      if (!(key instanceof MsgKey)) throw new Error('addAndSendMsgToChat: msg.id must be a MsgKey');
      if (!key.fromMe || !key.remote.equals(chat.id)) throw new Error('addAndSendMsgToChat: key does not belong to this chat');
      const type = msgData.type === undefined ? 'chat' : msgData.type;
      if (type !== 'chat') throw new Error('addAndSendMsgToChat: unsupported message type ' + type);
      if (typeof msgData.body !== 'string') throw new Error('addAndSendMsgToChat: body must be a string');
      requireLogin();
      const t = typeof msgData.t === 'number' ? msgData.t : Math.floor(Date.now() / 1000);
      Chat.add(chat);
      let msg = Msg.get(key);
      if (!msg) {
        msg = Msg.add(new Model({ ...msgData, id: key, type, t, ack: 0 }));
      }
      chat.set('t', t);
      const entry = {
        n: page.nonce + '-' + page.nextN++,
        frame: { id: key.id, to: key.remote._serialized, body: msgData.body, t },
        attempts: 0,
        resolve: settle,
      };
      page.outbox.push(entry);
      transmit(entry);
      return msg;
    });
    msgPromise.catch((e) => settle({ messageSendResult: 'ERROR', error: String(e && e.message) }));
    return [msgPromise, resultPromise];
  }

  /** `WAWebUpdateUnreadChatAction.sendSeen({chat})`: the chat is read. */
  function sendSeen(opts) {
    const chat = opts && opts.chat;
    if (!(chat instanceof Model) || !(chat.id instanceof Wid)) return Promise.reject(new Error('sendSeen: not a chat'));
    if (chat.unreadCount) chat.set('unreadCount', 0);
    return Promise.resolve();
  }

  /** A contact wrote to this account: a new message in its chat. */
  function onIncoming(f) {
    let from;
    let key;
    try {
      from = createWid(f.from);
      key = new MsgKey({ from, to: page.me, id: f.id, selfDir: 'in' });
    } catch (e) {
      return;
    }
    // A message the servers send again (the receipt got lost) is the same message.
    if (!Msg.get(key)) {
      const chat = ensureChat(from, f.t);
      if (f.pushname) Contact.gadd(from).set('pushname', f.pushname);
      Msg.add(new Model({
        id: key, body: f.body, type: 'chat', from, to: page.me, t: f.t, self: 'in', isNewMsg: true, notifyName: f.pushname || '',
      }));
      chat.set({ t: f.t, unreadCount: (chat.unreadCount || 0) + 1 });
    }
    sendFrame({ type: 'received', id: f.id, from: f.from });
  }

  // ----- the socket model's and Cmd's methods ---------------------------

  Socket.logout = function logout() {
    if (page.leaving) return Promise.resolve();
    if (!page.cred) return Promise.resolve();
    if (!page.authed || !sendFrame({ type: 'logout' })) {
      // No live connection: the page forgets the device on its own.
      return leaveLoggedOut();
    }
    // The server confirms with `logged_out`; do not wait forever for it.
    setTimeout(leaveLoggedOut, LOGOUT_CONFIRM_MS);
    return Promise.resolve();
  };

  Socket.takeover = function takeover() {
    if (Socket.state !== 'CONFLICT') return;
    setState('OPENING');
    connect(true);
  };

  /** Drops the connection and opens a new one (the credential is kept). */
  Socket.reconnect = function reconnect() {
    if (page.leaving || !page.cred) return;
    setState('OPENING');
    connect(false);
  };

  // Chat commands the simulated page does not carry out: it has no chat
  // list to archive, pin or star in, and no panes to open.
  for (const name of ['archiveChat', 'pinChat', 'markChatUnread', 'sendStarMsgs', 'sendUnstarMsgs']) {
    Cmd[name] = () => Promise.reject(new Error('wasup sim: Cmd.' + name + ' is not simulated'));
  }
  for (const name of ['openChatBottom', 'openChatAt', 'openDrawerMid', 'chatSearch', 'msgInfoDrawer']) {
    Cmd[name] = () => Promise.resolve(false);
  }

  Conn.canSetMyPushname = () => false;

  Cmd.refreshQR = function refreshQR() {
    if (Socket.state !== 'UNPAIRED_IDLE') return;
    sendFrame({ type: 'refresh_qr' });
  };

  Conn.serialize = function serialize() {
    return {
      ref: Conn.ref,
      pushname: Conn.pushname,
      platform: Conn.platform,
      connected: Conn.connected,
      wid: page.me ? plain(page.me) : null,
      devicePlatform: DEVICE_PLATFORM,
    };
  };

  // ----- the module registry --------------------------------------------

  /*__INERT_MODULES__*/

  /** The links in `text`: [{url, href, suspiciousCharacters}]. */
  function findLinks(text) {
    const out = [];
    const re = /\b(?:https?:\/\/|www\.)[^\s<>"']+/gi;
    let m;
    while ((m = re.exec(String(text || ''))) !== null) {
      const url = m[0].replace(/[.,;:!?)]+$/, '');
      out.push({ url, href: /^www\./i.test(url) ? 'http://' + url : url, suspiciousCharacters: new Set() });
    }
    return out;
  }

  function chatServer(chat, server) {
    return !!(chat && chat.id && chat.id.server === server);
  }

  function userWid(w) {
    const wid = createWid(w);
    if (!wid.isUser()) throw new Error('wid error: not a user wid');
    return wid;
  }

  // Pairing by phone number (an 8-character code) is not simulated; the QR is.
  const altLinking = () => Promise.reject(new Error('wasup sim: pairing by phone number is not simulated, scan the QR'));

  // The modules a client uses to log in, send, and follow its state. The
  // ones of features the simulator does not model come from page_inert.js.
  const modules = {
    ...inertModules({ Collection }),
    WAWebSocketModel: { Socket },
    WAWebConnModel: { Conn },
    WAWebCmd: { Cmd },
    WAWebStreamModel: { Stream },
    WAWebCollections: {
      Chat,
      Msg,
      Contact,
      Features,
      // Features the simulator does not model: collections that stay empty.
      GroupMetadata: new Collection(),
      Label: new Collection(),
      Status: new Collection(),
      Blocklist: new Collection(),
      BusinessProfile: new Collection(),
      ProfilePicThumb: new Collection(),
      Reactions: new Collection(),
      WAWebNewsletterCollection: new Collection(),
      NewsletterMetadataCollection: new Collection(),
    },
    WAWebWidFactory: { createWid, createWidFromWidLike: createWid, asUserWidOrThrow: userWid },
    WAWebWidToJid: {
      widToUserJid: (w) => userWid(w).user + '@s.whatsapp.net',
      widToGroupJid: (w) => {
        const wid = createWid(w);
        if (!wid.isGroup()) throw new Error('wid error: not a group wid');
        return wid._serialized;
      },
    },
    WAWebJidToWid: {
      userJidToUserWid: (jid) => userWid(String(jid).replace(/@s\.whatsapp\.net$/, '@c.us')),
      newsletterJidToWid: () => {
        throw new Error('wasup sim: newsletters (channels) are not simulated');
      },
    },
    WAWebLidMigrationUtils: {
      // The simulator has phone-number ids only: a user wid is its own PN.
      toPn: (w) => {
        try {
          return userWid(w);
        } catch (e) {
          return null;
        }
      },
    },
    WAWebApiContact: {
      // No LIDs in the simulator, so no alternate ids.
      getCurrentLid: () => null,
      getPhoneNumber: () => null,
      getAlternateUserWid: () => null,
    },
    WAWebContactCollection: { getMeContact: () => (page.me ? Contact.gadd(page.me) : undefined) },
    WAWebContactGetters: {
      getIsMe: (c) => !!(page.me && c && page.me.equals(c.id)),
      getIsUser: (c) => !!(c && c.id && c.id.isUser()),
      getIsGroup: (c) => !!(c && c.id && c.id.isGroup()),
      getIsWAContact: (c) => !!(c && c.id && c.id.isUser()),
      getUserid: (c) => (c && c.id ? c.id.user : undefined),
      getVerifiedName: () => undefined,
      getVerifiedLevel: () => undefined,
      getStatusMute: () => false,
      getName: (c) => (c ? c.name : undefined),
      getShortName: (c) => (c ? c.shortName : undefined),
      getPushname: (c) => (c ? c.pushname : undefined),
      getIsEnterprise: () => false,
    },
    WAWebFrontendContactGetters: { getIsMyContact: () => false },
    WAWebChatGetters: {
      getIsNewsletter: (chat) => chatServer(chat, 'newsletter'),
      getIsBroadcast: (chat) => chatServer(chat, 'broadcast'),
      getIsGroup: (chat) => chatServer(chat, 'g.us'),
      getIsUser: (chat) => chatServer(chat, 'c.us'),
    },
    WALinkify: { findLinks, findLink: (text) => findLinks(text)[0] || null },
    WAWebGetEphemeralFieldsMsgActionsUtils: {
      // No chat has disappearing messages on.
      getEphemeralFields: () => ({}),
    },
    WAWebQueryExistsJob: { queryWidExists },
    WAWebFindChatAction: { findOrCreateLatestChat },
    WAWebMsgKey: MsgKey,
    WAWebMsgDataFromModel: { msgDataFromMsgModel: (m) => m.serialize() },
    WAWebSendMsgChatAction: { addAndSendMsgToChat },
    WAWebUpdateUnreadChatAction: { sendSeen },
    WAWebChatStateBridge: {
      sendChatStateComposing: chatState('composing'),
      sendChatStateRecording: chatState('recording'),
      sendChatStatePaused: chatState('paused'),
    },
    WAWebPresenceChatAction: {
      sendPresenceAvailable: () => {
        Stream.markAvailable();
        return Promise.resolve();
      },
      sendPresenceUnavailable: () => {
        Stream.markUnavailable();
        return Promise.resolve();
      },
    },
    WAWebOfflineHandler: { OfflineMessageHandler },
    WAWebSyncGatingUtils: { isPlaceholderMessageResendEnabled: () => false },
    WAWebUserPrefsMeUser: {
      getMaybeMePnUser: () => page.me,
      // The simulator gives accounts no LID.
      getMaybeMeLidUser: () => null,
      isMeAccount: (w) => !!(page.me && page.me.equals(w)),
    },
    WAWebUserPrefsGeneral: {
      getAutoDownloadAudio: () => prefs.autoDownloadAudio,
      setAutoDownloadAudio: (v) => { prefs.autoDownloadAudio = !!v; },
      getAutoDownloadDocuments: () => prefs.autoDownloadDocuments,
      setAutoDownloadDocuments: (v) => { prefs.autoDownloadDocuments = !!v; },
      getAutoDownloadPhotos: () => prefs.autoDownloadPhotos,
      setAutoDownloadPhotos: (v) => { prefs.autoDownloadPhotos = !!v; },
      getAutoDownloadVideos: () => prefs.autoDownloadVideos,
      setAutoDownloadVideos: (v) => { prefs.autoDownloadVideos = !!v; },
    },
    WAWebUserPrefsNotifications: {
      getGlobalOfflineNotifications: () => prefs.globalOfflineNotifications,
      setGlobalOfflineNotifications: (v) => { prefs.globalOfflineNotifications = !!v; },
    },
    WAWebPhoneUtils: {
      // E.164 without grouping: the simulator has no per-country formats.
      formattedPhoneNumber: (n) => '+' + String(n).replace(/@c\.us$/, '').replace(/\D/g, ''),
    },
    WAWebSignalStoreApi: {
      waSignalStore: {
        getRegistrationInfo: () => keysReady.then(() => ({
          registrationId: page.keys.registrationId,
          identityKeyPair: { pubKey: page.keys.identityPub.slice(), privKey: page.keys.identityPriv.slice() },
        })),
      },
    },
    WAWebUserPrefsInfoStore: {
      waNoiseInfo: {
        get: () => keysReady.then(() => ({
          staticKeyPair: { pubKey: page.keys.noisePub.slice(), privKey: page.keys.noisePriv.slice() },
        })),
      },
    },
    WABase64: { encodeB64, decodeB64 },
    WAWebUserPrefsMultiDevice: {
      // Synchronous, like the real preference: the keys are loaded before
      // the module system is exposed (see boot()).
      getADVSecretKey: () => encodeB64(page.keys.adv),
    },
    WAWebCompanionRegClientUtils: { DEVICE_PLATFORM },
    WAWebAdvSignatureApi: {},
    WAWebAltDeviceLinkingApi: {
      setPairingType: () => undefined,
      initializeQRLinking: () => Promise.resolve(),
      initializeAltDeviceLinking: altLinking,
      startAltLinkingFlow: altLinking,
    },
    WAWebLaunchSocketUtils: { refreshQR: () => Cmd.refreshQR() },
    WAWebMiscBrowserUtils: {
      info: () => ({ name: 'Chrome', version: (/Chrom(?:e|ium)\/([\d.]+)/.exec(navigator.userAgent) || [])[1] || '', os: 'Linux' }),
    },
  };

  function requireModule(name) {
    if (Object.prototype.hasOwnProperty.call(modules, name)) return modules[name];
    throw new Error('Requiring unknown module "' + name + '"');
  }

  // ----- what a human sees --------------------------------------------------

  const LABELS = {
    OPENING: 'Connecting…',
    PAIRING: 'Logging in…',
    UNPAIRED: 'Scan the QR code with your phone',
    UNPAIRED_IDLE: 'The QR code expired',
    CONNECTED: 'Connected',
    TIMEOUT: 'Computer not connected. Retrying…',
    CONFLICT: 'WhatsApp is open in another window',
    TOS_BLOCK: 'This account is not allowed to use WhatsApp',
  };

  function render() {
    const byId = (id) => document.getElementById(id);
    const state = Socket.state;
    const stateEl = byId('state');
    if (stateEl) {
      stateEl.textContent = (LABELS[state] || state) + ' (' + state + ')'
        + (state === 'CONNECTED' && !Socket.hasSynced ? ', loading your chats…' : '');
    }
    const qr = byId('qr');
    if (qr) qr.textContent = state === 'UNPAIRED' && Conn.ref ? 'QR ref: ' + Conn.ref : '';
    const reload = byId('reload-qr');
    if (reload) reload.hidden = state !== 'UNPAIRED_IDLE';
    const useHere = byId('use-here');
    if (useHere) useHere.hidden = state !== 'CONFLICT';
    const me = byId('me');
    if (me) me.textContent = Conn.connected && Conn.pushname ? 'Logged in as ' + Conn.pushname : '';
  }

  // ----- boot ----------------------------------------------------------------

  async function boot() {
    const reload = document.getElementById('reload-qr');
    if (reload) reload.addEventListener('click', () => Cmd.refreshQR());
    const useHere = document.getElementById('use-here');
    if (useHere) useHere.addEventListener('click', () => Socket.takeover());
    setState('OPENING');
    try {
      page.db = await idbOpen();
    } catch (e) {
      console.error('IndexedDB unavailable; this page will not remember its login', e);
    }
    try {
      page.keys = await loadKeys();
      const cred = await idbRead('cred');
      if (cred && cred.device && cred.secret) page.cred = cred;
    } catch (e) {
      console.error('could not read the stored credential', e);
      page.keys = page.keys || newKeys();
    }
    keysReadyResolve();
    // The page counts as loaded once the modules can answer, keys included.
    window.require = requireModule;
    window.Debug = { VERSION };
    connect(false);
  }

  setTimeout(boot, BOOT_DELAY_MS);
})();
