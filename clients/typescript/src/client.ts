/*
 * The client: new Sandboxd({url, apiKey}) and the sandboxes collection.
 */

import { SandboxdError } from "./errors.js";
import { Transport, type CallOptions, type FetchLike } from "./http.js";
import { seg } from "./paths.js";
import { Sandbox } from "./sandbox.js";
import type { WebSocketConstructor } from "./terminal.js";
import type { Health, SandboxInfo, SandboxState, Visibility } from "./types.js";

export interface SandboxdOptions {
	/** The API's address, e.g. http://localhost:8080 (the daemon's public_url). */
	url: string;
	/** An API key: an [api_key] secret, or one made by `sandboxd key create`. */
	apiKey?: string;
	/** Default limit of each call, in ms (default 60000; 0: none). */
	timeoutMs?: number;
	/** The fetch to use (default: the platform's). */
	fetch?: FetchLike;
	/** The WebSocket class for terminals (default: the platform's, where there is one). */
	WebSocket?: WebSocketConstructor;
}

export interface CreateSandboxOptions extends CallOptions {
	/** A configured template (default: the daemon's default_template). */
	template?: string;
	env?: Record<string, string>;
	labels?: Record<string, string>;
	memoryMb?: number;
	cpus?: number;
	/** 0: never stopped for idleness. */
	idleTimeoutS?: number;
	pauseTimeoutS?: number;
	/** The port <id>.<preview_domain> reaches (default: the template's). */
	port?: number;
	/** "private": the preview answers only with a preview token. */
	visibility?: Visibility;
}

export interface ListSandboxesOptions extends CallOptions {
	state?: SandboxState;
	/** Only sandboxes with this label: "key:value", or { key: "value" }. */
	label?: string | Record<string, string>;
}

export class Sandboxes {
	/** @internal */
	constructor(private readonly t: Transport, private readonly ws: WebSocketConstructor | undefined) {}

	/** Creates and starts a sandbox; it is `running` when this resolves (its dev server may still boot). */
	async create(opts: CreateSandboxOptions = {}): Promise<Sandbox> {
		const body: Record<string, unknown> = {};
		const names: [keyof CreateSandboxOptions, string][] = [
			["template", "template"], ["env", "env"], ["labels", "labels"], ["memoryMb", "memory_mb"],
			["cpus", "cpus"], ["idleTimeoutS", "idle_timeout_s"], ["pauseTimeoutS", "pause_timeout_s"],
			["port", "port"], ["visibility", "visibility"],
		];
		for (const [k, wire] of names) {
			if (opts[k] !== undefined)
				body[wire] = opts[k];
		}
		const data = await this.t.json<SandboxInfo>({ method: "POST", path: "/v1/sandboxes", json: body }, opts,
			Math.max(this.t.timeoutMs, 120_000));
		return new Sandbox(this.t, data, this.ws);
	}

	async get(id: string, opts?: CallOptions): Promise<Sandbox> {
		return new Sandbox(this.t, await this.t.json<SandboxInfo>({ method: "GET", path: `/v1/sandboxes/${seg(id)}` }, opts), this.ws);
	}

	/** The key's sandboxes (an admin key: everyone's), oldest first. */
	async list(opts: ListSandboxesOptions = {}): Promise<Sandbox[]> {
		let label: string | undefined;
		if (typeof opts.label === "string") {
			label = opts.label;
		} else if (opts.label !== undefined) {
			const e = Object.entries(opts.label);
			if (e.length !== 1) {
				throw new SandboxdError({ status: 400, code: "bad_request", message: "label: exactly one key and value, as { key: \"value\" }" });
			}
			label = `${e[0]![0]}:${e[0]![1]}`;
		}
		const j = await this.t.json<{ sandboxes: SandboxInfo[] }>({
			method: "GET", path: "/v1/sandboxes", query: { state: opts.state, label },
		}, opts);
		return j.sandboxes.map((d) => new Sandbox(this.t, d, this.ws));
	}

	/** Deletes a sandbox by id. */
	async delete(id: string, opts?: CallOptions): Promise<void> {
		await this.t.none({ method: "DELETE", path: `/v1/sandboxes/${seg(id)}` }, opts);
	}
}

export class Sandboxd {
	readonly sandboxes: Sandboxes;
	private readonly t: Transport;

	constructor(opts: SandboxdOptions) {
		if (!opts || typeof opts.url !== "string" || !/^https?:\/\//.test(opts.url))
			throw new TypeError("new Sandboxd({ url }): url must be the API's http:// or https:// address");
		const f = opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
		if (typeof f !== "function")
			throw new TypeError("new Sandboxd(): this runtime has no fetch; pass one as { fetch }");
		/* Called unbound, a platform fetch may refuse ("Illegal invocation"). */
		const fetchFn: FetchLike = opts.fetch ? opts.fetch : (input, init) => f.call(globalThis, input, init);
		this.t = new Transport(opts.url, opts.apiKey, opts.timeoutMs ?? 60_000, fetchFn);
		this.sandboxes = new Sandboxes(this.t, opts.WebSocket);
	}

	/** The API's address, as given (without a trailing slash). */
	get url(): string {
		return this.t.baseUrl;
	}

	/** GET /healthz (no key needed): the store, Docker and the network rules. 503 is an UnavailableError. */
	async healthz(opts?: CallOptions): Promise<Health> {
		return this.t.json<Health>({ method: "GET", path: "/healthz", auth: false }, opts);
	}

	/** GET /metrics (an admin key): Prometheus text. */
	async metrics(opts?: CallOptions): Promise<string> {
		const { bytes } = await this.t.call({ method: "GET", path: "/metrics" }, opts);
		return new TextDecoder().decode(bytes);
	}
}
