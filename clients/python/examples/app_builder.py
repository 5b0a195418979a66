"""Build your own app builder in ~50 lines: a sandbox per user, the user's
prompt run as a task, its events streamed to the browser, the preview in
an iframe. Run: SANDBOXD_URL=... SANDBOXD_API_KEY=... python3 app_builder.py
and open http://localhost:8000/?user=alice (docs/app-builder-python.md)."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from sandboxd import Sandboxd

client = Sandboxd()  # SANDBOXD_URL and SANDBOXD_API_KEY from the environment
AGENT = os.environ.get("APP_BUILDER_AGENT", "claude-code")  # or opencode, or command (runs the prompt with sh)

PAGE = """<!doctype html><meta charset=utf-8><title>App builder</title>
<form id=f><input name=prompt size=80 placeholder="make the header red"> <button>Build</button></form>
<pre id=log style="height:20vh;overflow:auto;background:#111;color:#ddd"></pre>
<iframe id=app src="%s" style="width:100%%;height:65vh;border:1px solid #ccc"></iframe>
<script>
f.onsubmit = async (e) => {
  e.preventDefault(); log.textContent = "";
  const q = new URLSearchParams(location.search);
  const r = await fetch("/run?" + q, {method: "POST", body: new FormData(f).get("prompt")});
  q.set("task", (await r.json()).task);
  const es = new EventSource("/events?" + q);
  es.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    log.textContent += ev.event === "output" ? ev.data.text : ev.event + " " + JSON.stringify(ev.data) + "\\n";
    log.scrollTop = log.scrollHeight;
    if (ev.event === "exit") { es.close(); app.src = app.src; }  // reload the preview
  };
};
</script>"""


def sandbox_for(user):
    """The user's sandbox: found by its label, or made (and woken by any request)."""
    found = client.sandboxes.list(label={"app-builder-user": user})
    return found[0] if found else client.sandboxes.create(labels={"app-builder-user": user})


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path not in ("/", "/events"):
            return self.reply(404, "text/plain", "not found")
        sbx = sandbox_for(q.get("user", "demo"))
        if url.path == "/":  # the page, with the preview (a token URL works for private sandboxes too)
            return self.reply(200, "text/html; charset=utf-8", PAGE % sbx.preview_token().url)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        after = self.headers.get("Last-Event-ID")  # the browser resumes where it was
        for ev in sbx.tasks.get(q["task"]).events(after=int(after) if after else None):
            self.wfile.write(b"id: %d\ndata: %s\n\n" % (ev.id or 0, json.dumps({"event": ev.event, "data": ev.data}).encode()))
            self.wfile.flush()

    def do_POST(self):  # POST /run: the prompt is the body
        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        prompt = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        sbx = sandbox_for(q.get("user", "demo"))
        task = sbx.tasks.run(cmd=prompt) if AGENT == "command" else sbx.tasks.run(agent=AGENT, prompt=prompt)
        self.reply(202, "application/json", json.dumps({"task": task.id}))

    def reply(self, status, ctype, text):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(text.encode())))
        self.end_headers()
        self.wfile.write(text.encode())


if __name__ == "__main__":
    port = int(os.environ.get("APP_BUILDER_PORT", "8000"))
    print("app builder on http://localhost:%d/?user=alice" % port, flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
