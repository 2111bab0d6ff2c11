"""The one stub of an OpenAI-compatible chat endpoint that the tests of its clients share: rewards.py's verifier
(eq. 2), judges.py's judges and eval.py's answer extractor all POST /v1/chat/completions and read
choices[0].message.content. A test gives respond(handler, request) and gets the stub's URL; reply_chat writes
the usual answer, and a test of a misbehaving server writes what it wants through the handler itself."""
import contextlib
import http.server
import json
import socket
import threading


@contextlib.contextmanager
def chat_endpoint(respond):
    """A stub on 127.0.0.1 that calls respond(handler, request) for every POST, request being its JSON body.
    -> yields the base URL (http://127.0.0.1:PORT); the server is shut down on exit. One thread per request
    (daemon threads: a respond that hangs on purpose never blocks the shutdown)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            respond(self, json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

        def log_message(self, *args):   # no access log in the test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def reply_chat(handler, content, status=200):
    """A chat-completions reply whose message is `content`. A client that gave up first (the timeout tests) is
    no error of the stub."""
    payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass


def unused_port():
    """A port on 127.0.0.1 that nobody listens on: an endpoint that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
