// Tasks: run/get/list, events() resumed after cut connections (every event
// exactly once, then the exit), replay, wait, cancel, revert.
import assert from "node:assert/strict";
import { AbortError, ConflictError, NotFoundError, Sandboxd, Task } from "../dist/index.js";
import { BASE_TEMPLATE, KEY, RUN, URL_, client, collect, dtest, sandbox, until } from "./helpers.mjs";

let shared;
async function sb() {
	shared ??= await sandbox();
	return shared;
}

/*
 * A fetch that passes everything through but cuts the body of the first
 * event streams: the first after `cuts[0]` bytes by closing it (as a proxy
 * ending a response), the second after `cuts[1]` bytes with an error (as a
 * connection reset). It records each events request's Last-Event-ID.
 */
function cuttingFetch(cuts) {
	const requests = [];
	let n = 0;
	const f = async (url, init) => {
		const res = await fetch(url, init);
		if (!String(url).includes("/events"))
			return res;
		requests.push({ url: String(url), lastEventId: new Headers(init.headers).get("last-event-id"), status: res.status });
		const cut = cuts[n];
		const mode = n === 0 ? "close" : "error";
		n++;
		if (cut === undefined || res.status !== 200 || !res.body)
			return res;
		const reader = res.body.getReader();
		let sent = 0;
		const body = new ReadableStream({
			async pull(c) {
				const { value, done } = await reader.read();
				if (done) {
					c.close();
					return;
				}
				if (sent + value.length >= cut) {
					c.enqueue(value.slice(0, cut - sent));
					sent = cut;
					reader.cancel().catch(() => {});
					if (mode === "close")
						c.close();
					else
						c.error(new TypeError("terminated: connection reset by the test"));
					return;
				}
				sent += value.length;
				c.enqueue(value);
			},
			cancel(r) {
				return reader.cancel(r);
			},
		});
		return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
	};
	return { fetch: f, requests };
}

dtest("run a command task; get and list it", async () => {
	const s = await sb();
	const t = await s.tasks.run({ agent: "command", cmd: ["sh", "-c", "echo hello from a task"], env: { X: "1" }, timeoutS: 60 });
	assert.ok(t instanceof Task);
	assert.match(t.id, /^[0-9a-z]{26}$/);
	assert.equal(t.sandboxId, s.id);
	assert.ok(["queued", "running"].includes(t.state), t.state);
	await t.wait({ timeoutMs: 30_000 });
	assert.equal(t.state, "succeeded");
	assert.equal(t.done, true);
	assert.equal(t.data.exit_code, 0);
	assert.deepEqual(t.data.cmd, ["sh", "-c", "echo hello from a task"]);
	assert.equal(t.data.env, undefined, "env is never shown");
	const g = await s.tasks.get(t.id);
	assert.equal(g.state, "succeeded");
	const l = await s.tasks.list();
	assert.ok(l.some((x) => x.id === t.id));
	await assert.rejects(s.tasks.get("0".repeat(26)), NotFoundError);
	// A string cmd is run by sh -c.
	const t2 = await s.tasks.run({ agent: "command", cmd: "echo $((40+2))" });
	const evs = await collect(t2.events());
	assert.ok(evs.some((e) => e.event === "output" && e.data.text === "42\n"), JSON.stringify(evs));
});

dtest("events(): cut twice mid-stream (a close, then a reset), resumed with Last-Event-ID: every event once, then exit", async () => {
	const cf = cuttingFetch([700, 450]);
	const c = new Sandboxd({ url: URL_, apiKey: KEY, fetch: cf.fetch });
	const s = await c.sandboxes.get((await sb()).id);
	const lines = 40;
	const t = await s.tasks.run({
		agent: "command",
		cmd: ["sh", "-c", `i=1; while [ $i -le ${lines} ]; do echo "line $i"; i=$((i+1)); sleep 0.02; done`],
	});
	const evs = [];
	for await (const ev of t.events())
		evs.push(ev);
	assert.ok(cf.requests.length >= 3, "three connections at least: " + JSON.stringify(cf.requests));
	assert.equal(cf.requests[0].lastEventId, null, "the first asks from the start");
	const resumedAfter = cf.requests.slice(1).map((r) => Number(r.lastEventId));
	assert.ok(resumedAfter.every((n) => n > 0), "each reconnect sent Last-Event-ID: " + JSON.stringify(cf.requests));
	assert.ok(resumedAfter[1] > resumedAfter[0], "... each further than the one before: " + JSON.stringify(resumedAfter));
	// Ids 1..N, each once, in order; every line exactly once; exit last.
	assert.deepEqual(evs.map((e) => e.id), evs.map((_, i) => i + 1));
	const texts = evs.filter((e) => e.event === "output").map((e) => e.data.text);
	assert.deepEqual(texts, Array.from({ length: lines }, (_, i) => `line ${i + 1}\n`));
	assert.equal(evs.at(-1).event, "exit");
	assert.equal(evs.at(-1).data.state, "succeeded");
	assert.equal(evs.filter((e) => e.event === "exit").length, 1);

	// Replays: all again from the start, a tail with `after`, nothing after the exit.
	const again = await collect(t.events());
	assert.deepEqual(again.map((e) => e.id), evs.map((e) => e.id));
	const tail = await collect(t.events({ after: evs.length - 2 }));
	assert.deepEqual(tail.map((e) => e.id), [evs.length - 1, evs.length]);
	assert.deepEqual(await collect(t.events({ after: evs.length })), []);
});

dtest("events(): a daemon that stays unreachable: a NetworkError after maxRetries", async () => {
	let broken = false;
	let calls = 0;
	const c = new Sandboxd({
		url: URL_, apiKey: KEY,
		fetch: async (u, i) => {
			if (!broken)
				return fetch(u, i);
			calls++;
			throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }) });
		},
	});
	const s = await c.sandboxes.get((await sb()).id);
	const t = await s.tasks.run({ agent: "command", cmd: ["true"] });
	broken = true;
	const e = await collect(t.events({ maxRetries: 2 })).catch((x) => x);
	assert.equal(e.code, "network_error", String(e));
	assert.match(e.message, /could not be resumed after event 0 .*ECONNREFUSED/);
	assert.equal(calls, 3, "the first attempt, then 2 more");
});

dtest("wait() and cancel(): a running task cancelled, its exit event says so; cancel again is 409", async () => {
	const s = await sb();
	const t = await s.tasks.run({ agent: "command", cmd: ["sleep", "30"] });
	await until(async () => (await t.refresh()).state === "running", 15_000, "task running");
	const it = t.events();
	const first = await it.next();
	assert.equal(first.value.event, "status");
	await t.cancel();
	const rest = [];
	for await (const ev of it)
		rest.push(ev);
	const exit = rest.at(-1);
	assert.equal(exit.event, "exit");
	assert.equal(exit.data.state, "cancelled");
	await t.wait({ timeoutMs: 15_000 });
	assert.equal(t.state, "cancelled");
	const e = await t.cancel().catch((x) => x);
	assert.ok(e instanceof ConflictError, String(e));
	// A task that cannot have a checkpoint cannot be reverted.
	await assert.rejects(t.revert(), ConflictError);
});

dtest("wait({timeoutMs}) and events({signal}) give up as asked", async () => {
	const s = await sb();
	const t = await s.tasks.run({ agent: "command", cmd: ["sleep", "20"] });
	const e = await t.wait({ timeoutMs: 500 }).catch((x) => x);
	assert.equal(e.code, "timeout", String(e));
	const ac = new AbortController();
	setTimeout(() => ac.abort(), 400);
	const t0 = Date.now();
	const e2 = await collect(t.events({ signal: ac.signal })).catch((x) => x);
	assert.ok(e2 instanceof AbortError, String(e2));
	assert.ok(Date.now() - t0 < 5000);
	await t.cancel();
	await t.wait({ timeoutMs: 15_000 });
});

// An agent CLI stand-in: Claude Code's stream-json on stdout, and the
// edit an agent would make.
const CLAUDE = `#!/bin/sh
printf '{"type":"system","subtype":"init","session_id":"s1","model":"standin"}\\n'
printf 'changed by the agent\\n' > /workspace/src/App.jsx
rm -f /workspace/README.md
echo new > /workspace/added.txt
printf '{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"Done","session_id":"s1","total_cost_usd":0.001}\\n'
`;

dtest("revert(): an agent task changes files; revert puts them back", {
	skip: BASE_TEMPLATE ? false : "no sandboxd/base template (base-image/build.sh): agent tasks need git for their checkpoint",
	timeout: 90_000,
}, async () => {
	const s = await sandbox({ template: BASE_TEMPLATE, labels: { suite: RUN, role: "revert" } });
	await s.files.write("src/App.jsx", "original\n");
	await s.files.write("README.md", "readme\n");
	await s.files.write("bin/claude", CLAUDE);
	assert.equal((await s.exec(["chmod", "+x", "/workspace/bin/claude"])).exit_code, 0);
	const t = await s.tasks.run({
		agent: "claude-code", prompt: "make the header red",
		env: { PATH: "/workspace/bin:/usr/local/bin:/usr/bin:/bin" },
	});
	const evs = await collect(t.events());
	const agent = evs.filter((e) => e.event === "agent").map((e) => e.data.type);
	assert.deepEqual(agent, ["system", "result"], JSON.stringify(evs));
	await t.wait({ timeoutMs: 30_000 });
	assert.equal(t.state, "succeeded", JSON.stringify(t.data));
	assert.match(t.data.checkpoint ?? "", /^[0-9a-f]{40}$/);
	assert.ok(t.data.changed_files.includes("src/App.jsx"), JSON.stringify(t.data.changed_files));
	assert.equal(await s.files.readText("src/App.jsx"), "changed by the agent\n");
	await t.revert();
	assert.equal(t.id, t.data.id);
	assert.equal(await s.files.readText("src/App.jsx"), "original\n");
	assert.equal(await s.files.readText("README.md"), "readme\n");
	await assert.rejects(s.files.read("added.txt"), NotFoundError);
});

dtest("a task on a stopped sandbox wakes it", async () => {
	const s = await sandbox();
	await s.stop();
	const t = await client().sandboxes.get(s.id).then((x) => x.tasks.run({ agent: "command", cmd: ["echo", "awake"] }));
	const evs = await collect(t.events());
	assert.ok(evs.some((e) => e.event === "output" && e.data.text === "awake\n"));
	assert.equal((await s.refresh()).state, "running");
});
