// whatsapp-web.js 1.34.7, unmodified, against `wasup sim`: the scenarios a
// bot's life is made of, driven through the library's public API, with the
// simulator's phone API playing the phone. Run by tests/wwebjs.rs:
//
//   WASUP_SIM=http://127.0.0.1:<port> WASUP_WWEBJS_DIR=<empty dir> node scenarios.js
//
// Prints `ok <n> - <scenario>` for each scenario that passed, and exits 0
// only when all did. Every wait has a deadline; nothing sleeps to
// synchronise.
'use strict';

const fs = require('fs');
const path = require('path');
const assert = require('assert/strict');
const { loadLibrary, newClient, phone, nextEvent, until } = require('./sim');

const SIM = process.env.WASUP_SIM;
const DATA = process.env.WASUP_WWEBJS_DIR;
if (!SIM || !DATA) {
  console.error('set WASUP_SIM (the simulator base URL) and WASUP_WWEBJS_DIR (an empty directory)');
  process.exit(2);
}

const PHONE = '4915112345678';
const FRIEND = '4917000000001';
const STRANGER = '4917000000002';
const CLIENT_ID = 'scenarios';
const lib = loadLibrary(SIM);

let step = 0;
async function scenario(name, body) {
  step += 1;
  const started = Date.now();
  await body();
  console.log(`ok ${step} - ${name} (${Date.now() - started} ms)`);
}

/** Every `WA…` module name whatsapp-web.js's own source asks `window.require` for. */
function modulesTheLibraryRequires() {
  const root = path.dirname(require.resolve('whatsapp-web.js/package.json'));
  const names = new Set();
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(p);
      else if (p.endsWith('.js')) {
        const src = fs.readFileSync(p, 'utf8');
        for (const m of src.matchAll(/require\(\s*['"](WA[A-Za-z0-9]+)['"]\s*,?\s*\)|module:\s*['"](WA[A-Za-z0-9]+)['"]/g)) {
          names.add(m[1] || m[2]);
        }
      }
    }
  };
  walk(path.join(root, 'src'));
  return [...names].sort();
}

// A rejection nobody handles fails the run, except the library's own
// in-flight page calls failing with "Target closed" once the last client is
// being destroyed (its `framenavigated` handler does not catch them).
const unhandled = [];
let tearingDown = false;
process.on('unhandledRejection', (e) => {
  if (tearingDown && /Target closed|Session closed|detached/i.test(String(e && e.message))) return;
  unhandled.push(e);
});

async function main() {
  const watchdog = setTimeout(() => {
    console.error('not ok - the scenarios took longer than 240 s');
    process.exit(1);
  }, 240_000);

  let client = newClient(lib, { dataPath: DATA, clientId: CLIENT_ID });
  let device;
  let sent;

  await scenario('qr is emitted, the phone scans it, authenticated and ready follow', async () => {
    const qr = nextEvent(client, 'qr', 60_000);
    const authenticated = nextEvent(client, 'authenticated', 60_000);
    const ready = nextEvent(client, 'ready', 60_000);
    await client.initialize();
    const [code] = await qr;
    assert.equal(code.split(',').length, 5, `a QR string is ref plus four fields: ${code}`);
    ({ device } = await phone(SIM, 'POST', '/scan', { qr: code, phone: PHONE, pushname: 'Wwebjs' }));
    await authenticated;
    await ready;
  });

  await scenario('getState() is CONNECTED and client.info.wid is the phone number', async () => {
    assert.equal(await client.getState(), 'CONNECTED');
    assert.equal(client.info.wid._serialized, `${PHONE}@c.us`);
    assert.equal(client.info.wid.user, PHONE);
    assert.equal(client.info.pushname, 'Wwebjs');
  });

  await scenario('every module the library requires loads in the page', async () => {
    const names = modulesTheLibraryRequires();
    assert.ok(names.length > 100, `found only ${names.length} module names in the library`);
    const missing = await client.pupPage.evaluate((names) => names.filter((n) => {
      try {
        return !window.require(n);
      } catch (e) {
        return true;
      }
    }), names);
    assert.deepEqual(missing, []);
  });

  await scenario('sendMessage to a c.us id: in the sim exactly once with the reported id; acks follow the phone', async () => {
    const acks = [];
    client.on('message_ack', (msg, ack) => acks.push([msg.id._serialized, ack]));
    sent = await client.sendMessage(`${FRIEND}@c.us`, 'hello from whatsapp-web.js');
    assert.ok(sent, 'sendMessage returned a message');
    assert.equal(sent.id._serialized, `true_${FRIEND}@c.us_${sent.id.id}`);
    assert.equal(sent.fromMe, true);
    const log = await phone(SIM, 'GET', `/devices/${device}/messages`);
    const copies = log.filter((m) => m.id === sent.id.id);
    assert.equal(copies.length, 1, `the sim has ${copies.length} copies`);
    assert.equal(copies[0].to, `${FRIEND}@c.us`);
    assert.equal(copies[0].body, 'hello from whatsapp-web.js');
    const mine = () => acks.filter(([id]) => id === sent.id._serialized).map(([, ack]) => ack);
    // The sim's servers ack SERVER, then the recipient's phone DEVICE by itself.
    await until('the DEVICE ack', 20_000, () => mine().includes(2));
    await phone(SIM, 'POST', `/devices/${device}/ack`, { id: sent.id.id, ack: 'READ' });
    await until('the READ ack', 20_000, () => mine().includes(3));
    assert.deepEqual(mine(), [1, 2, 3]);
  });

  await scenario('a message the phone delivers raises message with the right from and body', async () => {
    const got = nextEvent(client, 'message', 20_000, (m) => m.from === `${STRANGER}@c.us`);
    const held = await phone(SIM, 'POST', `/devices/${device}/incoming`, { from: `+${STRANGER}`, body: 'hello bot', pushname: 'Ann' });
    const [msg] = await got;
    assert.equal(msg.body, 'hello bot');
    assert.equal(msg.id.id, held.id);
    assert.equal(msg.fromMe, false);
    assert.equal(msg.to, `${PHONE}@c.us`);
    await until('the sim to see the message delivered', 10_000, async () => {
      const inbox = await phone(SIM, 'GET', `/devices/${device}/incoming`);
      return inbox.some((m) => m.id === held.id && m.delivered);
    });
  });

  await scenario('a restart with the same LocalAuth directory reaches ready without a qr', async () => {
    await client.destroy();
    client = newClient(lib, { dataPath: DATA, clientId: CLIENT_ID });
    let qrs = 0;
    client.on('qr', () => { qrs += 1; });
    const ready = nextEvent(client, 'ready', 60_000);
    await client.initialize();
    await ready;
    assert.equal(qrs, 0, 'a saved session needs no QR');
    assert.equal(await client.getState(), 'CONNECTED');
    assert.equal(client.info.wid._serialized, `${PHONE}@c.us`);
    // History sync brought back what the account sent before the restart.
    const again = await client.getMessageById(sent.id._serialized);
    assert.ok(again, 'the message sent before the restart is in the page');
    assert.equal(again.body, 'hello from whatsapp-web.js');
    assert.equal(again.ack, 3);
  });

  await scenario('a phone logout raises disconnected with LOGOUT, wipes the LocalAuth profile and offers a new qr', async () => {
    const profile = path.join(DATA, `session-${CLIENT_ID}`);
    const disconnected = nextEvent(client, 'disconnected', 30_000);
    const qr = nextEvent(client, 'qr', 60_000);
    await phone(SIM, 'POST', `/devices/${device}/logout`, {});
    const [reason] = await disconnected;
    assert.equal(reason, 'LOGOUT');
    const [code] = await qr;
    assert.equal(code.split(',').length, 5);
    const devices = await phone(SIM, 'GET', '/devices');
    assert.equal(devices.find((d) => d.device === device).state, 'logged_out');
    // LocalAuth deleted the old profile; the page that offers the new QR
    // runs in a fresh one with no stored credential.
    const creds = await client.pupPage.evaluate(() => new Promise((resolve) => {
      const req = indexedDB.open('wawc', 1);
      req.onsuccess = () => {
        const get = req.result.transaction('user').objectStore('user').get('cred');
        get.onsuccess = () => resolve(get.result === undefined ? 0 : 1);
        get.onerror = () => resolve(-1);
      };
      req.onerror = () => resolve(-1);
    }));
    assert.equal(creds, 0);
    assert.ok(fs.existsSync(profile));
    tearingDown = true;
    await client.destroy();
  });

  assert.deepEqual(unhandled.map(String), [], 'unhandled rejections');

  clearTimeout(watchdog);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`not ok ${step + 1} - ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
