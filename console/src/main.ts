// The sandboxd console: sign in with an API key (kept in this tab's
// sessionStorage only), a sidebar of sandboxes with live states, and for
// the one selected its preview beside files, tasks and a terminal.
import "./styles.css";
import { Api, ApiError, Entry, Sandbox, Task, TaskEvent } from "./api";
import { openTerminal, TerminalHandle } from "./terminal";

const KEY = "sandboxd.key";
const POLL_MS = 2000;

type Child = Node | string | null | undefined | false;

// Elements from code, never from HTML strings: no text is ever markup.
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, any> = {},
  ...kids: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k in el && k !== "list" && !k.startsWith("aria-") && !k.startsWith("data-")) (el as any)[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of kids) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

// Re-render a list without losing the keyboard's place: the element
// that had focus (found again by the attribute named) gets it back.
function keepFocus(attr: string, render: () => void): void {
  const a = document.activeElement as HTMLElement | null;
  const key = a?.getAttribute(attr);
  render();
  if (key) (document.querySelector(`[${attr}="${CSS.escape(key)}"]`) as HTMLElement | null)?.focus();
}

function badge(state: string): HTMLElement {
  return h("span", { class: "badge badge-" + state.replace(/[^a-z-]/g, "") }, state);
}

function errText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

function ago(iso: string | null): string {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.floor(s) + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

const app = document.getElementById("app")!;
const live = h("div", { class: "sr-only", "aria-live": "polite", role: "status" });
document.body.append(live);

function announce(text: string): void {
  live.textContent = "";
  setTimeout(() => { live.textContent = text; }, 30);
}

// ---- Sign in ---------------------------------------------------------------

function signIn(message?: string): void {
  sessionStorage.removeItem(KEY);
  const input = h("input", {
    id: "key", type: "password", autocomplete: "off", spellcheck: false, required: true,
    placeholder: "sbx_…", "aria-describedby": "key-help",
  });
  const error = h("p", { class: "form-error", id: "signin-error", role: "alert" }, message || "");
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", {
    class: "signin-card", "aria-labelledby": "signin-title",
    onsubmit: async (ev: Event) => {
      ev.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      button.disabled = true;
      error.textContent = "";
      try {
        await new Api(key).list();
        sessionStorage.setItem(KEY, key);
        main(key);
      } catch (e) {
        error.textContent = e instanceof ApiError && e.status === 401
          ? "That key is not valid for this server." : "Could not reach the API: " + errText(e);
        button.disabled = false;
        input.focus();
      }
    },
  },
    h("div", { class: "brand brand-lg" }, h("img", { src: "favicon.svg", alt: "" }), "sandboxd"),
    h("h1", { id: "signin-title" }, "Sign in to the console"),
    h("label", { for: "key" }, "API key"),
    input,
    h("p", { id: "key-help", class: "help" },
      "The key stays in this browser tab only (session storage) and is sent to this server's API. ",
      "The quick start's key is in /var/lib/sandboxd/api-key."),
    error,
    button);
  app.replaceChildren(h("main", { class: "signin" }, form));
  input.focus();
}

// ---- The console -------------------------------------------------------------

interface State {
  api: Api;
  sandboxes: Sandbox[];
  selected: string | null;
  timer: number | undefined;
  stopped: boolean;
}

function main(key: string): void {
  const st: State = { api: new Api(key), sandboxes: [], selected: null, timer: undefined, stopped: false };
  const list = h("ul", { class: "sb-list", "aria-label": "Sandboxes" });
  const listNote = h("p", { class: "muted small" }, "Loading…");
  const template = h("input", { id: "template", value: "default", autocomplete: "off", spellcheck: false });
  const visibility = h("select", { id: "visibility" },
    h("option", { value: "public" }, "public"), h("option", { value: "private" }, "private"));
  const createErr = h("p", { class: "form-error", role: "alert" });
  const createBtn = h("button", { type: "submit", class: "primary" }, "Create sandbox");
  const detail = h("section", { class: "detail", "aria-label": "Sandbox" });

  const createForm = h("form", {
    class: "create", "aria-label": "New sandbox",
    onsubmit: async (ev: Event) => {
      ev.preventDefault();
      createBtn.disabled = true;
      createBtn.textContent = "Creating…";
      createErr.textContent = "";
      try {
        const sb = await st.api.create(template.value.trim(), visibility.value);
        announce("Sandbox " + sb.id + " created");
        st.sandboxes = [sb, ...st.sandboxes.filter((s) => s.id !== sb.id)];
        select(sb.id);
        await refresh();
      } catch (e) {
        createErr.textContent = errText(e);
      } finally {
        createBtn.disabled = false;
        createBtn.textContent = "Create sandbox";
      }
    },
  },
    h("h2", {}, "New sandbox"),
    h("div", { class: "field" }, h("label", { for: "template" }, "Template"), template),
    h("div", { class: "field" }, h("label", { for: "visibility" }, "Preview"), visibility),
    createBtn, createErr);

  const signOut = h("button", {
    type: "button", class: "ghost", onclick: () => {
      st.stopped = true;
      window.clearTimeout(st.timer);
      view?.close();
      signIn();
    },
  }, "Sign out");

  app.replaceChildren(
    h("header", { class: "topbar" },
      h("div", { class: "brand" }, h("img", { src: "favicon.svg", alt: "" }), "sandboxd", h("span", { class: "muted" }, "console")),
      h("nav", { "aria-label": "Account" }, h("a", { href: "/healthz", class: "ghost", target: "_blank", rel: "noopener" }, "Health"), signOut)),
    h("div", { class: "layout" },
      h("aside", { class: "sidebar" }, createForm,
        h("h2", { id: "sb-heading" }, "Sandboxes"), listNote, list),
      detail));

  let view: SandboxView | null = null;

  function select(id: string | null): void {
    if (st.selected === id && view) return;
    view?.close();
    view = null;
    st.selected = id;
    history.replaceState(null, "", id ? "#" + id : location.pathname);
    const sb = st.sandboxes.find((s) => s.id === id);
    if (sb) {
      view = new SandboxView(st.api, sb, () => refresh(), () => { select(null); refresh(); });
      detail.replaceChildren(view.el);
    } else {
      detail.replaceChildren(h("div", { class: "empty" },
        h("h2", {}, "No sandbox selected"),
        h("p", { class: "muted" }, "Create one on the left, or pick one from the list.")));
    }
    renderList();
  }

  function renderList(): void {
    listNote.textContent = st.sandboxes.length ? "" : "No sandboxes yet.";
    keepFocus("data-key", () => list.replaceChildren(...st.sandboxes.map((s) => h("li", {},
      h("button", {
        type: "button", class: "sb-item" + (s.id === st.selected ? " selected" : ""),
        "aria-current": s.id === st.selected ? "true" : undefined,
        "data-id": s.id, "data-key": "sb:" + s.id, onclick: () => select(s.id),
      },
        h("span", { class: "sb-id mono" }, s.id.slice(-10)),
        badge(s.state),
        h("span", { class: "sb-meta muted small" }, s.template + " · " + s.visibility + " · " + ago(s.created_at)))))));
  }

  async function refresh(): Promise<void> {
    window.clearTimeout(st.timer);
    if (st.stopped) return;
    // A hidden tab asks nothing; it catches up when shown again.
    if (document.hidden) {
      st.timer = window.setTimeout(refresh, POLL_MS);
      return;
    }
    try {
      const r = await st.api.list();
      st.sandboxes = r.sandboxes.sort((a, b) => b.created_at.localeCompare(a.created_at));
      renderList();
      const sb = st.sandboxes.find((s) => s.id === st.selected);
      if (sb) view?.update(sb);
      else if (st.selected) select(null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        st.stopped = true;
        view?.close();
        signIn("The key is no longer valid: sign in again.");
        return;
      }
      listNote.textContent = "Could not list sandboxes: " + errText(e);
    }
    if (!st.stopped) st.timer = window.setTimeout(refresh, POLL_MS);
  }

  const first = location.hash.slice(1);
  refresh().then(() => select(st.sandboxes.some((s) => s.id === first) ? first : (st.sandboxes[0]?.id ?? null)));
  select(null);
}

// ---- One sandbox ---------------------------------------------------------------

class SandboxView {
  el: HTMLElement;
  private sb: Sandbox;
  private head: HTMLElement;
  private frame: HTMLIFrameElement;
  private frameUrl: HTMLAnchorElement;
  private frameNote: HTMLElement;
  private panels: Record<string, HTMLElement> = {};
  private tabs: HTMLButtonElement[] = [];
  private files: FilesPane;
  private tasks: TasksPane;
  private term: TermPane;
  private previewFor = "";
  private actionErr = h("p", { class: "form-error", role: "alert" });
  private headShown = "";

  constructor(private api: Api, sb: Sandbox, private changed: () => void, private gone: () => void) {
    this.sb = sb;
    this.head = h("div", { class: "detail-head" });
    this.frame = h("iframe", {
      class: "preview-frame", title: "Preview of sandbox " + sb.id,
      sandbox: "allow-scripts allow-forms allow-same-origin allow-popups allow-modals allow-downloads",
      referrerpolicy: "no-referrer",
    });
    this.frameUrl = h("a", { class: "mono small preview-url", target: "_blank", rel: "noopener" });
    this.frameNote = h("p", { class: "muted small" });
    this.files = new FilesPane(api, sb.id, () => this.reloadPreview());
    this.tasks = new TasksPane(api, sb.id, () => this.changed());
    this.term = new TermPane(sb.id);
    const names = [["files", "Files"], ["tasks", "Tasks"], ["terminal", "Terminal"]];
    const tablist = h("div", { class: "tabs", role: "tablist", "aria-label": "Sandbox tools" });
    for (const [name, label] of names) {
      const tab = h("button", {
        type: "button", role: "tab", id: "tab-" + name, "aria-controls": "panel-" + name,
        "aria-selected": "false", tabIndex: -1, onclick: () => this.show(name),
        onkeydown: (ev: KeyboardEvent) => this.tabKey(ev),
      }, label);
      this.tabs.push(tab);
      tablist.append(tab);
    }
    this.panels.files = h("div", { role: "tabpanel", id: "panel-files", "aria-labelledby": "tab-files", class: "panel" }, this.files.el);
    this.panels.tasks = h("div", { role: "tabpanel", id: "panel-tasks", "aria-labelledby": "tab-tasks", class: "panel" }, this.tasks.el);
    this.panels.terminal = h("div", { role: "tabpanel", id: "panel-terminal", "aria-labelledby": "tab-terminal", class: "panel" }, this.term.el);
    this.el = h("div", { class: "detail-inner" },
      this.head,
      h("div", { class: "split" },
        h("div", { class: "tools" }, tablist, this.panels.files, this.panels.tasks, this.panels.terminal),
        h("section", { class: "preview", "aria-label": "Preview" },
          h("div", { class: "preview-bar" },
            h("h2", {}, "Preview"), this.frameUrl,
            h("button", { type: "button", class: "ghost small-btn", onclick: () => this.reloadPreview() }, "Reload")),
          this.frameNote, this.frame)));
    this.show("files");
    this.update(sb);
  }

  private tabKey(ev: KeyboardEvent): void {
    const i = this.tabs.indexOf(ev.target as HTMLButtonElement);
    let j = -1;
    if (ev.key === "ArrowRight") j = (i + 1) % this.tabs.length;
    else if (ev.key === "ArrowLeft") j = (i + this.tabs.length - 1) % this.tabs.length;
    else if (ev.key === "Home") j = 0;
    else if (ev.key === "End") j = this.tabs.length - 1;
    if (j < 0) return;
    ev.preventDefault();
    this.tabs[j].focus();
    this.show(this.tabs[j].id.slice(4));
  }

  private show(name: string): void {
    for (const t of this.tabs) {
      const on = t.id === "tab-" + name;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
    }
    for (const [n, p] of Object.entries(this.panels)) p.hidden = n !== name;
    if (name === "files") this.files.open();
    if (name === "tasks") this.tasks.open();
    if (name === "terminal") this.term.shown();
  }

  update(sb: Sandbox): void {
    const was = this.sb.state;
    this.sb = sb;
    this.term.state(sb.state);
    // The head only when what it shows changed: re-rendering it every poll
    // would take the keyboard's focus off its buttons.
    const shown = [sb.state, sb.error, sb.visibility, sb.template, sb.port].join("|");
    if (shown === this.headShown) return;
    this.headShown = shown;
    const busy = ["creating", "starting", "stopping", "deleting"].includes(sb.state);
    // fn answers false when the person changed their mind (a confirm).
    const act = (label: string, fn: () => Promise<unknown>, cls = "") => h("button", {
      type: "button", class: cls, disabled: busy, onclick: async (ev: Event) => {
        const b = ev.currentTarget as HTMLButtonElement;
        b.disabled = true;
        this.actionErr.textContent = "";
        try {
          if ((await fn()) !== false) announce(label + ": done");
        } catch (e) {
          this.actionErr.textContent = label + " failed: " + errText(e);
        }
        b.disabled = false;
        this.changed();
      },
    }, label);
    this.head.replaceChildren(
      h("div", { class: "title" },
        h("h1", { class: "mono" }, sb.id), badge(sb.state),
        h("span", { class: "muted small" }, sb.template + " · " + sb.visibility + " · port " + sb.port)),
      h("div", { class: "actions" },
        sb.state === "running" || sb.state === "paused"
          ? act("Stop", () => this.api.action(sb.id, "stop"))
          : act("Start", () => this.api.action(sb.id, "start")),
        act("Delete", async () => {
          if (!confirm("Delete sandbox " + sb.id + " with its files and tasks?")) return false;
          await this.api.remove(sb.id);
          this.gone();
        }, "danger")),
      this.actionErr);
    if (sb.error) this.head.append(h("p", { class: "form-error", role: "alert" }, sb.error));
    if (sb.state === "running" && (this.previewFor !== sb.id || was !== "running")) this.loadPreview();
    if (sb.state === "stopped" && was !== "stopped") {
      this.frameNote.textContent = "Stopped: the preview wakes it (a request starts it again).";
    }
  }

  private async loadPreview(): Promise<void> {
    this.previewFor = this.sb.id;
    let url = this.sb.preview_url;
    this.frameNote.textContent = "";
    if (this.sb.visibility === "private") {
      try {
        url = (await this.api.previewToken(this.sb.id)).url;
        // The token becomes a SameSite=Lax cookie, which browsers set in a
        // frame only when the console and the preview are one site.
        const site = (host: string) => host.split(".").slice(-2).join(".");
        const ph = new URL(url).hostname;
        this.frameNote.textContent = site(ph) === site(location.hostname)
          ? "Private preview: opened with a one-hour token."
          : `Private preview: opened with a one-hour token. Browsers keep its cookie out of this frame ` +
            `(${location.hostname} and ${ph} are different sites), so open it in a new tab with the link above.`;
      } catch (e) {
        this.frameNote.textContent = "No preview token: " + errText(e);
        return;
      }
    }
    this.frameUrl.href = url;
    this.frameUrl.textContent = this.sb.preview_url.replace(/^https?:\/\//, "") + " ↗";
    this.frame.src = url;
  }

  reloadPreview(): void {
    if (this.sb.visibility === "private" || !this.frame.src) {
      this.loadPreview();
      return;
    }
    // Cross-origin: reload by navigating the frame again.
    const u = this.frame.src;
    this.frame.src = "about:blank";
    setTimeout(() => { this.frame.src = u; }, 30);
  }

  close(): void {
    this.tasks.close();
    this.term.close();
  }
}

// ---- Files ---------------------------------------------------------------------

class FilesPane {
  el: HTMLElement;
  private dir = "";
  private list = h("ul", { class: "file-list", "aria-label": "Files" });
  private crumbs = h("nav", { class: "crumbs", "aria-label": "Folder" });
  private editor = h("textarea", {
    id: "editor", class: "editor mono", spellcheck: false, disabled: true, wrap: "off",
    "aria-label": "File contents",
  });
  private fileName = h("span", { class: "mono small" }, "No file open");
  private saveBtn = h("button", { type: "button", class: "primary", disabled: true }, "Save");
  private note = h("p", { class: "muted small", role: "status" });
  private newPath = h("input", { id: "new-file", placeholder: "path/to/file", autocomplete: "off", spellcheck: false });
  private reloadOnSave = h("input", { type: "checkbox", id: "reload-on-save", checked: true });
  private path: string | null = null;

  constructor(private api: Api, private id: string, private saved: () => void) {
    this.saveBtn.addEventListener("click", () => this.save());
    this.editor.addEventListener("keydown", (ev) => {
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "s") {
        ev.preventDefault();
        this.save();
      }
    });
    this.el = h("div", { class: "files" },
      h("div", { class: "file-browser" },
        this.crumbs, this.list,
        h("form", {
          class: "new-file", onsubmit: (ev: Event) => {
            ev.preventDefault();
            const p = this.newPath.value.trim().replace(/^\/+/, "");
            if (!p) return;
            this.edit(this.dir ? this.dir + "/" + p : p, true);
            this.newPath.value = "";
          },
        }, h("label", { for: "new-file", class: "small" }, "New file"), this.newPath,
          h("button", { type: "submit" }, "Open"))),
      h("div", { class: "file-editor" },
        h("div", { class: "editor-bar" }, this.fileName, this.saveBtn),
        this.editor,
        h("div", { class: "editor-foot" },
          h("label", { class: "small check" }, this.reloadOnSave, "Reload the preview on save"),
          this.note)));
  }

  // Each time the tab is shown: the agent or the terminal may have
  // changed the files meanwhile.
  open(): void {
    this.cd(this.dir);
  }

  async cd(dir: string): Promise<void> {
    this.dir = dir;
    const parts = dir ? dir.split("/") : [];
    this.crumbs.replaceChildren(
      h("button", { type: "button", class: "link", onclick: () => this.cd("") }, "/workspace"),
      ...parts.flatMap((p, i) => ["/", h("button", {
        type: "button", class: "link", onclick: () => this.cd(parts.slice(0, i + 1).join("/")),
      }, p)]),
      h("button", {
        type: "button", class: "ghost small-btn refresh", "aria-label": "Refresh the file list",
        onclick: () => this.cd(this.dir),
      }, "↻"));
    try {
      const entries = (await this.api.dir(this.id, dir))
        .filter((e) => e.name !== ".git")
        .sort((a, b) => (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
      const up = dir ? [h("li", {}, h("button", {
        type: "button", class: "file dir", onclick: () => this.cd(parts.slice(0, -1).join("/")),
      }, "..")) ] : [];
      this.list.replaceChildren(...up, ...entries.map((e: Entry) => h("li", {},
        h("button", {
          type: "button", class: "file " + (e.type === "dir" ? "dir" : "reg"),
          "data-name": e.name,
          onclick: () => e.type === "dir" ? this.cd(dir ? dir + "/" + e.name : e.name)
            : this.edit(dir ? dir + "/" + e.name : e.name, false),
        }, e.name + (e.type === "dir" ? "/" : ""),
          e.type !== "dir" ? h("span", { class: "muted small" }, fmtSize(e.size)) : null))));
      if (!entries.length && !dir) this.list.append(h("li", { class: "muted small" }, "The workspace is empty."));
    } catch (e) {
      this.list.replaceChildren(h("li", { class: "form-error" }, errText(e)));
    }
  }

  private async edit(path: string, isNew: boolean): Promise<void> {
    this.path = path;
    this.fileName.textContent = path;
    this.note.textContent = isNew ? "New file: Save creates it." : "Loading…";
    this.editor.value = "";
    this.editor.disabled = true;
    this.saveBtn.disabled = true;
    if (!isNew) {
      try {
        this.editor.value = await this.api.read(this.id, path);
        this.note.textContent = "";
      } catch (e) {
        this.note.textContent = errText(e);
        return;
      }
    }
    this.editor.disabled = false;
    this.saveBtn.disabled = false;
    this.editor.focus();
  }

  private async save(): Promise<void> {
    if (this.path === null) return;
    this.saveBtn.disabled = true;
    try {
      await this.api.write(this.id, this.path, this.editor.value);
      this.note.textContent = "Saved " + this.path + " at " + new Date().toLocaleTimeString();
      announce("Saved " + this.path);
      if (this.reloadOnSave.checked) this.saved();
      this.cd(this.dir);
    } catch (e) {
      this.note.textContent = "Not saved: " + errText(e);
    } finally {
      this.saveBtn.disabled = false;
    }
  }
}

function fmtSize(n: number): string {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

// ---- Tasks ---------------------------------------------------------------------

class TasksPane {
  el: HTMLElement;
  private agent = h("select", { id: "agent" },
    h("option", { value: "command" }, "command (sh -c)"),
    h("option", { value: "opencode" }, "opencode"),
    h("option", { value: "claude-code" }, "claude-code"));
  private prompt = h("textarea", {
    id: "prompt", class: "prompt", rows: 3, spellcheck: true,
    placeholder: "make the header red — or, with command, a shell command line",
  });
  private runBtn = h("button", { type: "submit", class: "primary" }, "Run");
  private err = h("p", { class: "form-error", role: "alert" });
  private list = h("ul", { class: "task-list", "aria-label": "Tasks" });
  private out = h("pre", { class: "events mono", tabIndex: 0, "aria-label": "Task events", "aria-live": "off" });
  private outHead = h("div", { class: "events-head" }, h("span", { class: "muted small" }, "Pick a task to see its events."));
  private watching: AbortController | null = null;
  private watched: string | null = null;
  private timer: number | undefined;
  private opened = false;

  constructor(private api: Api, private id: string, private changed: () => void) {
    this.el = h("div", { class: "tasks" },
      h("form", {
        class: "task-form", "aria-label": "Run a task", onsubmit: (ev: Event) => { ev.preventDefault(); this.run(); },
      },
        h("div", { class: "row" },
          h("div", { class: "field grow" }, h("label", { for: "prompt" }, "Prompt"), this.prompt),
          h("div", { class: "field" }, h("label", { for: "agent" }, "Agent"), this.agent, this.runBtn)),
        this.err),
      h("div", { class: "task-split" },
        h("div", {}, h("h3", {}, "Tasks"), this.list),
        h("div", { class: "events-box" }, this.outHead, this.out)));
    this.prompt.addEventListener("keydown", (ev) => {
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") {
        ev.preventDefault();
        this.run();
      }
    });
  }

  open(): void {
    if (!this.opened) {
      this.opened = true;
      this.refresh();
    }
  }

  private async run(): Promise<void> {
    const text = this.prompt.value.trim();
    if (!text) {
      this.err.textContent = "Type a prompt (or a command) first.";
      this.prompt.focus();
      return;
    }
    this.runBtn.disabled = true;
    this.err.textContent = "";
    try {
      const t = await this.api.runTask(this.id, this.agent.value, text);
      announce("Task started");
      this.watch(t);
      this.refresh();
      this.changed();
    } catch (e) {
      this.err.textContent = errText(e);
    } finally {
      this.runBtn.disabled = false;
    }
  }

  private async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    if (document.hidden) {
      this.timer = window.setTimeout(() => this.refresh(), 3000);
      return;
    }
    try {
      const r = await this.api.tasks(this.id);
      const tasks = r.tasks.sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, 30);
      keepFocus("data-key", () => this.list.replaceChildren(...tasks.map((t) => this.item(t))));
      if (!tasks.length) this.list.append(h("li", { class: "muted small" }, "No tasks yet."));
    } catch (e) {
      this.list.replaceChildren(h("li", { class: "form-error" }, errText(e)));
    }
    this.timer = window.setTimeout(() => this.refresh(), 3000);
  }

  private item(t: Task): HTMLElement {
    const active = t.state === "queued" || t.state === "running";
    return h("li", { class: "task" + (t.id === this.watched ? " selected" : "") },
      h("button", { type: "button", class: "task-open", "data-task": t.id, "data-key": "open:" + t.id, onclick: () => this.watch(t) },
        h("span", { class: "mono small" }, t.id.slice(-8)), " ", t.agent, " ", badge(t.state),
        h("span", { class: "muted small" }, " " + ago(t.created_at))),
      h("span", { class: "task-actions" },
        active ? h("button", {
          type: "button", class: "small-btn", "data-key": "cancel:" + t.id, onclick: () => this.act(t, "cancel"),
          "aria-label": "Cancel task " + t.id,
        }, "Cancel") : null,
        !active && t.agent !== "command" ? h("button", {
          type: "button", class: "small-btn", "data-key": "revert:" + t.id, onclick: () => this.act(t, "revert"),
          "aria-label": "Revert the changes of task " + t.id,
        }, "Revert") : null));
  }

  private async act(t: Task, what: "cancel" | "revert"): Promise<void> {
    if (what === "revert" && !confirm("Put the workspace back as it was before task " + t.id + "?")) return;
    try {
      await this.api.taskAction(this.id, t.id, what);
      announce(what === "revert" ? "Workspace reverted" : "Task cancelled");
    } catch (e) {
      this.err.textContent = errText(e);
    }
    this.refresh();
  }

  private watch(t: Task): void {
    this.watching?.abort();
    this.watched = t.id;
    const ctl = new AbortController();
    this.watching = ctl;
    const state = badge(t.state);
    this.outHead.replaceChildren(h("span", { class: "mono small" }, "task " + t.id), " ", h("span", { class: "small" }, t.agent), " ", state);
    this.out.replaceChildren();
    const line = (text: string, cls: string) => {
      const stick = this.out.scrollTop + this.out.clientHeight >= this.out.scrollHeight - 8;
      this.out.append(h("span", { class: cls }, text));
      if (stick) this.out.scrollTop = this.out.scrollHeight;
    };
    this.api.events(this.id, t.id, (e: TaskEvent) => {
      if (e.event === "output") {
        line(String(e.data.text ?? ""), e.data.stream === "stderr" ? "ev-err" : "ev-out");
      } else if (e.event === "exit") {
        const s = e.data.state || "done";
        state.replaceWith(badge(s));
        line(`\n— exited ${e.data.exit_code ?? ""} (${s})\n`, "ev-meta");
        announce("Task " + s);
        this.refresh();
      } else if (e.event === "status") {
        line("— " + (e.data.status ?? JSON.stringify(e.data)) + "\n", "ev-meta");
      } else if (e.event === "agent") {
        const text = e.data?.part?.text ?? e.data?.result ?? e.data?.message?.content?.[0]?.text;
        line((typeof text === "string" ? text : JSON.stringify(e.data)) + "\n", "ev-agent");
      } else {
        line(JSON.stringify(e.data) + "\n", "ev-meta");
      }
    }, ctl.signal).catch((e) => line("\n— " + errText(e) + "\n", "ev-err"));
  }

  close(): void {
    this.watching?.abort();
    window.clearTimeout(this.timer);
  }
}

// ---- Terminal ------------------------------------------------------------------

class TermPane {
  el: HTMLElement;
  private box = h("div", { class: "term-box" });
  private btn = h("button", { type: "button", class: "primary" }, "Open terminal");
  private note = h("p", { class: "muted small", role: "status" }, "An interactive shell in /workspace.");
  private handle: TerminalHandle | null = null;
  private sbState = "";

  constructor(private id: string) {
    this.btn.addEventListener("click", () => this.handle ? this.close() : this.connect());
    this.el = h("div", { class: "terminal" }, h("div", { class: "term-bar" }, this.btn, this.note), this.box);
  }

  state(s: string): void {
    this.sbState = s;
    if (!this.handle) this.btn.disabled = s !== "running";
    if (s !== "running" && !this.handle) this.note.textContent = "Start the sandbox to open a terminal.";
    else if (!this.handle) this.note.textContent = "An interactive shell in /workspace.";
  }

  shown(): void {
    this.handle?.fit();
  }

  private connect(): void {
    const key = sessionStorage.getItem(KEY) || "";
    this.btn.textContent = "Close terminal";
    this.note.textContent = "Connecting…";
    this.handle = openTerminal(this.box, this.id, key, (status) => {
      this.note.textContent = status;
    }, () => {
      this.handle = null;
      this.btn.textContent = "Open terminal";
      this.btn.disabled = this.sbState !== "running";
    });
  }

  close(): void {
    this.handle?.close();
    this.handle = null;
    this.btn.textContent = "Open terminal";
  }
}

// ---- Start -----------------------------------------------------------------------

const saved = sessionStorage.getItem(KEY);
if (saved) main(saved);
else signIn();
