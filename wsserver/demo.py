"""The built-in demo of ``python -m wsserver``: echo, chat, and a page to try them.

* ``ws://host:port/`` (or any path but ``/chat``) echoes every message back;
* ``ws://host:port/chat`` relays every message to everyone in the room;
* a plain browser visit to ``http://host:port/`` gets a small page using both.

The room is a channel of :func:`wsserver.pubsub.current_channels`: in one
process it lives in memory; with ``--workers N --redis URL`` every worker
subscribes to it through Redis, so two tabs that landed on different workers
still talk.
"""

from __future__ import annotations

from http import HTTPStatus

from .connection import Data, HTTPResponse, WebSocketServerProtocol
from .pubsub import Channels, PublishError, current_channels
from .sansio import ConnectionClosed, Headers

__all__ = ["CHAT_CHANNEL", "DEMO_PAGE", "demo_handler", "demo_process_request"]

CHAT_CHANNEL = "wsserver.demo.chat"
"""The channel of the demo's chat room."""

DEMO_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsserver demo</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #999; height: 20em; overflow-y: auto; padding: .5em; }
  #log p { margin: .2em 0; } .me { color: #06c; } .sys { color: #888; }
</style>
</head>
<body>
<h1>wsserver demo</h1>
<p>Mode:
  <label><input type="radio" name="mode" value="/" checked> echo</label>
  <label><input type="radio" name="mode" value="/chat"> chat</label>
  <span id="status" class="sys">connecting...</span></p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" size="50" autofocus>
<button>Send</button></form>
<script>
let ws;
const log = (text, cls) => {
  const p = document.createElement("p");
  p.textContent = text; p.className = cls || "";
  const box = document.getElementById("log");
  box.appendChild(p); box.scrollTop = box.scrollHeight;
};
function connect(path) {
  if (ws) ws.close(1000);
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  ws = new WebSocket(scheme + location.host + path);
  ws.onopen = () => { document.getElementById("status").textContent = "connected to " + path; };
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log("closed: " + event.code + " " + event.reason, "sys");
}
document.querySelectorAll("input[name=mode]").forEach(
  (radio) => radio.addEventListener("change", () => connect(radio.value)));
document.getElementById("form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (ws && ws.readyState === WebSocket.OPEN && input.value) {
    log("> " + input.value, "me"); ws.send(input.value); input.value = "";
  }
});
connect("/");
</script>
</body>
</html>
"""


def demo_process_request(path: str, request_headers: Headers) -> HTTPResponse | None:
    """Serve the demo page to plain HTTP requests; let WebSocket upgrades through."""
    if "websocket" in request_headers.get("Upgrade", "").lower():
        return None
    if path.split("?", 1)[0] != "/":
        return HTTPStatus.NOT_FOUND, {"Content-Type": "text/plain"}, b"Not found.\n"
    headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
    return HTTPStatus.OK, headers, DEMO_PAGE.encode()


async def demo_handler(websocket: WebSocketServerProtocol) -> None:
    """Echo every message, or relay it to the chat room on ``/chat``."""
    if websocket.path.split("?", 1)[0] != "/chat":
        async for message in websocket:
            await websocket.send(message)
        return
    channels = current_channels()
    async with channels.subscribe(websocket, CHAT_CHANNEL):
        await _say(websocket, channels, "someone joined")
        try:
            async for message in websocket:
                await _say(websocket, channels, message)
        except ConnectionClosed:
            pass  # gone without a closing handshake: leaving all the same
    await _say(websocket, channels, "someone left")


async def _say(websocket: WebSocketServerProtocol, channels: Channels, message: Data) -> None:
    try:
        await channels.publish(CHAT_CHANNEL, message)
    except PublishError as exc:
        # The room on this worker heard it; the chat goes on without the others.
        websocket.logger.warning("chat message not relayed: %s", exc)
