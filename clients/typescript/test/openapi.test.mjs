// Every operation of docs/openapi.yaml has an SDK method, and that method
// sends the operation's method and path. The SDK is driven against a stub
// fetch (and a stub WebSocket) that records what it is asked, so this needs
// no daemon. A new route in the API fails here until the SDK covers it (add
// it to OPERATIONS); a mapping left over from a removed route fails too.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandboxd } from "../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const SPEC = process.env.SANDBOXD_OPENAPI || join(here, "..", "..", "..", "docs", "openapi.yaml");
const SID = "01jd3k5x8q2w7e9r4t6y1u3i5o";
const TID = "01jd3m00000000000000000000";

/* The operations of the file: {operationId: {method, path}}, read off its
 * layout (paths at two spaces, methods at four, operationId at six). */
function operations(text) {
	const ops = {};
	let path = null;
	let method = null;
	for (const line of text.split("\n")) {
		let m;
		if ((m = /^ {2}(\/\S*):\s*$/.exec(line))) {
			path = m[1];
			method = null;
		} else if (/^\S/.test(line)) {
			path = null;
		} else if (path && (m = /^ {4}(get|put|post|delete|patch|head|options):\s*$/.exec(line))) {
			method = m[1].toUpperCase();
		} else if (path && method && (m = /^ {6}operationId:\s*(\S+)\s*$/.exec(line))) {
			ops[m[1]] = { method, path };
		}
	}
	return ops;
}

/* What the SDK method for each operation is; each runs against the stubs. */
const OPERATIONS = {
	getHealthz: ({ c }) => c.healthz(),
	getMetrics: ({ c }) => c.metrics(),
	createSandbox: ({ c }) => c.sandboxes.create({ template: "default" }),
	listSandboxes: ({ c }) => c.sandboxes.list({ state: "running" }),
	getSandbox: ({ c }) => c.sandboxes.get(SID),
	deleteSandbox: ({ s }) => s.delete(),
	stopSandbox: ({ s }) => s.stop(),
	startSandbox: ({ s }) => s.start(),
	listWorkspace: ({ s }) => s.files.list(),
	putFile: ({ s }) => s.files.write("src/my app.jsx", "x"),
	getFile: ({ s }) => s.files.read("src/my app.jsx"),
	deleteFile: ({ s }) => s.files.remove("src/my app.jsx"),
	execCommand: ({ s }) => s.exec(["true"]),
	createTask: ({ s }) => s.tasks.run({ agent: "command", cmd: ["true"] }),
	listTasks: ({ s }) => s.tasks.list(),
	getTask: ({ s }) => s.tasks.get(TID),
	getTaskEvents: async ({ task }) => {
		for await (const _ of task.events())
			;
	},
	cancelTask: ({ task }) => task.cancel(),
	revertTask: ({ task }) => task.revert(),
	openTerminal: ({ s, FakeWS }) => s.terminal({ WebSocket: FakeWS, timeoutMs: 50 }),
	getDevLogs: ({ s }) => s.logs(),
	restartDevServer: ({ s }) => s.restartDev(),
	createPreviewToken: ({ s }) => s.previewToken({ ttlS: 60 }),
};

/* Other SDK methods that reach an operation another way. */
const ALSO = {
	execCommand: async ({ s }) => {
		for await (const _ of s.execStream(["true"]))
			;
	},
	getSandbox: ({ s }) => s.refresh(),
	getTask: ({ task }) => task.refresh(),
	getDevLogs: async ({ s }) => {
		for await (const _ of s.logs({ follow: true }))
			;
	},
	getFile: [({ s }) => s.files.readText("a"), ({ s }) => s.files.list("src")],
	listWorkspace: ({ s }) => s.files.list(""),
	deleteSandbox: ({ c }) => c.sandboxes.delete(SID),
};

function stubs() {
	const seen = [];
	const sandbox = {
		id: SID, tenant: "t", template: "default", state: "running",
		preview_url: `http://${SID}.preview.localhost:8080/`, port: 3000, visibility: "public",
	};
	const task = { id: TID, sandbox_id: SID, agent: "command", state: "succeeded" };
	const fetch = async (url, init) => {
		const u = new URL(url);
		seen.push({ method: init.method, path: u.pathname });
		const json = (o, status = 200) => new Response(JSON.stringify(o), { status, headers: { "content-type": "application/json" } });
		const p = u.pathname;
		if (init.method === "DELETE" || init.method === "PUT")
			return new Response(null, { status: 204 });
		if (p.endsWith("/events"))
			return new Response(null, { status: 204 });
		if (p === "/metrics" || p.endsWith("/logs")) {
			const sse = (init.headers?.Accept ?? "") === "text/event-stream";
			return new Response(sse ? "" : "text\n", { headers: { "content-type": sse ? "text/event-stream" : "text/plain" } });
		}
		if (p.endsWith("/exec") && (init.headers?.Accept ?? "") === "text/event-stream")
			return new Response("event: exit\ndata: {\"exit_code\":0}\n\n", { headers: { "content-type": "text/event-stream" } });
		if (/\/files(\/src)?$/.test(p))
			return json({ entries: [] });
		if (p.includes("/files/"))
			return new Response("bytes", { headers: { "content-type": "application/octet-stream" } });
		if (p === "/v1/sandboxes" && init.method === "GET")
			return json({ sandboxes: [sandbox] });
		if (p.endsWith("/tasks") && init.method === "GET")
			return json({ tasks: [task] });
		if (p.includes("/tasks"))
			return json(task, p.endsWith("/tasks") ? 202 : 200);
		if (p.endsWith("/preview-token"))
			return json({ token: "v1.x", url: sandbox.preview_url, expires_at: "2026-01-01T00:00:00Z" });
		if (p.endsWith("/restart-dev"))
			return json({ dev_server: { state: "restarting", restarts: 0 } });
		if (p === "/healthz")
			return json({ status: "ok" });
		return json(sandbox, init.method === "POST" && p === "/v1/sandboxes" ? 201 : 200);
	};
	class FakeWS {
		constructor(url, protocols) {
			const u = new URL(url);
			seen.push({ method: "GET", path: u.pathname, ws: true, protocols });
			this.binaryType = "blob";
			this.readyState = 0;
			this.protocol = "";
			this.listeners = {};
			setTimeout(() => this.emit("open", {}), 0);
		}
		addEventListener(type, fn) {
			(this.listeners[type] ??= []).push(fn);
		}
		emit(type, ev) {
			for (const fn of this.listeners[type] ?? [])
				fn(ev);
		}
		send() {}
		close() {
			this.emit("close", { code: 1000, reason: "" });
		}
	}
	return { seen, fetch, FakeWS, sandbox, task };
}

function matches(template, path) {
	const re = "^" + template.replace(/[.*+?^$()|[\]\\]/g, "\\$&")
		.replace(/\{path\}/g, ".+").replace(/\{[^}]+\}/g, "[^/]+") + "/?$";
	return new RegExp(re).test(path);
}

async function ctx(st) {
	const c = new Sandboxd({ url: "http://sandboxd.test:8080", apiKey: "k".repeat(32), fetch: st.fetch });
	const s = await c.sandboxes.get(SID);
	const task = await s.tasks.get(TID);
	st.seen.length = 0;
	return { c, s, task, FakeWS: st.FakeWS };
}

const ops = operations(readFileSync(SPEC, "utf8"));

test("docs/openapi.yaml is read: its operations are there", () => {
	assert.ok(Object.keys(ops).length >= 20, `only ${Object.keys(ops).length} operations found in ${SPEC}`);
	assert.deepEqual(ops.getTaskEvents, { method: "GET", path: "/v1/sandboxes/{id}/tasks/{tid}/events" });
});

test("every operation of docs/openapi.yaml is mapped to an SDK method", () => {
	const unmapped = Object.keys(ops).filter((id) => !(id in OPERATIONS));
	assert.deepEqual(unmapped, [], `operations without an SDK method: ${unmapped.join(", ")} (add them to the SDK and to OPERATIONS here)`);
	const stale = Object.keys(OPERATIONS).filter((id) => !(id in ops));
	assert.deepEqual(stale, [], `mapped operations the file no longer has: ${stale.join(", ")}`);
});

for (const [id, op] of Object.entries(ops)) {
	test(`${id}: ${op.method} ${op.path} is what the SDK sends`, async () => {
		const fns = [OPERATIONS[id], ALSO[id]].flat().filter(Boolean);
		assert.ok(fns.length > 0, `no SDK method for ${id}`);
		for (const fn of fns) {
			const st = stubs();
			const cx = await ctx(st);
			await fn(cx);
			const hit = st.seen.find((r) => r.method === op.method && matches(op.path, r.path));
			assert.ok(hit, `${id}: the SDK sent ${JSON.stringify(st.seen)}, not ${op.method} ${op.path}`);
		}
	});
}

test("the terminal offers the key as a subprotocol, never in the URL", async () => {
	const st = stubs();
	const cx = await ctx(st);
	const term = await cx.s.terminal({ WebSocket: st.FakeWS, cols: 90, rows: 20 });
	const r = st.seen.find((x) => x.ws);
	assert.deepEqual(r.protocols, ["sandboxd.terminal", "bearer." + "k".repeat(32)]);
	assert.equal(term.ws.binaryType, "arraybuffer");
	term.close();
	assert.deepEqual(await term.closed, { code: 1000, reason: "", exitCode: null });
});
