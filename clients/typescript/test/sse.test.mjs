// The event-stream parser alone (no daemon): line endings, chunk
// boundaries anywhere (inside a CRLF, inside a UTF-8 character), comments,
// multi-line data, ids that persist.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseSse } from "../dist/index.js";

function streamOf(chunks) {
	const enc = new TextEncoder();
	return new ReadableStream({
		start(c) {
			for (const ch of chunks)
				c.enqueue(typeof ch === "string" ? enc.encode(ch) : ch);
			c.close();
		},
	});
}

async function parse(chunks) {
	const out = [];
	for await (const m of parseSse(streamOf(chunks)))
		out.push(m);
	return out;
}

const STREAM = ": heartbeat\n\nid: 1\nevent: output\ndata: {\"text\":\"héllo ✓\\n\"}\n\n" +
	"id: 2\nevent: exit\ndata: {\"exit_code\":0}\n\n";
const WANT = [
	{ id: "1", event: "output", data: "{\"text\":\"héllo ✓\\n\"}" },
	{ id: "2", event: "exit", data: "{\"exit_code\":0}" },
];

test("whole, and split at every byte", async () => {
	assert.deepEqual(await parse([STREAM]), WANT);
	const bytes = new TextEncoder().encode(STREAM);
	for (let i = 1; i < bytes.length; i++)
		assert.deepEqual(await parse([bytes.slice(0, i), bytes.slice(i)]), WANT, `split at ${i}`);
	assert.deepEqual(await parse([...bytes].map((b) => new Uint8Array([b]))), WANT, "a byte at a time");
});

test("CRLF and CR line endings, a CRLF split across chunks", async () => {
	const crlf = STREAM.replaceAll("\n", "\r\n");
	assert.deepEqual(await parse([crlf]), WANT);
	const cr = STREAM.replaceAll("\n", "\r");
	assert.deepEqual(await parse([cr]), WANT);
	const i = crlf.indexOf("\r\n") + 1;
	assert.deepEqual(await parse([crlf.slice(0, i), crlf.slice(i)]), WANT);
});

test("multi-line data, no space after the colon, the default event, unterminated tail", async () => {
	const out = await parse(["data:a\ndata: b\n\nid: 7\ndata\n\nevent: x\n\ndata: dropped at the end"]);
	assert.deepEqual(out, [
		{ id: undefined, event: "message", data: "a\nb" },
		{ id: "7", event: "message", data: "" },
	]);
});
