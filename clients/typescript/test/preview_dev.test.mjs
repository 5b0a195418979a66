// Previews (public, private with a token), the dev server's logs and
// restart, the terminal, and /metrics.
import assert from "node:assert/strict";
import { ConflictError, Sandboxd } from "../dist/index.js";
import { ADMIN_KEY, URL_, dtest, previewGet, sandbox, until } from "./helpers.mjs";

dtest("previewUrl(): the app answers there", async () => {
	const s = await sandbox();
	const url = s.previewUrl();
	assert.equal(url, s.data.preview_url);
	assert.match(url, new RegExp(`^http://${s.id}\\.preview\\.localhost:\\d+/$`));
	assert.equal(s.previewUrl(5173), url.replace(`//${s.id}.`, `//5173-${s.id}.`));
	await s.files.write("index.html", "<h1>hello from the sandbox</h1>\n");
	const r = await until(async () => {
		const x = await previewGet(url);
		return x.status === 200 && x;
	}, 20_000, "the preview answers 200");
	assert.equal(r.body, "<h1>hello from the sandbox</h1>\n");
	// The public sandbox's token URL is the plain preview URL.
	const tok = await s.previewToken();
	assert.equal(tok.url, url);
	assert.match(tok.token, /^v1\./);
});

dtest("previewToken({ttlS}) on a private sandbox opens its preview", async () => {
	const s = await sandbox({ visibility: "private" });
	assert.equal(s.data.visibility, "private");
	await s.files.write("index.html", "<p>private app</p>\n");
	const denied = await previewGet(s.previewUrl());
	assert.equal(denied.status, 401);
	const t0 = Date.now();
	const tok = await s.previewToken({ ttlS: 120 });
	assert.ok(tok.url.startsWith(s.previewUrl()) && tok.url.includes("sandboxd_token=" + tok.token), tok.url);
	const exp = Date.parse(tok.expires_at);
	assert.ok(exp > t0 + 100_000 && exp < t0 + 140_000, `expires_at ${tok.expires_at} is ~120 s away`);
	// The token in the query sets the cookie and redirects to the clean URL.
	const first = await previewGet(tok.url);
	assert.equal(first.status, 302);
	const cookie = String(first.headers["set-cookie"]).split(";")[0];
	assert.match(cookie, /^sandboxd_token=/);
	const r = await until(async () => {
		const x = await previewGet(s.previewUrl(), { Cookie: cookie });
		return x.status === 200 && x;
	}, 20_000, "the private preview answers 200 with the cookie");
	assert.equal(r.body, "<p>private app</p>\n");
	await assert.rejects(s.previewToken({ ttlS: 5 }), (e) => e.code === "bad_request");
});

dtest("logs(): the dev server's output as text, and followed line by line", async () => {
	const s = await sandbox();
	const text = await until(async () => {
		const l = await s.logs();
		return l.includes("tick 1") && l;
	}, 20_000, "logs have ticks");
	assert.ok(text.startsWith("dev-started\n"), JSON.stringify(text.slice(0, 80)));
	const lines = [];
	const t0 = Date.now();
	for await (const line of s.logs({ follow: true })) {
		lines.push(line);
		if (lines.length === 3)
			break;
	}
	assert.equal(lines.length, 3);
	for (const l of lines)
		assert.match(l, /^tick \d+$/);
	const n = lines.map((l) => Number(l.split(" ")[1]));
	assert.deepEqual(n, [n[0], n[0] + 1, n[0] + 2], "consecutive new lines");
	assert.ok(Date.now() - t0 < 10_000);
	// follow with a signal stops when asked.
	const ac = new AbortController();
	setTimeout(() => ac.abort(), 700);
	const got = [];
	const e = await (async () => {
		for await (const l of s.logs({ follow: true, signal: ac.signal }))
			got.push(l);
	})().catch((x) => x);
	assert.equal(e?.code, "aborted", String(e));
	assert.ok(got.length >= 1);
});

dtest("restartDev(): the dev server restarts (its count goes up)", async () => {
	const s = await sandbox();
	await until(async () => (await s.refresh()).data.dev_server?.state === "ready", 20_000, "dev server ready");
	const before = s.data.dev_server.restarts;
	const d = await s.restartDev();
	assert.equal(d.state, "restarting");
	await until(async () => (await s.refresh()).data.dev_server?.restarts > before, 20_000, "restart counted");
	await until(async () => (await s.logs()).split("dev-started").length > 2, 20_000, "a second dev-started");
});

dtest("terminal(): a shell on a PTY, resize, exit status", {
	skip: typeof globalThis.WebSocket === "function" ? false : "no global WebSocket in this Node (Node 20: --experimental-websocket)",
}, async () => {
	const s = await sandbox();
	const term = await s.terminal({ cols: 100, rows: 30 });
	const screen = term.output();
	const dec = new TextDecoder();
	let out = "";
	const seen = async (what, ms = 15_000) => {
		const end = Date.now() + ms;
		while (!out.includes(what)) {
			const r = await Promise.race([screen.next(), new Promise((res) => setTimeout(() => res(null), Math.max(1, end - Date.now())))]);
			if (r === null || r.done)
				assert.fail(`${JSON.stringify(what)} not on the screen: ${JSON.stringify(out.slice(-300))}`);
			out += dec.decode(r.value, { stream: true });
		}
	};
	await seen("$ ");
	term.resize(120, 40);
	// Typed ahead in one go, as a paste: the last output still comes before the close.
	term.write("stty size; echo sum=$((6*7))\n");
	term.write(new TextEncoder().encode("exit 3\n"));
	await seen("sum=42");
	assert.match(out, /40 120/);
	const closed = await Promise.race([term.closed, new Promise((res) => setTimeout(() => res(null), 15_000))]);
	if (closed === null)
		term.ws.close();
	assert.deepEqual(closed, { code: 1000, reason: "exit 3", exitCode: 3 });
	for await (const c of screen)
		out += dec.decode(c, { stream: true });
	assert.match(out, /exit 3/);
	// Not running: a ConflictError, as the API would say.
	await s.stop();
	const e = await s.terminal().catch((x) => x);
	assert.ok(e instanceof ConflictError, String(e));
	assert.match(e.message, /stopped/);
});

dtest("terminal(): without a WebSocket class, a clear error", async () => {
	const s = await sandbox();
	const saved = globalThis.WebSocket;
	try {
		delete globalThis.WebSocket;
		const e = await s.terminal().catch((x) => x);
		assert.equal(e.code, "not_implemented");
		assert.match(e.message, /WebSocket/);
	} finally {
		if (saved)
			globalThis.WebSocket = saved;
	}
});

dtest("metrics() with an admin key", { skip: ADMIN_KEY ? false : "no SANDBOXD_ADMIN_KEY" }, async () => {
	const m = await new Sandboxd({ url: URL_, apiKey: ADMIN_KEY }).metrics();
	assert.match(m, /^sandboxd_sandboxes\{state="running"\} \d+$/m);
});
