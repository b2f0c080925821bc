'use strict';
// Load client for bench/bench_echo.py: Node's `ws` (with `bufferutil` for
// masking) against a WebSocket echo server, or plain `net` sockets against a
// raw TCP echo server. One scenario per run; the result is one JSON line on
// stdout.
//
//   node client.js --mode ws|tcp --port N --scenario echo|handshake|idle
//                  [--connections C] [--inflight K] [--size BYTES]
//                  [--parallel P] [--seconds S] [--warmup S]
//                  [--server-pid PID] [--clk-tck HZ] [--deflate 0|1]
//
// echo:      C connections, each keeping K messages of BYTES in flight (K=1 is
//            ping-pong: send, wait for the echo, send again); counts echoes.
// handshake: P loops, each opening a connection and closing it as soon as it
//            is open (TCP: connect, half-close, wait for the close), repeated.
// idle:      open C connections (P at a time), print {"opened": C}, then hold
//            them until SIGTERM; with --echo-first 1 each connection first
//            exchanges one message (so that compression contexts exist).
// info:      print the versions in use and whether bufferutil is the native build.
//
// Counting starts after --warmup seconds and lasts --seconds. The client's
// CPU time over that window comes from process.cpuUsage(); the server's from
// /proc/PID/stat, so the two can be compared with the rate.

const fs = require('fs');
const net = require('net');
const WebSocket = require('ws');

const HOST = '127.0.0.1';

function parseArgs(argv) {
  const options = {
    mode: 'ws',
    port: 0,
    scenario: 'echo',
    connections: 1,
    inflight: 1,
    size: 32,
    parallel: 1,
    seconds: 3,
    warmup: 0.5,
    serverPid: 0,
    clkTck: 100,
    deflate: 0,
    echoFirst: 0,
  };
  for (let i = 2; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(name in options)) throw new Error(`unknown option ${argv[i]}`);
    const value = argv[i + 1];
    options[name] = typeof options[name] === 'number' ? Number(value) : value;
  }
  return options;
}

const options = parseArgs(process.argv);
const url = `ws://${HOST}:${options.port}/`;
const payload = Buffer.alloc(options.size, 'x');
let completed = 0; // echoes received, or handshakes finished
let errors = 0;

function serverCpuSeconds() {
  if (!options.serverPid) return 0;
  // Fields after the command name, which is in parentheses and may hold spaces.
  const stat = fs.readFileSync(`/proc/${options.serverPid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / options.clkTck; // utime + stime
}

// Starts counting after the warm-up, stops after the measured window, prints
// the result and exits.
function measure() {
  setTimeout(() => {
    const startCount = completed;
    const startTime = process.hrtime.bigint();
    const startCpu = process.cpuUsage();
    const startServerCpu = serverCpuSeconds();
    setTimeout(() => {
      const elapsed = Number(process.hrtime.bigint() - startTime) / 1e9;
      const cpu = process.cpuUsage(startCpu);
      const count = completed - startCount;
      report({
        count,
        elapsed,
        rate: count / elapsed,
        bytes_per_second: (count * options.size) / elapsed,
        client_cpu: (cpu.user + cpu.system) / 1e6 / elapsed,
        server_cpu: (serverCpuSeconds() - startServerCpu) / elapsed,
        errors,
      });
      process.exit(0);
    }, options.seconds * 1000);
  }, options.warmup * 1000);
}

function report(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}

function fail(message) {
  process.stderr.write(`client: ${message}\n`);
  process.exit(2);
}

// -- opening connections ---------------------------------------------------------

// Calls back with an open connection: a `ws` WebSocket or a `net` socket.
function connect(callback) {
  if (options.mode === 'ws') {
    // With --deflate 1: permessage-deflate at ws's defaults, except that every
    // message is compressed (ws skips those under 1 KiB by default).
    const perMessageDeflate = options.deflate ? { threshold: 0 } : false;
    const ws = new WebSocket(url, { perMessageDeflate });
    ws.binaryType = 'nodebuffer';
    ws.once('open', () => callback(ws));
    ws.on('error', (error) => {
      if (options.scenario !== 'handshake') fail(`connection failed: ${error.message}`);
    });
    return ws;
  }
  const socket = net.connect(options.port, HOST);
  socket.setNoDelay(true);
  socket.once('connect', () => callback(socket));
  socket.on('error', (error) => {
    if (options.scenario !== 'handshake') fail(`connection failed: ${error.message}`);
  });
  return socket;
}

// Opens `count` connections, at most `parallel` at a time; calls back with all.
function openMany(count, parallel, callback) {
  const opened = [];
  let started = 0;
  function startNext() {
    if (started >= count) return;
    started += 1;
    connect((connection) => {
      opened.push(connection);
      if (opened.length === count) callback(opened);
      else startNext();
    });
  }
  for (let i = 0; i < Math.min(parallel, count); i += 1) startNext();
}

// Like openMany, but each connection first sends one message and waits for its echo.
function openManyAfterOneEcho(count, parallel, callback) {
  const opened = [];
  let started = 0;
  function startNext() {
    if (started >= count) return;
    started += 1;
    connect((connection) => {
      connection.once('message', () => {
        opened.push(connection);
        if (opened.length === count) callback(opened);
        else startNext();
      });
      connection.send(payload);
    });
  }
  for (let i = 0; i < Math.min(parallel, count); i += 1) startNext();
}

// -- scenarios -------------------------------------------------------------------

function runEcho() {
  openMany(options.connections, 64, (connections) => {
    for (const connection of connections) {
      connection.once('close', () => fail('the server closed a connection during the run'));
      if (options.mode === 'ws') {
        connection.on('message', () => {
          completed += 1;
          connection.send(payload);
        });
      } else {
        // A raw echo has no message boundaries: count whole messages' worth of bytes.
        let received = 0;
        connection.on('data', (chunk) => {
          received += chunk.length;
          while (received >= options.size) {
            received -= options.size;
            completed += 1;
            connection.write(payload);
          }
        });
      }
      for (let i = 0; i < options.inflight; i += 1) {
        if (options.mode === 'ws') connection.send(payload);
        else connection.write(payload);
      }
    }
    measure();
  });
}

function runHandshakes() {
  function loop() {
    // Only a connection that opened and then closed counts; a failure is an
    // error, retried after a pause so that a dead server is not hammered.
    let opened = false;
    function closed() {
      if (opened) {
        completed += 1;
        loop();
      } else {
        errors += 1;
        setTimeout(loop, 10);
      }
    }
    if (options.mode === 'ws') {
      const ws = connect(() => {
        opened = true;
        ws.close();
      });
      ws.once('close', closed);
    } else {
      const socket = connect(() => {
        opened = true;
        socket.end();
      });
      socket.resume(); // drain, so that the server's close is seen
      socket.once('close', closed);
    }
  }
  for (let i = 0; i < options.parallel; i += 1) loop();
  measure();
}

function runIdle() {
  const open = options.echoFirst ? openManyAfterOneEcho : openMany;
  open(options.connections, options.parallel, (connections) => {
    report({ opened: connections.length, errors });
    process.on('SIGTERM', () => process.exit(0));
    setInterval(() => {}, 1 << 30); // hold the connections until told to stop
  });
}

function runInfo() {
  let bufferutil = 'missing';
  try {
    const native = String(require('bufferutil').mask).includes('[native code]');
    bufferutil = `${require('bufferutil/package.json').version} (${native ? 'native' : 'JS fallback'})`;
  } catch (error) {
    // reported as missing
  }
  report({ node: process.version, ws: require('ws/package.json').version, bufferutil });
}

const scenarios = { echo: runEcho, handshake: runHandshakes, idle: runIdle, info: runInfo };
if (!(options.scenario in scenarios)) fail(`unknown scenario ${options.scenario}`);
scenarios[options.scenario]();
