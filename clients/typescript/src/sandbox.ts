/*
 * A sandbox and what it holds: its files, its commands, its tasks, its
 * preview, its dev server and its terminal. Each method is one API route
 * (docs/api.md); the Sandbox keeps the object the API last sent in `data`.
 */

import { ConflictError, NetworkError, SandboxdError, UnavailableError } from "./errors.js";
import { parseJson, type CallOptions, type Transport } from "./http.js";
import { encodeFilePath, seg } from "./paths.js";
import { parseSse } from "./sse.js";
import { Task } from "./task.js";
import { Terminal, opened, type WebSocketConstructor } from "./terminal.js";
import type {
	DevServer, ExecEvent, ExecResult, FileEntry, PreviewToken, SandboxInfo, SandboxState, TaskAgent, TaskInfo,
} from "./types.js";

export interface ExecOptions extends CallOptions {
	/** Working directory, an absolute path (default /workspace). */
	cwd?: string;
	/** Added to the sandbox's env for this command. */
	env?: Record<string, string>;
	/** The command's own limit, 1..3600 s (default 60): then its process group is killed. */
	timeoutS?: number;
}

export interface ExecStreamOptions extends ExecOptions {
	/** A stream silent this long (no output, no heartbeat) is given up (default 45000). */
	idleTimeoutMs?: number;
}

interface TaskCommon extends CallOptions {
	/** Added to the task's env; never stored or shown by the daemon. */
	env?: Record<string, string>;
	/** 1..86400 s; default the daemon's task_timeout. */
	timeoutS?: number;
}

export interface CommandTaskOptions extends TaskCommon {
	agent: "command";
	/** argv, run without a shell; a string is run by `sh -c`. */
	cmd: string[] | string;
}

export interface AgentTaskOptions extends TaskCommon {
	agent: Exclude<TaskAgent, "command">;
	prompt: string;
	/** e.g. "anthropic/claude-sonnet-4" for OpenCode. */
	model?: string;
}

export type RunTaskOptions = CommandTaskOptions | AgentTaskOptions;

export interface LogsOptions extends CallOptions {
	/** false (default): the recent output as text; true: new lines as they come. */
	follow?: boolean;
	/** With follow: called when lines were dropped for a slow reader. */
	onSkipped?: (bytes: number) => void;
}

export interface TerminalOptions extends CallOptions {
	cols?: number;
	rows?: number;
	/** The WebSocket class, where the platform has none (Node 20: `ws`). */
	WebSocket?: WebSocketConstructor;
}

export interface PreviewTokenOptions extends CallOptions {
	/** Lifetime in seconds, 60..2592000 (default 3600). */
	ttlS?: number;
}

/* The client-side limit of an exec: the command's own, and then some. */
function execTimeoutMs(t: Transport, timeoutS: number | undefined): number {
	return Math.max(t.timeoutMs, (timeoutS ?? 60) * 1000 + 30_000);
}

function argv(cmd: string[] | string): string[] {
	return typeof cmd === "string" ? ["sh", "-c", cmd] : cmd;
}

export class Files {
	/** @internal */
	constructor(private readonly t: Transport, private readonly sb: Sandbox) {}

	private path(p: string): string {
		const rest = encodeFilePath(p);
		return `/v1/sandboxes/${seg(this.sb.id)}/files${rest === "" ? "" : "/" + rest}`;
	}

	/** A file's bytes. A directory is a ConflictError (use list()). */
	async read(path: string, opts?: CallOptions): Promise<Uint8Array> {
		const spec = { method: "GET", path: this.path(path) };
		const { res, bytes } = await this.t.call(spec, opts);
		if ((res.headers.get("content-type") ?? "").startsWith("application/json")) {
			throw new ConflictError({
				status: 409, code: "conflict", request: `GET ${spec.path}`,
				message: `${JSON.stringify(path)} is a directory: use files.list()`,
			});
		}
		return bytes;
	}

	/** A file's text (UTF-8). */
	async readText(path: string, opts?: CallOptions): Promise<string> {
		return new TextDecoder().decode(await this.read(path, opts));
	}

	/**
	 * Writes a file atomically (parents are made; works while the sandbox is
	 * stopped). A string is written as UTF-8. Answers whether it was new.
	 */
	async write(path: string, data: Uint8Array | ArrayBuffer | Blob | string, opts?: CallOptions): Promise<{ created: boolean }> {
		const body: BodyInit = typeof data === "string" ? new TextEncoder().encode(data) : data as BodyInit;
		const res = await this.t.none({ method: "PUT", path: this.path(path), body, contentType: "application/octet-stream" }, opts);
		return { created: res.status === 201 };
	}

	/** A directory's entries, sorted by name ("" or no path: /workspace itself). */
	async list(path = "", opts?: CallOptions): Promise<FileEntry[]> {
		const spec = { method: "GET", path: this.path(path) };
		const { res, bytes } = await this.t.call(spec, opts);
		if (!(res.headers.get("content-type") ?? "").startsWith("application/json")) {
			throw new ConflictError({
				status: 409, code: "conflict", request: `GET ${spec.path}`,
				message: `${JSON.stringify(path)} is a file, not a directory: use files.read()`,
			});
		}
		return parseJson<{ entries: FileEntry[] }>(res, bytes, `GET ${spec.path}`).entries;
	}

	/** Removes a file, or a directory with everything in it. */
	async remove(path: string, opts?: CallOptions): Promise<void> {
		await this.t.none({ method: "DELETE", path: this.path(path) }, opts);
	}
}

export class Tasks {
	/** @internal */
	constructor(private readonly t: Transport, private readonly sb: Sandbox) {}

	private path(tail = ""): string {
		return `/v1/sandboxes/${seg(this.sb.id)}/tasks${tail}`;
	}

	/**
	 * Queues a task (it runs when the ones before it have finished; a stopped
	 * sandbox is woken). Follow it with task.events(), or task.wait().
	 */
	async run(opts: RunTaskOptions): Promise<Task> {
		const body: Record<string, unknown> = { agent: opts.agent };
		if (opts.agent === "command") {
			body["cmd"] = argv(opts.cmd);
		} else {
			body["prompt"] = opts.prompt;
			if (opts.model !== undefined)
				body["model"] = opts.model;
		}
		if (opts.env !== undefined)
			body["env"] = opts.env;
		if (opts.timeoutS !== undefined)
			body["timeout_s"] = opts.timeoutS;
		const data = await this.t.json<TaskInfo>({ method: "POST", path: this.path(), json: body }, opts,
			Math.max(this.t.timeoutMs, 120_000));
		return new Task(this.t, data);
	}

	async get(taskId: string, opts?: CallOptions): Promise<Task> {
		return new Task(this.t, await this.t.json<TaskInfo>({ method: "GET", path: this.path("/" + seg(taskId)) }, opts));
	}

	/** The sandbox's tasks, oldest first. */
	async list(opts?: CallOptions): Promise<Task[]> {
		const j = await this.t.json<{ tasks: TaskInfo[] }>({ method: "GET", path: this.path() }, opts);
		return j.tasks.map((d) => new Task(this.t, d));
	}
}

export class Sandbox {
	/** The sandbox object as the API last sent it. */
	data: SandboxInfo;
	readonly files: Files;
	readonly tasks: Tasks;

	/** @internal Use client.sandboxes. */
	constructor(private readonly t: Transport, data: SandboxInfo, private readonly WebSocketClass?: WebSocketConstructor) {
		this.data = data;
		this.files = new Files(t, this);
		this.tasks = new Tasks(t, this);
	}

	get id(): string {
		return this.data.id;
	}

	get state(): SandboxState {
		return this.data.state;
	}

	private path(tail = ""): string {
		return `/v1/sandboxes/${seg(this.data.id)}${tail}`;
	}

	/** Reads the sandbox again (its state, dev_server, ...). */
	async refresh(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<SandboxInfo>({ method: "GET", path: this.path() }, opts);
		return this;
	}

	/** Stops the container; files are kept. */
	async stop(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<SandboxInfo>({ method: "POST", path: this.path("/stop") }, opts);
		return this;
	}

	/** Starts (or thaws) it; a missing container is recreated. */
	async start(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<SandboxInfo>({ method: "POST", path: this.path("/start") }, opts);
		return this;
	}

	/** Removes the container, the workspace, the home and the task logs. */
	async delete(opts?: CallOptions): Promise<void> {
		await this.t.none({ method: "DELETE", path: this.path() }, opts);
	}

	private execBody(cmd: string[] | string, opts: ExecOptions): Record<string, unknown> {
		const body: Record<string, unknown> = { cmd: argv(cmd) };
		if (opts.cwd !== undefined)
			body["cwd"] = opts.cwd;
		if (opts.env !== undefined)
			body["env"] = opts.env;
		if (opts.timeoutS !== undefined)
			body["timeout_s"] = opts.timeoutS;
		return body;
	}

	/**
	 * Runs a command and answers once it has ended, with its output. An
	 * array is argv (no shell); a string is run by `sh -c`. Wakes a stopped
	 * sandbox. A non-zero exit is a result, not an error.
	 */
	async exec(cmd: string[] | string, opts: ExecOptions = {}): Promise<ExecResult> {
		return this.t.json<ExecResult>({ method: "POST", path: this.path("/exec"), json: this.execBody(cmd, opts) },
			opts, execTimeoutMs(this.t, opts.timeoutS));
	}

	/**
	 * Runs a command and yields its output as it comes, one `output` event per
	 * line, then the `exit` event. Leaving the loop early kills the command.
	 */
	async *execStream(cmd: string[] | string, opts: ExecStreamOptions = {}): AsyncGenerator<ExecEvent, void, undefined> {
		const path = this.path("/exec");
		const what = `POST ${path}`;
		const d = this.t.deadline(opts, execTimeoutMs(this.t, opts.timeoutS));
		try {
			const res = await this.t.send({ method: "POST", path, json: this.execBody(cmd, opts), accept: "text/event-stream" }, d);
			if (!res.body)
				throw new NetworkError({ status: res.status, code: "protocol_error", request: what, message: `${what}: an answer without a body` });
			d.clearTimeout();
			d.armIdle(opts.idleTimeoutMs ?? 45_000);
			try {
				for await (const m of parseSse(res.body, () => d.touch())) {
					let data: unknown;
					try {
						data = JSON.parse(m.data);
					} catch (e) {
						throw new SandboxdError({ status: 200, code: "protocol_error", request: what, cause: e, message: `${what}: event data that is not JSON` });
					}
					if (m.event === "output") {
						yield { event: "output", data } as ExecEvent;
					} else if (m.event === "exit") {
						yield { event: "exit", data } as ExecEvent;
						return;
					} else if (m.event === "error") {
						const msg = (data as { message?: string }).message ?? "the sandbox's agent went away";
						throw new UnavailableError({ status: 503, code: "unavailable", request: what, message: `${what}: ${msg}` });
					}
				}
			} catch (e) {
				throw d.error(e, what);
			}
			throw new NetworkError({ status: 0, code: "network_error", request: what, message: `${what}: the stream ended before the command's exit` });
		} finally {
			d.close();
		}
	}

	/**
	 * The preview's address: the template's port, or `port` (which must be
	 * in the template's `ports`) as <port>-<id>.<preview_domain>.
	 */
	previewUrl(port?: number): string {
		if (port === undefined)
			return this.data.preview_url;
		const u = new URL(this.data.preview_url);
		u.hostname = `${port}-${u.hostname}`;
		return u.toString();
	}

	/**
	 * A signed token that opens this sandbox's previews until it expires;
	 * `url` carries it (for a private sandbox: open it in a browser or iframe).
	 */
	async previewToken(opts: PreviewTokenOptions = {}): Promise<PreviewToken> {
		return this.t.json<PreviewToken>({
			method: "POST", path: this.path("/preview-token"),
			json: opts.ttlS === undefined ? {} : { ttl_s: opts.ttlS },
		}, opts);
	}

	/** The dev server's recent output, as text (the sandbox must be running). */
	logs(opts?: LogsOptions & { follow?: false }): Promise<string>;
	/** The dev server's new output, a line at a time, until the loop is left or the sandbox stops. */
	logs(opts: LogsOptions & { follow: true }): AsyncGenerator<string, void, undefined>;
	logs(opts: LogsOptions = {}): Promise<string> | AsyncGenerator<string, void, undefined> {
		if (opts.follow)
			return this.followLogs(opts);
		return this.t.call({ method: "GET", path: this.path("/logs") }, opts)
			.then(({ bytes }) => new TextDecoder().decode(bytes));
	}

	private async *followLogs(opts: LogsOptions): AsyncGenerator<string, void, undefined> {
		const path = this.path("/logs");
		const what = `GET ${path}?follow=1`;
		/* The head comes with the first line: no head timeout unless asked. */
		const d = this.t.deadline(opts, 0);
		try {
			const res = await this.t.send({ method: "GET", path, query: { follow: 1 }, accept: "text/event-stream" }, d);
			d.clearTimeout();
			if (!res.body)
				return;
			try {
				for await (const m of parseSse(res.body)) {
					if (m.event === "log") {
						yield (JSON.parse(m.data) as { text: string }).text;
					} else if (m.event === "skipped") {
						opts.onSkipped?.((JSON.parse(m.data) as { bytes: number }).bytes);
					}
				}
			} catch (e) {
				throw d.error(e, what);
			}
		} finally {
			d.close();
		}
	}

	/** agentd restarts the dev server (409 without a dev_command). */
	async restartDev(opts?: CallOptions): Promise<DevServer> {
		const j = await this.t.json<{ dev_server: DevServer }>({ method: "POST", path: this.path("/restart-dev") }, opts);
		return j.dev_server;
	}

	/**
	 * Opens an interactive shell on a PTY in /workspace (the sandbox must be
	 * running). Needs a WebSocket class: the platform's, the client's, or
	 * `opts.WebSocket`.
	 */
	async terminal(opts: TerminalOptions = {}): Promise<Terminal> {
		const WS = opts.WebSocket ?? this.WebSocketClass ??
			(globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
		const path = this.path("/terminal");
		const what = `GET ${path} (WebSocket)`;
		if (WS === undefined) {
			throw new SandboxdError({
				status: 0, code: "not_implemented", request: what,
				message: "this runtime has no WebSocket: pass one as { WebSocket } (Node 20: the ws package, or run node with --experimental-websocket)",
			});
		}
		const key = this.t.key;
		const url = this.t.url(path, { cols: opts.cols, rows: opts.rows }).replace(/^http/, "ws");
		const ws = new WS(url, key === undefined ? ["sandboxd.terminal"] : ["sandboxd.terminal", `bearer.${key}`]);
		ws.binaryType = "arraybuffer";
		const term = new Terminal(ws);
		try {
			await opened(ws, opts.timeoutMs ?? this.t.timeoutMs, opts.signal, what);
		} catch (e) {
			/*
			 * A WebSocket does not tell the HTTP status of a refused handshake:
			 * ask the API why (no such sandbox, a bad key, not running).
			 */
			if (e instanceof SandboxdError && e.code === "network_error") {
				await this.refresh({ signal: opts.signal });
				if (this.state !== "running") {
					throw new ConflictError({
						status: 409, code: "conflict", request: what,
						message: `sandbox is ${this.state}; a terminal needs it running (start it first)`,
					});
				}
			}
			throw e;
		}
		return term;
	}

	toJSON(): SandboxInfo {
		return this.data;
	}
}
