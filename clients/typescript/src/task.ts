/*
 * A task and its event stream. events() follows the task's Server-Sent
 * Events and, when the connection drops before the `exit` event (a proxy
 * timing out, the daemon restarting, a network blip), reconnects on its own
 * with Last-Event-ID, so the caller sees every event once, in order, and
 * then the exit.
 */

import { AbortError, NetworkError, SandboxdError, TimeoutError } from "./errors.js";
import { Deadline, type CallOptions, type Transport } from "./http.js";
import { seg } from "./paths.js";
import { parseSse } from "./sse.js";
import type { TaskEvent, TaskInfo, TaskState } from "./types.js";

export interface EventsOptions {
	/** Start after this event id (0, the default: from the first event). */
	after?: number;
	/** Stops following; the iterator throws an AbortError. */
	signal?: AbortSignal;
	/** Longest wait for each connection's answer head, in ms (default: the client's timeoutMs). */
	timeoutMs?: number;
	/**
	 * A connection silent this long (not even the 15 s heartbeat) is taken
	 * for dead and replaced. Default 45000.
	 */
	idleTimeoutMs?: number;
	/**
	 * Reconnections in a row that get nothing at all before giving up with a
	 * NetworkError (any byte received resets the count). Default 8.
	 */
	maxRetries?: number;
}

export interface WaitOptions {
	/** Give up after this long (TimeoutError); default: no limit. */
	timeoutMs?: number;
	signal?: AbortSignal;
	/** The longest pause between two looks at the task, in ms (default 1000). */
	pollMs?: number;
}

const FINISHED: readonly TaskState[] = ["succeeded", "failed", "cancelled"];

/** Waits `ms`, or rejects with an AbortError when `signal` fires first. */
export function sleep(ms: number, signal?: AbortSignal, what = "waiting"): Promise<void> {
	return new Promise((resolve, reject) => {
		const aborted = (): AbortError =>
			new AbortError({ status: 0, code: "aborted", message: `${what} was aborted`, cause: signal?.reason });
		if (signal?.aborted) {
			reject(aborted());
			return;
		}
		const onAbort = (): void => {
			clearTimeout(timer);
			reject(aborted());
		};
		const timer = setTimeout(() => {
			signal?.removeEventListener("abort", onAbort);
			resolve();
		}, ms);
		signal?.addEventListener("abort", onAbort, { once: true });
	});
}

/* Worth another connection: no answer, or the server side failing for now. */
function retryable(e: unknown): boolean {
	if (!(e instanceof SandboxdError))
		return false;
	return e.code === "network_error" || e.code === "timeout" ||
		e.status === 502 || e.status === 503 || e.status === 504;
}

export class Task {
	/** The task object as the API last sent it. */
	data: TaskInfo;

	constructor(private readonly t: Transport, data: TaskInfo) {
		this.data = data;
	}

	get id(): string {
		return this.data.id;
	}

	get sandboxId(): string {
		return this.data.sandbox_id;
	}

	get state(): TaskState {
		return this.data.state;
	}

	/** succeeded, failed or cancelled. */
	get done(): boolean {
		return FINISHED.includes(this.data.state);
	}

	private path(tail = ""): string {
		return `/v1/sandboxes/${seg(this.data.sandbox_id)}/tasks/${seg(this.data.id)}${tail}`;
	}

	/** Reads the task again. */
	async refresh(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<TaskInfo>({ method: "GET", path: this.path() }, opts);
		return this;
	}

	/**
	 * Cancels the task: a running one gets SIGTERM (the `exit` event with
	 * state `cancelled` follows), a queued one ends at once. 409 once finished.
	 */
	async cancel(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<TaskInfo>({ method: "POST", path: this.path("/cancel") }, opts);
		return this;
	}

	/** Puts the workspace back to the checkpoint taken before this (agent) task ran. */
	async revert(opts?: CallOptions): Promise<this> {
		this.data = await this.t.json<TaskInfo>({ method: "POST", path: this.path("/revert") }, opts, Math.max(this.t.timeoutMs, 120_000));
		return this;
	}

	/** Resolves once the task has finished (with the final task object). */
	async wait(opts: WaitOptions = {}): Promise<this> {
		const limit = opts.timeoutMs && opts.timeoutMs > 0 ? Date.now() + opts.timeoutMs : Infinity;
		const most = opts.pollMs ?? 1000;
		let delay = Math.min(100, most);
		for (;;) {
			await this.refresh({ signal: opts.signal });
			if (this.done)
				return this;
			if (Date.now() + delay > limit) {
				throw new TimeoutError({
					status: 0, code: "timeout", request: `GET ${this.path()}`,
					message: `task ${this.id} did not finish within ${opts.timeoutMs} ms (it is ${this.state})`,
				});
			}
			await sleep(delay, opts.signal, `waiting for task ${this.id}`);
			delay = Math.min(delay * 2, most);
		}
	}

	/**
	 * The task's events, replayed from the start (or after `after`) and then
	 * live, ending after the `exit` event. Dropped connections are resumed
	 * with Last-Event-ID; an event is never given twice.
	 */
	async *events(opts: EventsOptions = {}): AsyncGenerator<TaskEvent, void, undefined> {
		const path = this.path("/events");
		const what = `GET ${path}`;
		const idleMs = opts.idleTimeoutMs ?? 45_000;
		const maxRetries = opts.maxRetries ?? 8;
		let last = opts.after ?? 0;
		let failures = 0;

		for (;;) {
			const d = new Deadline(opts.timeoutMs ?? this.t.timeoutMs, opts.signal);
			let gotBytes = false;
			let dropped: SandboxdError | undefined;
			try {
				let res: Response;
				try {
					res = await this.t.send({
						method: "GET", path, accept: "text/event-stream",
						headers: last > 0 ? { "Last-Event-ID": String(last) } : undefined,
					}, d);
				} catch (e) {
					if (!retryable(e) || d.reason === "aborted")
						throw e;
					dropped = e as SandboxdError;
				}
				if (dropped === undefined) {
					/* Nothing after `last`: the task is over and its exit was seen. */
					if (res!.status === 204 || !res!.body) {
						res!.body?.cancel().catch(() => {});
						return;
					}
					d.clearTimeout();
					d.armIdle(idleMs);
					try {
						for await (const m of parseSse(res!.body, () => {
							gotBytes = true;
							d.touch();
						})) {
							const id = Number(m.id);
							if (m.id !== undefined && Number.isSafeInteger(id) && id <= last)
								continue;	/* seen before the reconnect */
							let data: unknown;
							try {
								data = JSON.parse(m.data);
							} catch (e) {
								throw new SandboxdError({
									status: 200, code: "protocol_error", request: what, cause: e,
									message: `${what}: event ${m.id ?? "?"} (${m.event}) carries data that is not JSON`,
								});
							}
							if (Number.isSafeInteger(id))
								last = id;
							failures = 0;
							yield { id, event: m.event, data } as TaskEvent;
							if (m.event === "exit")
								return;
						}
					} catch (e) {
						if (e instanceof SandboxdError && e.code === "protocol_error")
							throw e;
						const err = d.error(e, what);
						if (err.code === "aborted")
							throw err;
						dropped = err;
					}
				}
			} finally {
				d.close();
			}
			/* The stream ended, or broke, before the exit event: go again. */
			if (gotBytes)
				failures = 0;
			failures++;
			if (failures > maxRetries) {
				throw new NetworkError({
					status: 0, code: "network_error", request: what, cause: dropped,
					message: `the events of task ${this.id} could not be resumed after event ${last} ` +
						`(${maxRetries} attempts in a row got nothing${dropped ? `; last: ${dropped.message}` : ""})`,
				});
			}
			await sleep(failures === 1 ? 100 : Math.min(250 * 2 ** (failures - 2), 5000), opts.signal, `following task ${this.id}`);
		}
	}

	toJSON(): TaskInfo {
		return this.data;
	}
}
