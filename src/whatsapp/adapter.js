// wasup's page adapter. With `whatsapp.events = "bidi"` it is installed by
// a BiDi preload script (page.rs, BOOT) in every document the page loads, as
// soon as WhatsApp Web's modules are there, and gets a `channel` function
// through which it pushes every event at once. With "poll" the Session
// injects it after every navigation and drains its queue. It uses only the
// module surface that whatsapp-web.js relies on (see design/whatsapp-web.md)
// and never reads the DOM.
//
// It installs `window.__wasup`:
//   drain()                -> {events: [...], snap: {...}} and empties the queue
//   send(to, body, id)     -> Promise<{id, to, ack} | {error, message}>
//   stage(token, seq, b64) -> bool: one piece of a file for sendMedia
//   sendMedia(to, id, token, {mimetype, filename, caption, size, sha256, asDocument})
//                          -> Promise<{id, to, ack} | {error, message}>
//   composing(to)          -> Promise<bool>: "typing…" shown in the chat
//   logout(), takeover(), refreshQR()
//
// Events are queued in the page and mirrored to sessionStorage, so that an
// event raised just before a navigation (the phone's logout navigates to
// `?post_logout=1`) is still delivered by the adapter of the next page: with
// a channel, the new adapter pushes the whole stored queue again when it is
// installed; the daemon drops what it has seen by each event's `n`. With a
// channel every event is also pushed at once, as `{events: [event], snap}`;
// the queue is then emptied by the slow classic drain. Nothing here ever
// waits long inside a WebDriver command, because chromedriver runs a
// session's commands one at a time.
//
// Event shapes: {k: "state", state}, {k: "synced", value}, {k: "qr"},
// {k: "logout"}, {k: "ack", id, ack}, {k: "send_error", id, code, result},
// {k: "incoming", id, from, type, body, t}, {k: "loaded", post_logout}.
// Every event carries `at` (Unix epoch ms) and `n`, unique to the event
// (this document's load id and a sequence number). A snapshot carries the
// same `load` id, `load_no` (this tab's documents counted in sessionStorage)
// and `seq`, the number of events raised before it, so that the daemon can
// tell an older snapshot that arrives late (a drain answered after later
// pushes, even from the document before) from a newer one.
(function install(version, channel) {
  "use strict";
  if (window.__wasup && window.__wasup.version === version) return;
  const R = (name) => window.require(name);
  const STORE_KEY = "__wasup_queue";

  let queue = [];
  try {
    queue = JSON.parse(window.sessionStorage.getItem(STORE_KEY) || "[]");
    if (!Array.isArray(queue)) queue = [];
  } catch (e) {
    queue = [];
  }
  const persist = () => {
    try {
      window.sessionStorage.setItem(STORE_KEY, JSON.stringify(queue));
    } catch (e) {
      /* storage full or disabled: the in-memory queue still works */
    }
  };
  const load = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
  // The documents of this tab, counted in sessionStorage: a snapshot of a
  // later document is newer than any of an earlier one.
  let loadNo = 0;
  try {
    loadNo = (Number(window.sessionStorage.getItem("__wasup_loads")) || 0) + 1;
    window.sessionStorage.setItem("__wasup_loads", String(loadNo));
  } catch (e) {
    /* no storage: snapshots are ordered within a document only */
  }
  let seq = 0;
  // Set once the adapter is installed: from then on each event is pushed
  // through the channel as it happens (before, they wait in the queue).
  let live = false;
  const push = (event) => {
    event.at = Date.now();
    event.n = load + "." + seq;
    seq += 1;
    queue.push(event);
    // A runaway page must not grow the queue without bound.
    if (queue.length > 5000) queue.splice(0, queue.length - 5000);
    persist();
    if (live && channel) channel({ events: [event], snap: snap() });
  };

  const Socket = R("WAWebSocketModel").Socket;
  const Conn = R("WAWebConnModel").Conn;
  const Cmd = R("WAWebCmd").Cmd;
  const Msg = R("WAWebCollections").Msg;

  // The QR string is `ref,staticKeyB64,identityKeyB64,advSecretKey,platform`
  // (whatsapp-web.js Client.js builds it from these same modules).
  let qr = null;
  let qrFor = null;
  const buildQr = async (ref) => {
    if (!ref) return null;
    const reg = await R("WAWebSignalStoreApi").waSignalStore.getRegistrationInfo();
    const noise = await R("WAWebUserPrefsInfoStore").waNoiseInfo.get();
    const b64 = R("WABase64");
    const adv = await R("WAWebUserPrefsMultiDevice").getADVSecretKey();
    const platform = R("WAWebCompanionRegClientUtils").DEVICE_PLATFORM;
    return [ref, b64.encodeB64(noise.staticKeyPair.pubKey), b64.encodeB64(reg.identityKeyPair.pubKey), adv, platform].join(",");
  };
  const onRef = (_model, ref) => {
    qrFor = ref || null;
    if (!ref) {
      qr = null;
      push({ k: "qr" });
      return;
    }
    buildQr(ref).then(
      (full) => {
        if (qrFor === ref) {
          qr = full;
          push({ k: "qr" });
        }
      },
      () => {
        /* keys not ready: the next ref retries */
      }
    );
  };

  const onState = (_model, state) => push({ k: "state", state: String(state) });
  const onSynced = (_model, value) => push({ k: "synced", value: !!value });
  const onLogout = () => push({ k: "logout" });
  const onAck = (msg, ack) => {
    const key = msg && msg.id;
    if (key && key.fromMe) push({ k: "ack", id: String(key.id), ack: Number(ack) });
  };

  // Messages from contacts, as whatsapp-web.js's `message` event takes
  // them: added to `Msg` as new (`isNewMsg`: not history replayed at load),
  // not from this account, not a status, not in a group; a message still
  // being decrypted (`ciphertext`) once its type is known.
  const MEDIA = new Set(["image", "video", "audio", "ptt", "document", "sticker"]);
  const NOT_MESSAGES = new Set([
    "e2e_notification", "notification", "notification_template", "gp2", "protocol", "revoked", "call_log",
    "broadcast_notification",
  ]);
  const REPORTED_KEY = "__wasup_reported";
  let reported = [];
  try {
    reported = JSON.parse(window.sessionStorage.getItem(REPORTED_KEY) || "[]");
    if (!Array.isArray(reported)) reported = [];
  } catch (e) {
    reported = [];
  }
  const wasReported = (id) => reported.includes(id);
  const markReported = (id) => {
    reported.push(id);
    if (reported.length > 1000) reported.splice(0, reported.length - 1000);
    try {
      window.sessionStorage.setItem(REPORTED_KEY, JSON.stringify(reported));
    } catch (e) {
      /* storage full or disabled: duplicates are then possible after a re-injection */
    }
  };
  // The sender's phone number (digits), or null: a LID is mapped to the
  // phone number WhatsApp Web knows for it.
  const senderDigits = (wid) => {
    let w = wid;
    if (w && w.server === "lid") {
      try {
        w = R("WAWebApiContact").getPhoneNumber(w) || R("WAWebLidMigrationUtils").toPn(w);
      } catch (e) {
        w = null;
      }
    }
    if (!w || w.server !== "c.us" || !/^\d{5,20}$/.test(String(w.user))) return null;
    return String(w.user);
  };
  const onIncoming = (msg) => {
    const key = msg && msg.id;
    if (!key || key.fromMe || !msg.isNewMsg) return;
    const type = String(msg.type);
    if (type === "ciphertext") {
      msg.once("change:type", () => onIncoming(msg));
      return;
    }
    if (NOT_MESSAGES.has(type) || msg.isStatusV3 || msg.broadcast) return;
    const remote = key.remote;
    if (!remote || remote.server === "broadcast" || remote.server === "g.us" || remote.server === "newsletter") return;
    const id = String(key.id);
    if (wasReported(id)) return;
    const from = senderDigits(remote);
    if (!from) return;
    markReported(id);
    const body = MEDIA.has(type) ? msg.caption || "" : msg.body || "";
    push({ k: "incoming", id, from, type, body: String(body), t: Number(msg.t) || 0 });
  };

  Socket.on("change:state", onState);
  Socket.on("change:hasSynced", onSynced);
  Conn.on("change:ref", onRef);
  Cmd.on("logout", onLogout);
  Cmd.on("logout_from_bridge", onLogout);
  Msg.on("change:ack", onAck);
  Msg.on("add", onIncoming);
  onRef(Conn, Conn.ref);
  // What arrived between the page's boot and this injection.
  (Msg.getModelsArray ? Msg.getModelsArray() : []).forEach(onIncoming);

  const me = () => {
    try {
      const wid = R("WAWebUserPrefsMeUser").getMaybeMePnUser();
      return wid ? String(wid._serialized || wid) : null;
    } catch (e) {
      return null;
    }
  };

  const snap = () => {
    let pushname = null;
    try {
      pushname = Conn.serialize().pushname || null;
    } catch (e) {
      pushname = null;
    }
    return {
      state: String(Socket.state),
      synced: !!Socket.hasSynced,
      me: me(),
      pushname,
      qr,
      post_logout: /[?&]post_logout=1/.test(window.location.search),
      load,
      load_no: loadNo,
      seq,
    };
  };

  // The chat and the message key for a send to `to` with key id `id`, or
  // {error, message}; `existing` when the page already holds that key.
  async function target(to, id) {
    const mine = R("WAWebUserPrefsMeUser").getMaybeMePnUser();
    if (!mine) return { error: "not_logged_in", message: "the page has no logged-in account" };
    let wid;
    try {
      wid = R("WAWebWidFactory").createWid(to);
    } catch (e) {
      return { error: "invalid_wid", message: String((e && e.message) || e) };
    }
    const exists = await R("WAWebQueryExistsJob").queryWidExists(wid);
    if (!exists) return { error: "not_on_whatsapp", message: to + " is not on WhatsApp" };
    const Collections = R("WAWebCollections");
    let chat = Collections.Chat.get(wid);
    if (!chat) {
      try {
        chat = (await R("WAWebFindChatAction").findOrCreateLatestChat(wid)).chat;
      } catch (e) {
        return { error: "no_chat", message: String((e && e.message) || e) };
      }
    }
    const MsgKey = R("WAWebMsgKey");
    const key = new MsgKey({ from: mine, to: chat.id, id, selfDir: "out" });
    const existing = Collections.Msg.get(String(key._serialized || key.toString()));
    return { mine, chat, key, chatId: String(chat.id._serialized || chat.id), existing };
  }

  // Hands a message to WhatsApp Web and reports its outcome as events.
  async function dispatch(chat, data, id, chatId) {
    const [msgPromise, resultPromise] = R("WAWebSendMsgChatAction").addAndSendMsgToChat(chat, data);
    resultPromise.then(
      (result) => {
        const r = result && result.messageSendResult;
        if (r && r !== "OK") push({ k: "send_error", id, code: result.errorCode || null, result: String(r) });
      },
      (e) => push({ k: "send_error", id, code: null, result: String((e && e.message) || e) })
    );
    const model = await msgPromise;
    return { id, to: chatId, ack: Number(model && model.ack) || 0 };
  }

  async function send(to, body, id) {
    const t = await target(to, id);
    if (t.error) return t;
    // Idempotent: a key the page already holds is never sent again.
    if (t.existing) return { id, to: t.chatId, ack: Number(t.existing.ack), existed: true };
    const data = { ...outgoing(t), body: String(body), type: "chat" };
    return dispatch(t.chat, data, id, t.chatId);
  }

  // The fields every message this account sends carries (as WhatsApp Web's
  // own composer fills them): its key id, time, sender and chat.
  function outgoing(t) {
    return {
      id: t.key,
      t: Math.floor(Date.now() / 1000),
      from: t.mine,
      to: t.chat.id,
      self: "out",
      isNewMsg: true,
      local: true,
      ack: 0,
    };
  }

  // Files on their way into the page, in pieces (one WebDriver command
  // each, so polls go on between them): token -> {parts, at}.
  const staged = new Map();
  const STAGE_TTL_MS = 10 * 60 * 1000;
  function stage(token, seq, b64) {
    const now = Date.now();
    for (const [t, s] of staged) if (now - s.at > STAGE_TTL_MS) staged.delete(t);
    if (seq === 0) staged.set(token, { parts: [], at: now });
    const s = staged.get(token);
    if (!s || s.parts.length !== seq) return false;
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    s.parts.push(bytes);
    s.at = now;
    return true;
  }

  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  const failed = (e) => ({ error: "media_failed", message: String((e && e.message) || e) });

  // Sends the staged file `token` as a media message, through WhatsApp
  // Web's own media path: the file as OpaqueData, prepared (type, hash,
  // thumbnail), recorded as a media object, encrypted and uploaded, then
  // the message with what the upload gave it.
  async function sendMedia(to, id, token, meta) {
    const s = staged.get(token);
    staged.delete(token);
    if (!s) return { error: "not_staged", message: "the file is not in the page (did it reload?)" };
    const file = new File(s.parts, meta.filename || "file", { type: meta.mimetype });
    if (file.size !== meta.size) return { error: "bad_file", message: "the file arrived with " + file.size + " bytes, not " + meta.size };
    if (hex(await crypto.subtle.digest("SHA-256", await file.arrayBuffer())) !== meta.sha256) {
      return { error: "bad_file", message: "the file changed on its way into the page" };
    }
    const t = await target(to, id);
    if (t.error) return t;
    if (t.existing) return { id, to: t.chatId, ack: Number(t.existing.ack), existed: true };
    let mediaData;
    try {
      const OpaqueData = R("WAWebMediaOpaqueData");
      const opaque = await OpaqueData.createFromData(file, meta.mimetype);
      mediaData = await R("WAWebPrepRawMedia").prepRawMedia(opaque, { asDocument: !!meta.asDocument }).waitForPrep();
      if (!mediaData.filehash) throw new Error("media preparation gave no file hash");
      const mediaObject = R("WAWebMediaStorage").getOrCreateMediaObject(mediaData.filehash);
      const Types = R("WAWebMmsMediaTypes");
      const mediaType = Types.msgToMediaType({ type: mediaData.type, isGif: mediaData.isGif });
      if (!(mediaData.mediaBlob instanceof OpaqueData)) {
        mediaData.mediaBlob = await OpaqueData.createFromData(mediaData.mediaBlob, mediaData.mediaBlob.type);
      }
      mediaData.renderableUrl = mediaData.mediaBlob.url();
      mediaObject.consolidate(mediaData.toJSON());
      mediaData.mediaBlob.autorelease();
      if (R("WAWebMediaDataUtils").shouldUseMediaCache(Types.castToV4(mediaObject.type))) {
        R("WAWebMediaInMemoryBlobCache").InMemoryMediaBlobCache.put(mediaObject.filehash, mediaData.mediaBlob.formData());
      }
      const uploaded = await R("WAWebMediaMmsV4Upload").uploadMedia({ mimetype: mediaData.mimetype, mediaObject, mediaType });
      const entry = uploaded && uploaded.mediaEntry;
      if (!entry) throw new Error("the upload gave no media entry");
      mediaData.set({
        clientUrl: entry.mmsUrl,
        deprecatedMms3Url: entry.deprecatedMms3Url,
        directPath: entry.directPath,
        mediaKey: entry.mediaKey,
        mediaKeyTimestamp: entry.mediaKeyTimestamp,
        filehash: mediaObject.filehash,
        encFilehash: entry.encFilehash,
        uploadhash: entry.uploadHash,
        size: mediaObject.size,
        streamingSidecar: entry.sidecar,
        firstFrameSidecar: entry.firstFrameSidecar,
      });
    } catch (e) {
      return failed(e);
    }
    const data = {
      ...mediaData.toJSON(),
      ...outgoing(t),
      // A media message's body is its thumbnail; the caption is apart.
      body: mediaData.preview || "",
      caption: meta.caption ? String(meta.caption) : undefined,
      type: mediaData.type,
    };
    return dispatch(t.chat, data, id, t.chatId);
  }

  // Show "typing…" in a chat (whatsapp-web.js Chat.sendStateTyping uses the
  // same module). Best effort: a page without it just does not show it.
  async function composing(to) {
    try {
      await R("WAWebChatStateBridge").sendChatStateComposing(R("WAWebWidFactory").createWid(to));
      return true;
    } catch (e) {
      return false;
    }
  }

  // Look a message up by its key id, as it is after a crash (history sync
  // brings earlier messages back into Msg).
  function lookup(to, id) {
    const mine = R("WAWebUserPrefsMeUser").getMaybeMePnUser();
    if (!mine) return null;
    const MsgKey = R("WAWebMsgKey");
    const key = new MsgKey({ from: mine, to: R("WAWebWidFactory").createWid(to), id, selfDir: "out" });
    const msg = R("WAWebCollections").Msg.get(String(key._serialized || key.toString()));
    return msg ? { id, ack: Number(msg.ack) } : null;
  }

  window.__wasup = {
    version,
    drain() {
      const events = queue;
      queue = [];
      persist();
      return { events, snap: snap() };
    },
    send,
    stage,
    sendMedia,
    lookup,
    composing,
    logout: () => Socket.logout(),
    takeover: () => Socket.takeover(),
    refreshQR: () => Cmd.refreshQR(),
  };
  push({ k: "loaded", post_logout: /[?&]post_logout=1/.test(window.location.search) });
  live = true;
  // Everything queued so far (this page's first events, and what the page
  // before it stored but nobody drained) in one message.
  if (channel) channel({ events: queue.slice(), snap: snap() });
})
