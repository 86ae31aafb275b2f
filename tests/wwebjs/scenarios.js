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
const zlib = require('zlib');
const crypto = require('crypto');
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

/** A `width` × `height` RGB PNG with a colour gradient (a picture the page can decode). */
function png(width, height) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) row.set([(x * 255) / width, (y * 255) / height, 128], 1 + x * 3);
    rows.push(row);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.concat(rows))), chunk('IEND', Buffer.alloc(0))]);
}

const sha256hex = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

/** A multipart/form-data body: text parts, then one file part. */
function form(fields, file) {
  const boundary = 'wasup-scenarios-' + crypto.randomBytes(8).toString('hex');
  const parts = Object.entries(fields).map(([k, v]) => Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${file.filename}"\r\nContent-Type: ${file.mimetype}\r\n\r\n`));
  parts.push(file.data, Buffer.from(`\r\n--${boundary}--\r\n`));
  return { type: `multipart/form-data; boundary=${boundary}`, body: Buffer.concat(parts) };
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
    // sendMessage resolves once the message is in the page; the servers
    // take it a moment later.
    await until('the message in the sim', 10_000, async () => {
      const log = await phone(SIM, 'GET', `/devices/${device}/messages`);
      return log.some((m) => m.id === sent.id.id);
    });
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

  await scenario('sendMessage with a MessageMedia photo and a document: the sim logs each with the SHA-256 of the bytes sent', async () => {
    const photo = png(64, 48);
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n');
    const { MessageMedia } = lib;
    const sentPhoto = await client.sendMessage(`${FRIEND}@c.us`, new MessageMedia('image/png', photo.toString('base64'), 'gradient.png'), { caption: 'a gradient' });
    const sentPdf = await client.sendMessage(`${FRIEND}@c.us`, new MessageMedia('application/pdf', pdf.toString('base64'), 'offer.pdf'), { caption: 'the offer' });
    assert.equal(sentPhoto.type, 'image');
    assert.equal(sentPhoto.hasMedia, true);
    assert.equal(sentPhoto.body, 'a gradient');
    assert.equal(sentPdf.type, 'document');
    const log = await until('both media messages in the sim', 20_000, async () => {
      const all = await phone(SIM, 'GET', `/devices/${device}/messages`);
      const mine = all.filter((m) => m.id === sentPhoto.id.id || m.id === sentPdf.id.id);
      return mine.length === 2 ? mine : null;
    });
    const byId = Object.fromEntries(log.map((m) => [m.id, m]));
    const p = byId[sentPhoto.id.id];
    assert.deepEqual([p.type, p.mimetype, p.size, p.sha256, p.body], ['image', 'image/png', photo.length, sha256hex(photo), 'a gradient']);
    const d = byId[sentPdf.id.id];
    assert.deepEqual(
      [d.type, d.mimetype, d.filename, d.size, d.sha256, d.body],
      ['document', 'application/pdf', 'offer.pdf', pdf.length, sha256hex(pdf), 'the offer'],
    );
    // The sent message downloads again from the media host, unchanged.
    const back = await sentPdf.downloadMedia();
    assert.equal(Buffer.from(back.data, 'base64').equals(pdf), true);
  });

  await scenario('a document the phone delivers raises message with hasMedia, the caption as body, and downloadMedia gives the bytes', async () => {
    const file = Buffer.from(crypto.randomBytes(3000));
    const got = nextEvent(client, 'message', 20_000, (m) => m.from === `${STRANGER}@c.us` && m.hasMedia);
    const { type, body } = form({ from: STRANGER, caption: 'the report', pushname: 'Ann' }, { filename: 'report.bin', mimetype: 'application/octet-stream', data: file });
    const res = await fetch(`${SIM}/_phone/devices/${device}/incoming`, { method: 'POST', headers: { 'content-type': type }, body });
    const held = await res.json();
    assert.equal(res.status, 200, JSON.stringify(held));
    assert.deepEqual([held.type, held.size, held.sha256], ['document', file.length, sha256hex(file)]);
    const [msg] = await got;
    assert.equal(msg.id.id, held.id);
    assert.equal(msg.type, 'document');
    assert.equal(msg.body, 'the report');
    const media = await msg.downloadMedia();
    assert.ok(media, 'downloadMedia gave the file');
    assert.deepEqual([media.mimetype, media.filename, media.filesize], ['application/octet-stream', 'report.bin', file.length]);
    assert.equal(Buffer.from(media.data, 'base64').equals(file), true);
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
