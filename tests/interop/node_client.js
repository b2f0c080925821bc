#!/usr/bin/env node
// Node's `ws` client against a wsserver echo server (see echo_server.py).
//
// Usage: node node_client.js ws://127.0.0.1:PORT [scenario | all]
//
// Prints one JSON object on stdout: {scenario: result}, where a result is
// {ok: true, ...what the client observed} or {ok: false, error: "..."}. The
// Python test (test_node_ws.py) asserts on each result. Every scenario tags
// its connections with `?case=<scenario>` so the server's records can be found.
"use strict";

const crypto = require("crypto");
const WebSocket = require("ws");

const SCENARIO_TIMEOUT_MS = 15000;
const MEBIBYTE = 1024 * 1024;

// A connection whose incoming messages are queued, so that a scenario can
// simply `await conn.next()` in order.
class Connection {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    // Listen at once: a ping may come in the same read as the 101 response.
    this.firstPing = new Promise((resolve) => ws.once("ping", (data) => resolve(data)));
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    ws.on("message", (data, isBinary) => {
      const message = isBinary ? { binary: data } : { text: data.toString("utf8") };
      const waiter = this.waiters.shift();
      if (waiter) waiter(message);
      else this.queue.push(message);
    });
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      this.waiters.push(resolve);
      this.closed.then((event) => reject(new Error(`closed ${event.code} ${event.reason}`)));
    });
  }

  send(data, options = {}) {
    return new Promise((resolve, reject) => {
      this.ws.send(data, options, (error) => (error ? reject(error) : resolve()));
    });
  }

  async echo(data) {
    await this.send(data);
    return this.next();
  }

  async close(code, reason) {
    this.ws.close(code, reason);
    return this.closed;
  }
}

// Open a connection; resolve once open with the connection and the 101's headers.
function connect(url, protocols = [], options = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, options);
    let headers = {};
    const connection = new Connection(ws);
    ws.on("upgrade", (response) => { headers = response.headers; });
    ws.on("open", () => resolve({ connection, headers }));
    ws.on("unexpected-response", (request, response) => {
      let body = "";
      response.on("data", (chunk) => { body += chunk; });
      response.on("end", () => {
        const error = new Error(`unexpected response ${response.statusCode}`);
        error.statusCode = response.statusCode;
        error.body = body;
        reject(error);
        request.destroy();
      });
    });
    ws.on("error", reject);
  });
}

// Describe a received message in JSON: text as is, binary as hex.
const describe = (message) =>
  "text" in message ? { text: message.text } : { hex: message.binary.toString("hex") };

async function echoAll(url, messages, options) {
  const { connection, headers } = await connect(url, [], options);
  const echoes = [];
  for (const message of messages) echoes.push(describe(await connection.echo(message)));
  await connection.close(1000);
  return { echoes, extensions: headers["sec-websocket-extensions"] || null };
}

// Echo a compressible message with the given permessage-deflate options.
async function deflate(url, perMessageDeflate) {
  const message = "compress me ".repeat(1000);
  const { connection, headers } = await connect(url, [], { perMessageDeflate });
  const echoes = [await connection.echo(message), await connection.echo(message)];
  await connection.close(1000);
  return {
    echoed: echoes.every((echo) => echo.text === message),
    extensions: headers["sec-websocket-extensions"] || null,
  };
}

const scenarios = {
  "text-and-binary": (at) =>
    echoAll(at("/echo"), ["hello", "caf\u00e9 \u2603", Buffer.from([0, 255]), Buffer.from("b")]),

  empty: (at) => echoAll(at("/echo"), ["", Buffer.alloc(0)]),

  mebibyte: async (at) => {
    const binary = crypto.randomBytes(MEBIBYTE);
    const text = "wsserver ".repeat(Math.floor(MEBIBYTE / 9) + 1).slice(0, MEBIBYTE);
    const { connection } = await connect(at("/echo"));
    const binaryEcho = await connection.echo(binary);
    const textEcho = await connection.echo(text);
    await connection.close(1000);
    return {
      binaryEchoed: "binary" in binaryEcho && binaryEcho.binary.equals(binary),
      textEchoed: textEcho.text === text,
    };
  },

  "fragmented-from-client": async (at) => {
    const { connection } = await connect(at("/echo"));
    await connection.send("frag", { fin: false });
    await connection.send("ment", { fin: false });
    await connection.send("ed \u2603", { fin: true });
    const text = describe(await connection.next());
    await connection.send(Buffer.from([0, 1]), { fin: false, binary: true });
    await connection.send(Buffer.from([254, 255]), { fin: true, binary: true });
    const binary = describe(await connection.next());
    await connection.close(1000);
    return { echoes: [text, binary] };
  },

  "fragmented-from-server": async (at) => {
    const { connection } = await connect(at("/fragmented"));
    const received = [describe(await connection.next()), describe(await connection.next())];
    await connection.close(1000);
    return { received };
  },

  "client-ping": async (at) => {
    const { connection } = await connect(at("/echo"));
    const pong = new Promise((resolve) => connection.ws.once("pong", resolve));
    connection.ws.ping("client ping");
    const data = await pong;
    await connection.close(1000);
    return { pong: data.toString() };
  },

  "server-ping": async (at) => {
    const { connection } = await connect(at("/ping"));
    const first = describe(await connection.next());
    const pingData = (await connection.firstPing).toString();
    const second = describe(await connection.echo("after ping"));
    await connection.close(1000);
    return { ping: pingData, received: [first, second] };
  },

  "deflate-default": (at) => deflate(at("/echo"), true),
  "deflate-off": (at) => deflate(at("/echo"), false),
  "deflate-client-max-window-bits-10": (at) =>
    deflate(at("/echo"), { clientMaxWindowBits: 10 }),
  "deflate-server-max-window-bits-10": (at) =>
    deflate(at("/echo"), { serverMaxWindowBits: 10 }),
  "deflate-no-context-takeover": (at) =>
    deflate(at("/echo"), { clientNoContextTakeover: true, serverNoContextTakeover: true }),

  subprotocol: async (at) => {
    const { connection } = await connect(at("/echo"), ["other", "chat.v1"]);
    const protocol = connection.ws.protocol;
    await connection.close(1000);
    return { protocol };
  },

  "no-subprotocol-offered": async (at) => {
    const { connection, headers } = await connect(at("/echo"));
    const protocol = connection.ws.protocol;
    await connection.close(1000);
    return { protocol, header: headers["sec-websocket-protocol"] || null };
  },

  // ws refuses a 101 without a subprotocol when it offered some (RFC 6455
  // lets the server choose none): the server must have sent none.
  "no-common-subprotocol": async (at) => {
    try {
      await connect(at("/echo"), ["other"]);
    } catch (error) {
      return { error: error.message };
    }
    throw new Error("the handshake succeeded");
  },

  rejected: async (at) => {
    try {
      await connect(at("/forbidden"));
    } catch (error) {
      return { statusCode: error.statusCode || null, body: error.body || null };
    }
    throw new Error("the handshake succeeded");
  },

  "close-1000": async (at) => {
    const { connection } = await connect(at("/echo"));
    await connection.echo("bye soon");
    return { closed: await connection.close(1000, "done") };
  },

  "close-custom": async (at) => {
    const { connection } = await connect(at("/echo"));
    await connection.echo("bye soon");
    return { closed: await connection.close(4000, "custom reason \u2603") };
  },

  "server-close": async (at) => {
    const { connection } = await connect(at("/close"));
    return { closed: await connection.closed };
  },
};

// Run one scenario with a deadline; never throw. A scenario gets `at(path)`,
// which gives the URL of a path on the server, tagged with ?case=NAME.
async function run(name, baseUrl) {
  const at = (path) => `${baseUrl}${path}?case=${name}`;
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), SCENARIO_TIMEOUT_MS);
  });
  try {
    const result = await Promise.race([scenarios[name](at), deadline]);
    return { ok: true, ...result };
  } catch (error) {
    return { ok: false, error: String(error && error.stack ? error.stack : error) };
  } finally {
    clearTimeout(timer);
  }
}

async function main() {
  const [baseUrl, which = "all"] = process.argv.slice(2);
  if (!baseUrl) {
    console.error("usage: node node_client.js ws://host:port [scenario | all]");
    process.exit(2);
  }
  const names = which === "all" ? Object.keys(scenarios) : [which];
  for (const name of names) {
    if (!(name in scenarios)) {
      console.error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(", ")}`);
      process.exit(2);
    }
  }
  const results = {};
  for (const name of names) results[name] = await run(name, baseUrl);
  process.stdout.write(JSON.stringify(results) + "\n");
}

main();
