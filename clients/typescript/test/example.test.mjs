// examples/app-builder.mjs run once against the daemon, driven like a
// browser would: the page with its preview iframe, a prompt posted, the
// task's events streamed back as SSE, and the app the "agent" made in the
// preview.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseSse } from "../dist/index.js";
import { KEY, URL_, client, dtest, previewGet, until } from "./helpers.mjs";

const EXAMPLE = join(dirname(fileURLToPath(import.meta.url)), "..", "examples", "app-builder.mjs");

dtest("the app builder example: sandbox per user, prompt as a task, events as SSE, the preview", { timeout: 90_000 }, async () => {
	const user = "u" + Math.random().toString(36).slice(2, 10);
	const child = spawn(process.execPath, [EXAMPLE], {
		env: { ...process.env, SANDBOXD_URL: URL_, SANDBOXD_API_KEY: KEY, AGENT: "command", PORT: "0" },
		stdio: ["ignore", "pipe", "pipe"],
	});
	let out = "";
	child.stdout.on("data", (d) => (out += d));
	child.stderr.on("data", (d) => (out += d));
	try {
		const base = await until(() => /on (http:\/\/127\.0\.0\.1:\d+)\//.exec(out)?.[1], 15_000, "the example listens: " + out);
		const q = `?user=${user}`;

		const html = await (await fetch(base + "/" + q)).text();
		const src = /<iframe id=app src="([^"]+)"/.exec(html)?.[1];
		assert.ok(src, "the page has the preview iframe: " + html.slice(0, 300));
		const mine = await client().sandboxes.list({ label: { user } });
		assert.equal(mine.length, 1, "one sandbox for the user");
		assert.equal(src, mine[0].previewUrl());
		await fetch(base + "/" + q);	// the same user again: still one sandbox
		assert.equal((await client().sandboxes.list({ label: { user } })).length, 1);

		const prompt = "echo building; echo '<h1>built by the agent</h1>' > index.html; echo done";
		const run = await fetch(base + "/run" + q, { method: "POST", body: prompt });
		assert.equal(run.status, 202);
		const { task } = await run.json();
		assert.match(task, /^[0-9a-z]{26}$/);

		const res = await fetch(`${base}/events${q}&task=${task}`);
		assert.equal(res.headers.get("content-type"), "text/event-stream");
		const evs = [];
		for await (const m of parseSse(res.body))
			evs.push({ id: Number(m.id), event: m.event, data: JSON.parse(m.data) });
		const texts = evs.filter((e) => e.event === "output").map((e) => e.data.text);
		assert.deepEqual(texts, ["building\n", "done\n"], JSON.stringify(evs));
		assert.equal(evs.at(-1).event, "exit");
		assert.equal(evs.at(-1).data.state, "succeeded");
		assert.deepEqual(evs.map((e) => e.id), evs.map((_, i) => i + 1));

		const app = await until(async () => {
			const r = await previewGet(src);
			return r.status === 200 && r;
		}, 20_000, "the preview shows the app");
		assert.equal(app.body, "<h1>built by the agent</h1>\n");
	} finally {
		child.kill("SIGTERM");
		for (const s of await client().sandboxes.list({ label: { user } }))
			await s.delete().catch(() => {});
	}
});
