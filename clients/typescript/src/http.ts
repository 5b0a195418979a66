/*
 * The transport under every call: one fetch with the key, a deadline made of
 * the call's timeout and the caller's AbortSignal, and every failure turned
 * into a SandboxdError. Only the fetch, AbortController, TextDecoder and
 * timers of the platform are used, so it runs on Node 20+, Deno, Bun, edge
 * runtimes and browsers alike.
 */

import { AbortError, NetworkError, SandboxdError, TimeoutError, errorFromResponse } from "./errors.js";

/** Options every call takes. */
export interface CallOptions {
	/** Cancels the call; the promise rejects with an AbortError. */
	signal?: AbortSignal;
	/**
	 * How long the call may take, in ms (0: no limit). For streams it bounds
	 * the wait for the answer's head only. Default: the client's `timeoutMs`.
	 */
	timeoutMs?: number;
}

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface RequestSpec {
	method: string;
	/** Already %-encoded, starting with "/". */
	path: string;
	query?: Record<string, string | number | boolean | undefined>;
	/** A JSON body (sent with Content-Type: application/json). */
	json?: unknown;
	/** A raw body. */
	body?: BodyInit;
	contentType?: string;
	accept?: string;
	headers?: Record<string, string>;
	/** Send the key (default true). */
	auth?: boolean;
}

/*
 * A deadline for one request: its own AbortController, aborted when the
 * timeout passes, when the caller's signal fires, or when a stream has been
 * silent for too long. What aborted it decides the error.
 */
export class Deadline {
	readonly controller = new AbortController();
	private why: "timeout" | "aborted" | "idle" | "done" | null = null;
	private timer: ReturnType<typeof setTimeout> | undefined;
	private idleTimer: ReturnType<typeof setTimeout> | undefined;
	private idleMs = 0;
	private readonly onAbort = (): void => this.fire("aborted");

	constructor(private readonly timeoutMs: number, private readonly user: AbortSignal | undefined) {
		if (user) {
			if (user.aborted)
				this.fire("aborted");
			else
				user.addEventListener("abort", this.onAbort, { once: true });
		}
		if (timeoutMs > 0 && Number.isFinite(timeoutMs))
			this.timer = setTimeout(() => this.fire("timeout"), timeoutMs);
	}

	get signal(): AbortSignal {
		return this.controller.signal;
	}

	/** Why the request was cut, if it was. */
	get reason(): "timeout" | "aborted" | "idle" | "done" | null {
		return this.why;
	}

	private fire(why: "timeout" | "aborted" | "idle" | "done"): void {
		if (this.why !== null)
			return;
		this.why = why;
		this.controller.abort(why === "aborted" ? this.user?.reason : new Error(why));
	}

	/** The head came: from now on only the caller's signal (and idleness) end it. */
	clearTimeout(): void {
		if (this.timer !== undefined)
			clearTimeout(this.timer);
		this.timer = undefined;
	}

	/** Cut the stream when nothing (not even a heartbeat) came for `ms`. */
	armIdle(ms: number): void {
		this.idleMs = ms;
		this.touch();
	}

	/** Data came: restart the idle clock. */
	touch(): void {
		if (this.idleMs <= 0 || this.why !== null)
			return;
		if (this.idleTimer !== undefined)
			clearTimeout(this.idleTimer);
		this.idleTimer = setTimeout(() => this.fire("idle"), this.idleMs);
	}

	/** The caller is finished with the request: drop it if still open. */
	close(): void {
		if (this.timer !== undefined)
			clearTimeout(this.timer);
		if (this.idleTimer !== undefined)
			clearTimeout(this.idleTimer);
		this.timer = this.idleTimer = undefined;
		this.user?.removeEventListener("abort", this.onAbort);
		this.fire("done");
	}

	/** The SandboxdError for a failure `e` of request `what`. */
	error(e: unknown, what: string): SandboxdError {
		if (this.why === "aborted") {
			const r = this.user?.reason;
			const detail = r instanceof Error ? r.message : r !== undefined ? String(r) : "";
			return new AbortError({
				status: 0, code: "aborted", request: what, cause: r,
				message: `${what} was aborted${detail && detail !== "This operation was aborted" ? `: ${detail}` : ""}`,
			});
		}
		if (this.why === "timeout") {
			return new TimeoutError({
				status: 0, code: "timeout", request: what,
				message: `${what} timed out after ${this.timeoutMs} ms`,
			});
		}
		if (this.why === "idle") {
			return new NetworkError({
				status: 0, code: "network_error", request: what,
				message: `${what}: the stream was silent for ${this.idleMs} ms (no data, no heartbeat)`,
			});
		}
		if (e instanceof SandboxdError)
			return e;
		return new NetworkError({
			status: 0, code: "network_error", request: what, cause: e,
			message: `${what} failed: ${describe(e)}`,
		});
	}
}

/* The most telling words of a fetch failure (Node puts them in `cause`). */
function describe(e: unknown): string {
	if (!(e instanceof Error))
		return String(e);
	const cause = (e as { cause?: unknown }).cause;
	if (cause instanceof Error) {
		const code = (cause as { code?: unknown }).code;
		return typeof code === "string" && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
	}
	return e.message;
}

export class Transport {
	readonly baseUrl: string;

	constructor(
		baseUrl: string,
		private readonly apiKey: string | undefined,
		readonly timeoutMs: number,
		private readonly fetchFn: FetchLike,
	) {
		this.baseUrl = baseUrl.replace(/\/+$/, "");
	}

	/** The key, for the terminal's subprotocol. */
	get key(): string | undefined {
		return this.apiKey;
	}

	url(path: string, query?: RequestSpec["query"]): string {
		let u = this.baseUrl + path;
		if (query) {
			const q = new URLSearchParams();
			for (const [k, v] of Object.entries(query)) {
				if (v !== undefined)
					q.append(k, String(v));
			}
			const s = q.toString();
			if (s)
				u += "?" + s;
		}
		return u;
	}

	/*
	 * Sends the request; answers the Response once its head is in, with a 2xx
	 * status (anything else is read and thrown as the API's error). The
	 * deadline stays armed: the caller reads the body and then closes it.
	 */
	async send(spec: RequestSpec, d: Deadline): Promise<Response> {
		const what = `${spec.method} ${spec.path}`;
		const headers: Record<string, string> = { ...spec.headers };
		if (spec.auth !== false && this.apiKey !== undefined)
			headers["Authorization"] = `Bearer ${this.apiKey}`;
		if (spec.accept)
			headers["Accept"] = spec.accept;
		let body: BodyInit | undefined = spec.body;
		if (spec.json !== undefined) {
			body = JSON.stringify(spec.json);
			headers["Content-Type"] = "application/json";
		} else if (spec.contentType) {
			headers["Content-Type"] = spec.contentType;
		}
		let res: Response;
		try {
			res = await this.fetchFn(this.url(spec.path, spec.query), {
				method: spec.method,
				headers,
				body,
				signal: d.signal,
				redirect: "manual",
			});
		} catch (e) {
			throw d.error(e, what);
		}
		if (res.status >= 200 && res.status < 300)
			return res;
		if (res.type === "opaqueredirect" || (res.status >= 300 && res.status < 400)) {
			/*
			 * Not followed: a redirect to another origin would drop the key
			 * and end in a puzzling 401. It is redirect_https, in practice.
			 */
			res.body?.cancel().catch(() => {});
			const to = res.headers.get("location");
			throw new SandboxdError({
				status: res.status, code: "protocol_error", request: what,
				message: `${what} was redirected${to ? ` to ${to}` : ""}: set the client's url to the address it names`,
			});
		}
		let text = "";
		try {
			text = await res.text();
		} catch (e) {
			throw d.error(e, what);
		}
		throw errorFromResponse(res.status, res.statusText, text, what);
	}

	deadline(opts: CallOptions | undefined, fallbackMs?: number): Deadline {
		return new Deadline(opts?.timeoutMs ?? fallbackMs ?? this.timeoutMs, opts?.signal);
	}

	/** A whole request: the answer's status, headers and body, within the deadline. */
	async call(spec: RequestSpec, opts?: CallOptions, fallbackMs?: number): Promise<{ res: Response; bytes: Uint8Array }> {
		const d = this.deadline(opts, fallbackMs);
		try {
			const res = await this.send(spec, d);
			let bytes: Uint8Array;
			try {
				bytes = new Uint8Array(await res.arrayBuffer());
			} catch (e) {
				throw d.error(e, `${spec.method} ${spec.path}`);
			}
			return { res, bytes };
		} finally {
			d.close();
		}
	}

	async json<T>(spec: RequestSpec, opts?: CallOptions, fallbackMs?: number): Promise<T> {
		const { res, bytes } = await this.call(spec, opts, fallbackMs);
		return parseJson<T>(res, bytes, `${spec.method} ${spec.path}`);
	}

	async none(spec: RequestSpec, opts?: CallOptions): Promise<Response> {
		const { res } = await this.call(spec, opts);
		return res;
	}
}

export function parseJson<T>(res: Response, bytes: Uint8Array, what: string): T {
	const text = new TextDecoder().decode(bytes);
	try {
		return JSON.parse(text) as T;
	} catch (e) {
		throw new SandboxdError({
			status: res.status, code: "protocol_error", request: what, cause: e,
			message: `${what}: the answer is not JSON: ${text.slice(0, 120)}`,
		});
	}
}
