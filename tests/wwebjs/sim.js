// Points an unmodified whatsapp-web.js at a running `wasup sim` and talks to
// the simulator's phone API. Shared by scenarios.js (the tests) and
// harness.js (the bench).
//
// The only thing set on the library is its `WhatsWebURL` constant, before
// the library is loaded (its Client module reads the constant once, when it
// is first required). Everything else is public API: `new Client({...})`
// with `LocalAuth`, `webVersionCache: {type: 'none'}` and Debian's Chromium.
'use strict';

const path = require('path');

/** Loads whatsapp-web.js pointed at the simulator at `simBase` (`http://127.0.0.1:<port>`). */
function loadLibrary(simBase) {
  const constants = require('whatsapp-web.js/src/util/Constants');
  constants.WhatsWebURL = simBase.replace(/\/?$/, '/');
  return require('whatsapp-web.js');
}

/** Chromium flags for a headless browser as root in a container, on a closed network. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-dev-shm-usage',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * A client with a LocalAuth profile `<dataPath>/session-<clientId>`.
 * `extra` is merged into the options (e.g. `{authTimeoutMs}`).
 */
function newClient(lib, { dataPath, clientId, extra = {} }) {
  return new lib.Client({
    authStrategy: new lib.LocalAuth({ clientId, dataPath: path.resolve(dataPath) }),
    webVersionCache: { type: 'none' },
    puppeteer: {
      executablePath: process.env.WASUP_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: CHROMIUM_ARGS,
    },
    ...extra,
  });
}

/** One call to the phone API; resolves to the parsed JSON answer, rejects on a non-2xx. */
async function phone(simBase, method, route, body) {
  const res = await fetch(simBase + '/_phone' + route, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (e) {
    json = text;
  }
  if (!res.ok) throw new Error(`phone ${method} ${route}: HTTP ${res.status}: ${text}`);
  return json;
}

/**
 * Resolves with the arguments of the first `event` from `emitter` that
 * `accept` takes, or rejects after `ms`.
 */
function nextEvent(emitter, event, ms, accept = () => true) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    function on(...args) {
      if (!accept(...args)) return;
      clearTimeout(timer);
      emitter.off(event, on);
      resolve(args);
    }
    emitter.on(event, on);
  });
}

/** Polls `check` every 50 ms until it returns a truthy value; rejects after `ms`. */
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

module.exports = { loadLibrary, newClient, phone, nextEvent, until, CHROMIUM_ARGS };
