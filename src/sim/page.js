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

  function concatBytes(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
  }

  async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  }

  /** Base64url without padding (the media host's upload token). */
  function b64url(bytes) {
    return encodeB64(bytes).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  // ----- media: keys, encryption, the media host --------------------------
  //
  // As WhatsApp's clients do it (see src/sim/media.rs): a fresh 32-byte
  // media key per file, expanded with HKDF-SHA256 (zero salt, an info
  // string per type) into IV, cipher key and MAC key; the upload is the
  // AES-256-CBC ciphertext and the first 10 bytes of its HMAC-SHA256.

  const MEDIA_TYPES = ['image', 'video', 'audio', 'ptt', 'document', 'sticker'];
  const MEDIA_KEY_INFO = {
    image: 'WhatsApp Image Keys',
    sticker: 'WhatsApp Image Keys',
    video: 'WhatsApp Video Keys',
    audio: 'WhatsApp Audio Keys',
    ptt: 'WhatsApp Audio Keys',
    document: 'WhatsApp Document Keys',
  };
  const MEDIA_MAC_BYTES = 10;
  /** Photos larger than this (longer side, px) are scaled down and sent as JPEG. */
  const PHOTO_MAX_PX = 1600;
  /** The thumbnail's longer side, px. */
  const THUMB_PX = 96;

  async function mediaKeys(type, mediaKey) {
    const info = MEDIA_KEY_INFO[type];
    if (!info) throw new Error('media: unknown media type ' + type);
    const base = await crypto.subtle.importKey('raw', mediaKey, 'HKDF', false, ['deriveBits']);
    const params = { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(32), info: new TextEncoder().encode(info) };
    const bits = new Uint8Array(await crypto.subtle.deriveBits(params, base, 112 * 8));
    const macKey = await crypto.subtle.importKey('raw', bits.slice(48, 80), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    const cipherKey = await crypto.subtle.importKey('raw', bits.slice(16, 48), 'AES-CBC', false, ['encrypt', 'decrypt']);
    return { iv: bits.slice(0, 16), cipherKey, macKey };
  }

  async function mediaMac(keys, ciphertext) {
    const mac = new Uint8Array(await crypto.subtle.sign('HMAC', keys.macKey, concatBytes(keys.iv, ciphertext)));
    return mac.slice(0, MEDIA_MAC_BYTES);
  }

  /** The upload for `plain`: ciphertext, then the truncated MAC. */
  async function sealMedia(type, mediaKey, plain) {
    const keys = await mediaKeys(type, mediaKey);
    const enc = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-CBC', iv: keys.iv }, keys.cipherKey, plain));
    return concatBytes(enc, await mediaMac(keys, enc));
  }

  /** The file inside a download; throws on a wrong MAC. */
  async function openMedia(type, mediaKey, upload) {
    if (upload.length < MEDIA_MAC_BYTES) throw new Error('media: the download is too short');
    const keys = await mediaKeys(type, mediaKey);
    const enc = upload.slice(0, upload.length - MEDIA_MAC_BYTES);
    const mac = await mediaMac(keys, enc);
    const got = upload.slice(upload.length - MEDIA_MAC_BYTES);
    if (mac.some((b, i) => b !== got[i])) throw new Error('media: the MAC does not match');
    return new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-CBC', iv: keys.iv }, keys.cipherKey, enc));
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

  // ----- media models (WAWebMediaOpaqueData, media data, media objects) --------

  /**
   * `WAWebMediaOpaqueData`: a file the page holds (a Blob), with an object
   * URL made on demand.
   */
  class OpaqueData {
    constructor(blob, name) {
      Object.defineProperty(this, '_blob', { value: blob });
      Object.defineProperty(this, '_name', { value: name });
      Object.defineProperty(this, '_url', { value: null, writable: true });
    }
    /** From a Blob, a File or bytes; `mimetype` wins over the Blob's own type. */
    static async createFromData(data, mimetype) {
      let blob;
      if (data instanceof Blob) blob = data;
      else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) blob = new Blob([data]);
      else throw new TypeError('OpaqueData.createFromData: a Blob or bytes expected');
      const name = typeof data.name === 'string' ? data.name : undefined;
      const type = typeof mimetype === 'string' && mimetype ? mimetype : blob.type;
      if (blob.type !== type) blob = blob.slice(0, blob.size, type);
      return new OpaqueData(blob, name);
    }
    get type() { return this._blob.type; }
    get size() { return this._blob.size; }
    get name() { return this._name; }
    url() {
      if (!this._url) this._url = URL.createObjectURL(this._blob);
      return this._url;
    }
    /** The object URL goes away a minute from now. */
    autorelease() {
      const url = this._url;
      this._url = null;
      if (url) setTimeout(() => URL.revokeObjectURL(url), 60000);
    }
    formData() { return this._blob; }
    arrayBuffer() { return this._blob.arrayBuffer(); }
  }

  /** A prepared file (the result of `prepRawMedia`): a model, `toJSON()` gives its attributes. */
  class MediaData extends Model {
    toJSON() { return { ...this.attributes }; }
  }

  /** `WAWebMediaStorage`'s per-file record, keyed by the file's hash. */
  class MediaObject {
    constructor(filehash) {
      this.filehash = filehash;
      this.type = undefined;
      this.mimetype = undefined;
      this.size = undefined;
      this.filename = undefined;
      this.mediaBlob = null;
      this.contentInfo = {};
    }
    consolidate(json) {
      for (const k of ['type', 'mimetype', 'size', 'filename', 'mediaBlob', 'filehash']) {
        if (json && json[k] !== undefined) this[k] = json[k];
      }
    }
  }

  const MEDIA_OBJECTS_KEPT = 200;
  const mediaObjects = new Map();
  function getOrCreateMediaObject(filehash) {
    let obj = mediaObjects.get(filehash);
    if (!obj) {
      obj = new MediaObject(filehash);
      mediaObjects.set(filehash, obj);
      if (mediaObjects.size > MEDIA_OBJECTS_KEPT) mediaObjects.delete(mediaObjects.keys().next().value);
    }
    return obj;
  }

  /** Files prepared recently, by hash (`InMemoryMediaBlobCache`). */
  const mediaBlobCache = new Map();
  const InMemoryMediaBlobCache = {
    put(filehash, blob) {
      mediaBlobCache.set(filehash, blob);
      if (mediaBlobCache.size > 20) mediaBlobCache.delete(mediaBlobCache.keys().next().value);
    },
    get: (filehash) => mediaBlobCache.get(filehash),
  };

  /** The MIME type without parameters, lower case. */
  function essence(mimetype) {
    return String(mimetype || '').split(';')[0].trim().toLowerCase();
  }

  /**
   * A photo as WhatsApp Web sends it: decoded (an undecodable file is
   * refused), scaled down to `maxPx` and re-encoded as JPEG when larger,
   * else sent as it is; with a small JPEG thumbnail (base64).
   */
  async function prepPhoto(opaque, maxPx) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(opaque.formData());
    } catch (e) {
      throw new Error('media-fault: the image cannot be decoded');
    }
    try {
      const { width, height } = bitmap;
      const draw = async (w, h, quality) => {
        const canvas = new OffscreenCanvas(w, h);
        canvas.getContext('2d').drawImage(bitmap, 0, 0, w, h);
        return canvas.convertToBlob({ type: 'image/jpeg', quality });
      };
      let out = opaque;
      let [fullWidth, fullHeight] = [width, height];
      if (Math.max(width, height) > maxPx) {
        const scale = maxPx / Math.max(width, height);
        [fullWidth, fullHeight] = [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
        out = await OpaqueData.createFromData(await draw(fullWidth, fullHeight, 0.85), 'image/jpeg');
      }
      const t = Math.min(1, THUMB_PX / Math.max(width, height));
      const thumb = await draw(Math.max(1, Math.round(width * t)), Math.max(1, Math.round(height * t)), 0.6);
      const preview = encodeB64(new Uint8Array(await thumb.arrayBuffer()));
      return { opaque: out, fullWidth, fullHeight, preview };
    } finally {
      bitmap.close();
    }
  }

  /**
   * `WAWebPrepRawMedia.prepRawMedia(opaqueData, {asDocument, isPtt, asGif,
   * asSticker, maxDimension})` → `{waitForPrep}`: what the file is sent
   * as (JPEG and PNG photos, MP4 and 3GPP videos, audio, anything else a
   * document), its hash, size and, for photos, thumbnail and dimensions.
   */
  function prepRawMedia(opaque, params) {
    const p = params || {};
    const prepared = (async () => {
      if (!(opaque instanceof OpaqueData)) throw new Error('prepRawMedia: OpaqueData expected');
      if (p.asSticker) throw new Error('wasup sim: stickers are not simulated');
      const kind = essence(opaque.type);
      let type;
      if (p.asDocument) type = 'document';
      else if (kind === 'image/jpeg' || kind === 'image/png') type = 'image';
      else if (kind === 'video/mp4' || kind === 'video/3gpp') type = 'video';
      else if (kind.startsWith('audio/')) type = p.isPtt ? 'ptt' : 'audio';
      else type = 'document';
      const attrs = { type, isGif: false, mediaStage: 'PREPARED' };
      let file = opaque;
      if (type === 'image') {
        const photo = await prepPhoto(opaque, p.maxDimension || PHOTO_MAX_PX);
        file = photo.opaque;
        Object.assign(attrs, { preview: photo.preview, fullWidth: photo.fullWidth, fullHeight: photo.fullHeight });
      }
      if (type === 'document') attrs.filename = opaque.name || 'file';
      const bytes = new Uint8Array(await file.arrayBuffer());
      Object.assign(attrs, {
        mimetype: file.type || 'application/octet-stream',
        size: bytes.length,
        filehash: encodeB64(await sha256(bytes)),
        mediaBlob: file,
      });
      return new MediaData(attrs);
    })();
    // Observed through waitForPrep; an unobserved failure is not an error.
    prepared.catch(() => undefined);
    return { waitForPrep: () => prepared };
  }

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
    mediaConn: null,   // {auth, until} for uploads
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
      case 'media_conn': {
        const r = page.requests.get(f.req);
        if (r) {
          page.requests.delete(f.req);
          r.resolve({ auth: String(f.auth), ttl: Number(f.ttl) || 0 });
        }
        break;
      }
      case 'logout':
      case 'logged_out':
        leaveLoggedOut();
        break;
      case 'reload':
        // A new version was deployed: the page reloads itself at once,
        // under the URL it has.
        page.leaving = true;
        clearTimeout(page.retryTimer);
        location.reload();
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
      const attrs = { id: key, body: m.body, type: 'chat', from: page.me, to, t: m.t, ack: m.ack };
      if (m.media) Object.assign(attrs, mediaAttrs(m.media), { body: '', caption: m.body });
      const msg = Msg.add(new Model(attrs));
      if (m.media) withMediaData(msg, 'INIT');
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
    page.mediaConn = null;
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
      let media = null;
      let body;
      if (type === 'chat') {
        if (typeof msgData.body !== 'string') throw new Error('addAndSendMsgToChat: body must be a string');
        body = msgData.body;
      } else if (MEDIA_TYPES.includes(type)) {
        // A media message goes out with what its upload gave it; its body
        // is the thumbnail, the caption travels apart.
        media = attachmentOf(msgData, type);
        if (msgData.caption !== undefined && msgData.caption !== null && typeof msgData.caption !== 'string') {
          throw new Error('addAndSendMsgToChat: caption must be a string');
        }
        body = msgData.caption || '';
      } else {
        throw new Error('addAndSendMsgToChat: unsupported message type ' + type);
      }
      requireLogin();
      const t = typeof msgData.t === 'number' ? msgData.t : Math.floor(Date.now() / 1000);
      Chat.add(chat);
      let msg = Msg.get(key);
      if (!msg) {
        // The file itself stays out of the message model.
        const { mediaBlob, ...data } = msgData;
        msg = Msg.add(new Model({ ...data, id: key, type, t, ack: 0 }));
        if (media) withMediaData(msg, 'RESOLVED');
      }
      chat.set('t', t);
      const entry = {
        n: page.nonce + '-' + page.nextN++,
        frame: { id: key.id, to: key.remote._serialized, body, media, t },
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

  /**
   * The attachment of a media message about to be sent: what its upload
   * gave it. Throws when the message was never uploaded.
   */
  function attachmentOf(m, type) {
    const text = (k) => typeof m[k] === 'string' && m[k] !== '';
    for (const k of ['directPath', 'mediaKey', 'filehash', 'encFilehash', 'mimetype']) {
      if (!text(k)) throw new Error('addAndSendMsgToChat: a ' + type + ' message needs ' + k + ' (upload the media first)');
    }
    if (typeof m.size !== 'number' || !(m.size >= 0)) throw new Error('addAndSendMsgToChat: a ' + type + ' message needs its size');
    const out = {
      type,
      mimetype: m.mimetype,
      size: m.size,
      filehash: m.filehash,
      enc_filehash: m.encFilehash,
      media_key: m.mediaKey,
      media_key_timestamp: typeof m.mediaKeyTimestamp === 'number' ? m.mediaKeyTimestamp : Math.floor(Date.now() / 1000),
      direct_path: m.directPath,
    };
    if (typeof m.filename === 'string' && m.filename) out.filename = m.filename;
    return out;
  }

  /** A media message model's attributes from an attachment frame. */
  function mediaAttrs(a) {
    const attrs = {
      type: MEDIA_TYPES.includes(a.type) ? a.type : 'document',
      mimetype: a.mimetype,
      size: a.size,
      filehash: a.filehash,
      encFilehash: a.enc_filehash,
      mediaKey: a.media_key,
      mediaKeyTimestamp: a.media_key_timestamp,
      directPath: a.direct_path,
      clientUrl: location.origin + a.direct_path,
      deprecatedMms3Url: location.origin + a.direct_path,
    };
    if (a.filename) attrs.filename = a.filename;
    return attrs;
  }

  /**
   * Gives a media message model its `mediaData` (`mediaStage`: INIT until
   * downloaded, then RESOLVED, or ERROR_MISSING / ERROR_UNKNOWN) and
   * `downloadMedia()`, as WhatsApp Web's message models have them.
   */
  function withMediaData(msg, stage) {
    const mediaData = new MediaData({ mediaStage: stage });
    Object.defineProperty(msg, 'mediaData', { value: mediaData });
    Object.defineProperty(msg, 'downloadMedia', {
      value: async function downloadMedia() {
        if (mediaData.mediaStage === 'RESOLVED' || mediaData.mediaStage === 'FETCHING') return;
        mediaData.set('mediaStage', 'FETCHING');
        try {
          const buf = await downloadAndMaybeDecrypt({
            directPath: msg.directPath, encFilehash: msg.encFilehash, filehash: msg.filehash, mediaKey: msg.mediaKey, type: msg.type,
          });
          mediaData.set({ mediaBlob: await OpaqueData.createFromData(buf, msg.mimetype), mediaStage: 'RESOLVED' });
        } catch (e) {
          mediaData.set('mediaStage', e && e.status === 404 ? 'ERROR_MISSING' : 'ERROR_UNKNOWN');
        }
      },
    });
  }

  /** The upload credential (`media_conn`), asked anew when it runs out. */
  async function mediaConn() {
    const now = Date.now();
    if (page.mediaConn && page.mediaConn.until > now + 60000) return page.mediaConn;
    requireLogin();
    const answer = await request({ type: 'media_conn' });
    page.mediaConn = { auth: answer.auth, until: now + answer.ttl * 1000 };
    return page.mediaConn;
  }

  /**
   * `WAWebMediaMmsV4Upload.uploadMedia({mimetype, mediaObject, mediaType})`:
   * encrypts the media object's file with a new media key, uploads it to
   * the media host and answers `{mediaEntry}` (the URLs, direct path, key
   * and hashes a message needs).
   */
  async function uploadMedia(opts) {
    const o = opts || {};
    const obj = o.mediaObject;
    if (!(obj instanceof MediaObject) || !(obj.mediaBlob instanceof OpaqueData)) {
      throw new Error('upload failed: the media object holds no file');
    }
    const type = o.mediaType === 'gif' ? 'video' : o.mediaType;
    if (!MEDIA_TYPES.includes(type)) throw new Error('upload failed: unknown media type ' + o.mediaType);
    const plain = new Uint8Array(await obj.mediaBlob.arrayBuffer());
    const mediaKey = randomBytes(32);
    const upload = await sealMedia(type, mediaKey, plain);
    const encHash = await sha256(upload);
    const token = b64url(encHash);
    const conn = await mediaConn();
    const res = await fetch('/mms/' + type + '/' + token + '?auth=' + encodeURIComponent(conn.auth) + '&token=' + token, {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream' },
      body: upload,
    });
    if (!res.ok) {
      // A refused credential is asked for anew next time.
      if (res.status === 401) page.mediaConn = null;
      throw new Error('upload failed: the media host answered HTTP ' + res.status);
    }
    const answer = await res.json();
    const encFilehash = encodeB64(encHash);
    return {
      mediaEntry: {
        mmsUrl: answer.url,
        deprecatedMms3Url: answer.url,
        directPath: answer.direct_path,
        mediaKey: encodeB64(mediaKey),
        mediaKeyTimestamp: Math.floor(Date.now() / 1000),
        encFilehash,
        uploadHash: encFilehash,
        sidecar: undefined,
        firstFrameSidecar: undefined,
        handle: undefined,
      },
    };
  }

  /**
   * `WAWebDownloadManager.downloadManager.downloadAndMaybeDecrypt({directPath,
   * encFilehash, filehash, mediaKey, type, signal})`: the file, checked
   * against both hashes and its MAC, as an ArrayBuffer. A missing file
   * rejects with an error whose `status` is 404.
   */
  async function downloadAndMaybeDecrypt(o) {
    const opts = o || {};
    if (typeof opts.directPath !== 'string' || !opts.directPath.startsWith('/')) throw new Error('download failed: no direct path');
    const res = await fetch(opts.directPath, { signal: opts.signal });
    if (!res.ok) {
      const e = new Error('download failed: the media host answered HTTP ' + res.status);
      e.status = res.status;
      throw e;
    }
    const upload = new Uint8Array(await res.arrayBuffer());
    if (opts.encFilehash && encodeB64(await sha256(upload)) !== opts.encFilehash) {
      throw new Error('download failed: the file does not match its encFilehash');
    }
    const plain = await openMedia(opts.type, decodeB64(opts.mediaKey), upload);
    if (opts.filehash && encodeB64(await sha256(plain)) !== opts.filehash) {
      throw new Error('download failed: the file does not match its filehash');
    }
    return plain.buffer;
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
      const attrs = {
        id: key, body: f.body, type: 'chat', from, to: page.me, t: f.t, self: 'in', isNewMsg: true, notifyName: f.pushname || '',
      };
      // A media message's body is its thumbnail on WhatsApp Web (the
      // simulator sends none); the caption is apart.
      if (f.media) Object.assign(attrs, mediaAttrs(f.media), { body: '', caption: f.body });
      const msg = Msg.add(new Model(attrs));
      if (f.media) withMediaData(msg, 'INIT');
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
    WAWebMediaOpaqueData: OpaqueData,
    WAWebPrepRawMedia: { prepRawMedia },
    WAWebMediaStorage: { getOrCreateMediaObject },
    WAWebMmsMediaTypes: {
      msgToMediaType: ({ type, isGif } = {}) => {
        if (!MEDIA_TYPES.includes(type)) throw new Error('msgToMediaType: not a media type: ' + type);
        return type === 'video' && isGif ? 'gif' : type;
      },
      castToV4: (t) => t,
    },
    WAWebMediaDataUtils: { shouldUseMediaCache: (t) => t === 'image' },
    WAWebMediaInMemoryBlobCache: { InMemoryMediaBlobCache },
    WAWebMediaMmsV4Upload: {
      uploadMedia,
      uploadUnencryptedMedia: () => Promise.reject(new Error('wasup sim: newsletters (channels) are not simulated')),
    },
    WAWebDownloadManager: { downloadManager: { downloadAndMaybeDecrypt } },
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
