/*
 * The terminal: a WebSocket to a shell on a PTY in the sandbox
 * (docs/terminal.md). The key is offered as the subprotocol `bearer.<key>`
 * beside `sandboxd.terminal`, which every WHATWG WebSocket can send (a
 * browser cannot set Authorization on one). The WebSocket constructor is
 * the platform's (Node 22+, Deno, Bun, browsers) or one passed in (Node 20:
 * the `ws` package, or `--experimental-websocket`).
 */

import { makeError } from "./errors.js";

/** What the SDK needs of a WebSocket class (the WHATWG one, or `ws`'s). */
export interface WebSocketLike {
	binaryType: string;
	readonly readyState: number;
	readonly protocol: string;
	send(data: string | ArrayBufferView | ArrayBuffer): void;
	close(code?: number, reason?: string): void;
	addEventListener(type: string, listener: (ev: any) => void, options?: { once?: boolean }): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface TerminalClose {
	code: number;
	reason: string;
	/** The shell's exit status when it ended (close 1000 `exit N`), else null. */
	exitCode: number | null;
}

export class Terminal {
	/** Resolves when the WebSocket has closed. */
	readonly closed: Promise<TerminalClose>;
	private readonly queue: Uint8Array[] = [];
	private waiter: (() => void) | undefined;
	private ended = false;
	private readonly encoder = new TextEncoder();

	/** @internal Use Sandbox.terminal(). */
	constructor(readonly ws: WebSocketLike) {
		this.closed = new Promise((resolve) => {
			ws.addEventListener("close", (ev: { code?: number; reason?: string }) => {
				const reason = ev.reason ?? "";
				const m = /^exit (\d+)$/.exec(reason);
				this.ended = true;
				this.wake();
				resolve({ code: ev.code ?? 1006, reason, exitCode: ev.code === 1000 && m ? Number(m[1]) : null });
			}, { once: true });
		});
		ws.addEventListener("message", (ev: { data: unknown }) => {
			const d = ev.data;
			if (typeof d === "string")
				this.queue.push(this.encoder.encode(d));
			else if (d instanceof ArrayBuffer)
				this.queue.push(new Uint8Array(d));
			else if (ArrayBuffer.isView(d))
				this.queue.push(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
			this.wake();
		});
	}

	private wake(): void {
		const w = this.waiter;
		this.waiter = undefined;
		w?.();
	}

	/** Types into the PTY (a string is sent as its UTF-8 bytes). */
	write(data: string | Uint8Array): void {
		this.ws.send(typeof data === "string" ? this.encoder.encode(data) : data);
	}

	/** Resizes the PTY (1..1000 each); the shell gets SIGWINCH. */
	resize(cols: number, rows: number): void {
		this.ws.send(JSON.stringify({ resize: [cols, rows] }));
	}

	/** Closes the terminal; the shell gets SIGHUP. */
	close(): void {
		this.ws.close(1000, "");
	}

	/** The screen: the PTY's output as it comes, until the WebSocket closes. */
	async *output(): AsyncGenerator<Uint8Array, void, undefined> {
		for (;;) {
			const c = this.queue.shift();
			if (c !== undefined) {
				yield c;
				continue;
			}
			if (this.ended)
				return;
			await new Promise<void>((r) => (this.waiter = r));
		}
	}

	[Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
		return this.output();
	}
}

/* Waits for the WebSocket to open; the reason it did not otherwise. */
export function opened(ws: WebSocketLike, timeoutMs: number, signal: AbortSignal | undefined, what: string): Promise<void> {
	return new Promise((resolve, reject) => {
		let done = false;
		const fail = (why: string): void => {
			if (done)
				return;
			done = true;
			clearTimeout(timer);
			try {
				ws.close();
			} catch {
				/* not open yet */
			}
			const code = why === "aborted" ? "aborted" : why === "timeout" ? "timeout" : "network_error";
			reject(makeError({ status: 0, code, request: what, message: `${what}: ${why === "timeout" ? `no answer in ${timeoutMs} ms` : why}` }));
		};
		const timer = timeoutMs > 0 ? setTimeout(() => fail("timeout"), timeoutMs) : undefined;
		signal?.addEventListener("abort", () => fail("aborted"), { once: true });
		ws.addEventListener("open", () => {
			if (done)
				return;
			done = true;
			clearTimeout(timer);
			resolve();
		}, { once: true });
		ws.addEventListener("close", (ev: { code?: number; reason?: string }) =>
			fail(`the WebSocket closed before it opened (${ev.code ?? "?"}${ev.reason ? ` ${ev.reason}` : ""})`), { once: true });
		ws.addEventListener("error", () => fail("the WebSocket handshake failed"), { once: true });
	});
}
