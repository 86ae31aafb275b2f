// wasup's page adapter: injected into WhatsApp Web (or `wasup sim`) by the
// Session actor after every navigation. It uses only the module surface that
// whatsapp-web.js relies on (see design/whatsapp-web.md) and never reads the
// DOM.
//
// It installs `window.__wasup`:
//   drain()                -> {events: [...], snap: {...}} and empties the queue
//   send(to, body, id)     -> Promise<{id, to, ack} | {error, message}>
//   composing(to)          -> Promise<bool>: "typing…" shown in the chat
//   logout(), takeover(), refreshQR()
//
// Events are queued in the page and mirrored to sessionStorage, so that an
// event raised just before a navigation (the phone's logout navigates to
// `?post_logout=1`) is still delivered by the adapter injected into the next
// page. The daemon drains the queue every poll interval with one short
// `execute`; nothing here ever waits long inside a WebDriver command, because
// chromedriver runs a session's commands one at a time.
//
// Event shapes: {k: "state", state}, {k: "synced", value}, {k: "qr"},
// {k: "logout"}, {k: "ack", id, ack}, {k: "send_error", id, code, result},
// {k: "loaded", post_logout}. Every event carries `at` (Unix epoch ms).
(function install(version) {
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
  const push = (event) => {
    event.at = Date.now();
    queue.push(event);
    // A runaway page must not grow the queue without bound.
    if (queue.length > 5000) queue.splice(0, queue.length - 5000);
    persist();
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

  Socket.on("change:state", onState);
  Socket.on("change:hasSynced", onSynced);
  Conn.on("change:ref", onRef);
  Cmd.on("logout", onLogout);
  Cmd.on("logout_from_bridge", onLogout);
  Msg.on("change:ack", onAck);
  onRef(Conn, Conn.ref);

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
    };
  };

  async function send(to, body, id) {
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
    const serialized = String(key._serialized || key.toString());
    // Idempotent: a key the page already holds is never sent again.
    const existing = Collections.Msg.get(serialized);
    if (existing) return { id, to: String(chat.id._serialized || chat.id), ack: Number(existing.ack), existed: true };
    const data = {
      id: key,
      body: String(body),
      type: "chat",
      t: Math.floor(Date.now() / 1000),
      from: mine,
      to: chat.id,
      self: "out",
      isNewMsg: true,
      local: true,
      ack: 0,
    };
    const [msgPromise, resultPromise] = R("WAWebSendMsgChatAction").addAndSendMsgToChat(chat, data);
    resultPromise.then(
      (result) => {
        const r = result && result.messageSendResult;
        if (r && r !== "OK") push({ k: "send_error", id, code: result.errorCode || null, result: String(r) });
      },
      (e) => push({ k: "send_error", id, code: null, result: String((e && e.message) || e) })
    );
    const model = await msgPromise;
    return { id, to: String(chat.id._serialized || chat.id), ack: Number(model && model.ack) || 0 };
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
    lookup,
    composing,
    logout: () => Socket.logout(),
    takeover: () => Socket.takeover(),
    refreshQR: () => Cmd.refreshQR(),
  };
  push({ k: "loaded", post_logout: /[?&]post_logout=1/.test(window.location.search) });
})
