/*
 * A Server-Sent Events parser over a fetch body (the WHATWG "event stream
 * interpretation": lines end in CRLF, LF or CR; `data` lines join with LF;
 * a blank line dispatches; `:` lines are comments). It works on any runtime
 * with web streams and TextDecoder, and never buffers more than one event.
 */

export interface SseMessage {
	/** The last `id:` seen on this stream (persists across events, as the spec says). */
	id: string | undefined;
	/** `message` when the block named none. */
	event: string;
	data: string;
}

/**
 * Yields the messages of `body` as they arrive. `onChunk` is called for every
 * chunk read, comments (heartbeats) included, so that a caller can tell a
 * quiet stream from a dead one. Returning early cancels the body.
 */
export async function* parseSse(body: ReadableStream<Uint8Array>, onChunk?: () => void): AsyncGenerator<SseMessage> {
	const reader = body.getReader();
	const decoder = new TextDecoder();
	let buf = "";
	let skipLF = false;		/* the last chunk ended in CR: a leading LF belongs to it */
	let lastId: string | undefined;
	let event = "";
	let data: string[] = [];
	let sawData = false;

	try {
		for (;;) {
			const { value, done } = await reader.read();
			if (done) {
				/* An unterminated block at the end is dropped, as the spec says. */
				return;
			}
			onChunk?.();
			buf += decoder.decode(value, { stream: true });
			if (skipLF && buf.length > 0) {
				if (buf[0] === "\n")
					buf = buf.slice(1);
				skipLF = false;
			}
			let start = 0;
			for (;;) {
				let end = -1;
				for (let i = start; i < buf.length; i++) {
					const c = buf.charCodeAt(i);
					if (c === 10 || c === 13) {
						end = i;
						break;
					}
				}
				if (end < 0)
					break;
				const line = buf.slice(start, end);
				if (buf.charCodeAt(end) === 13) {
					if (end + 1 < buf.length) {
						start = buf.charCodeAt(end + 1) === 10 ? end + 2 : end + 1;
					} else {
						start = end + 1;
						skipLF = true;
					}
				} else {
					start = end + 1;
				}

				if (line === "") {
					if (sawData) {
						yield { id: lastId, event: event || "message", data: data.join("\n") };
					}
					event = "";
					data = [];
					sawData = false;
					continue;
				}
				if (line.charCodeAt(0) === 58)	/* ':' a comment */
					continue;
				const colon = line.indexOf(":");
				const field = colon < 0 ? line : line.slice(0, colon);
				let val = colon < 0 ? "" : line.slice(colon + 1);
				if (val.charCodeAt(0) === 32)
					val = val.slice(1);
				switch (field) {
				case "event":
					event = val;
					break;
				case "data":
					data.push(val);
					sawData = true;
					break;
				case "id":
					if (!val.includes("\0"))
						lastId = val;
					break;
				default:
					/* retry and unknown fields: nothing to do here */
					break;
				}
			}
			buf = buf.slice(start);
		}
	} finally {
		reader.cancel().catch(() => {});
		reader.releaseLock();
	}
}
