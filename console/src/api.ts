// The sandboxd API as the console uses it: same origin, the key in an
// Authorization header (never in a URL), errors as ApiError with the
// API's code and message.

export interface Sandbox {
  id: string;
  tenant: string;
  template: string;
  state: string;
  preview_url: string;
  port: number;
  visibility: string;
  memory_mb: number;
  cpus: number;
  created_at: string;
  last_active_at: string;
  error: string | null;
}

export interface Task {
  id: string;
  agent: string;
  state: string;
  exit_code: number | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface Entry {
  name: string;
  type: string;
  size: number;
  mtime: string;
}

export interface TaskEvent {
  id: number;
  event: string;
  data: any;
}

export class ApiError extends Error {
  constructor(public status: number, public code: string, message: string) {
    super(message);
  }
}

// File paths go into the URL one segment at a time.
export function filePath(path: string): string {
  return path.split("/").filter((s) => s !== "").map(encodeURIComponent).join("/");
}

export class Api {
  constructor(private key: string) {}

  async call(method: string, path: string, body?: unknown, raw?: BodyInit): Promise<Response> {
    const headers: Record<string, string> = { Authorization: "Bearer " + this.key };
    let payload: BodyInit | undefined = raw;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const r = await fetch(path, { method, headers, body: payload, cache: "no-store" });
    if (!r.ok) {
      let code = "http_" + r.status, message = r.status + " " + r.statusText;
      try {
        const j = await r.json();
        if (j && j.error) {
          code = j.error.code || code;
          message = j.error.message || message;
        }
      } catch {
        /* not the API's JSON: keep the status line */
      }
      throw new ApiError(r.status, code, message);
    }
    return r;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const r = await this.call(method, path, body);
    return r.status === 204 ? (undefined as T) : ((await r.json()) as T);
  }

  list(): Promise<{ sandboxes: Sandbox[] }> {
    return this.json("GET", "/v1/sandboxes");
  }
  create(template: string, visibility: string): Promise<Sandbox> {
    const body: Record<string, string> = { visibility };
    if (template) body.template = template;
    return this.json("POST", "/v1/sandboxes", body);
  }
  get(id: string): Promise<Sandbox> {
    return this.json("GET", `/v1/sandboxes/${id}`);
  }
  action(id: string, what: "stop" | "start"): Promise<Sandbox> {
    return this.json("POST", `/v1/sandboxes/${id}/${what}`);
  }
  remove(id: string): Promise<void> {
    return this.json("DELETE", `/v1/sandboxes/${id}`);
  }
  previewToken(id: string): Promise<{ url: string; expires_at: string }> {
    return this.json("POST", `/v1/sandboxes/${id}/preview-token`, { ttl_s: 3600 });
  }
  async dir(id: string, path: string): Promise<Entry[]> {
    const p = filePath(path);
    const r = await this.json<{ entries: Entry[] }>("GET", `/v1/sandboxes/${id}/files${p ? "/" + p : ""}`);
    return r.entries;
  }
  async read(id: string, path: string): Promise<string> {
    const r = await this.call("GET", `/v1/sandboxes/${id}/files/${filePath(path)}`);
    return r.text();
  }
  async write(id: string, path: string, text: string): Promise<void> {
    await this.call("PUT", `/v1/sandboxes/${id}/files/${filePath(path)}`, undefined,
      new TextEncoder().encode(text));
  }
  tasks(id: string): Promise<{ tasks: Task[] }> {
    return this.json("GET", `/v1/sandboxes/${id}/tasks`);
  }
  runTask(id: string, agent: string, text: string): Promise<Task> {
    const body = agent === "command" ? { agent, cmd: ["sh", "-c", text] } : { agent, prompt: text };
    return this.json("POST", `/v1/sandboxes/${id}/tasks`, body);
  }
  taskAction(id: string, tid: string, what: "cancel" | "revert"): Promise<Task> {
    return this.json("POST", `/v1/sandboxes/${id}/tasks/${tid}/${what}`);
  }

  // A task's events: fetch with a streamed body (EventSource cannot send
  // Authorization), parsed as SSE; reconnects with Last-Event-ID after a
  // dropped stream until the exit event or abort.
  async events(id: string, tid: string, onEvent: (e: TaskEvent) => void, signal: AbortSignal): Promise<void> {
    let last = 0, done = false, tries = 0;
    while (!done && !signal.aborted && tries < 20) {
      const headers: Record<string, string> = {
        Authorization: "Bearer " + this.key, Accept: "text/event-stream",
      };
      if (last > 0) headers["Last-Event-ID"] = String(last);
      let r: Response;
      try {
        r = await fetch(`/v1/sandboxes/${id}/tasks/${tid}/events`, { headers, signal, cache: "no-store" });
      } catch (e) {
        if (signal.aborted) return;
        tries++;
        await new Promise((ok) => setTimeout(ok, 1000));
        continue;
      }
      if (!r.ok || !r.body) throw new ApiError(r.status, "http_" + r.status, "the event stream answered " + r.status);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "", ev = "message", data: string[] = [], eid = 0;
      try {
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          buf += value;
          let nl: number;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, "");
            buf = buf.slice(nl + 1);
            if (line === "") {
              if (data.length > 0) {
                let parsed: any = data.join("\n");
                try { parsed = JSON.parse(parsed); } catch { /* plain text */ }
                if (eid > 0) last = eid;
                onEvent({ id: eid, event: ev, data: parsed });
                if (ev === "exit") done = true;
              }
              ev = "message"; data = []; eid = 0;
            } else if (line.startsWith(":")) {
              continue;
            } else {
              const c = line.indexOf(":");
              const field = c < 0 ? line : line.slice(0, c);
              const val = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
              if (field === "event") ev = val;
              else if (field === "data") data.push(val);
              else if (field === "id") eid = parseInt(val, 10) || 0;
            }
          }
        }
      } catch (e) {
        if (signal.aborted) return;
      }
      tries++;
    }
  }
}
