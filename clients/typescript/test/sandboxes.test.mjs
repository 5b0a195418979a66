// Sandboxes: create/get/list/delete, stop/start, and the typed errors,
// timeouts and aborts every call shares.
import assert from "node:assert/strict";
import net from "node:net";
import {
	AbortError, BadRequestError, ConflictError, NetworkError, NotFoundError, Sandbox, Sandboxd, SandboxdError,
	TimeoutError, UnauthorizedError,
} from "../dist/index.js";
import { KEY, OTHER_KEY, RUN, URL_, client, dtest, sandbox } from "./helpers.mjs";

const NOBODY = "0".repeat(26);	// a well-formed id no sandbox has

dtest("healthz answers ok without a key", async () => {
	const h = await new Sandboxd({ url: URL_ }).healthz();
	assert.equal(h.status, "ok");
	assert.equal(h.reconciled, true);
	assert.equal(typeof h.version, "string");
});

dtest("create, get, list (with filters), delete", async () => {
	const c = client();
	const s = await sandbox({ env: { GREETING: "hi" }, labels: { suite: RUN, role: "crud" }, idleTimeoutS: 600 });
	assert.ok(s instanceof Sandbox);
	assert.match(s.id, /^[0-9a-z]{26}$/);
	assert.equal(s.state, "running");
	assert.equal(s.data.env.GREETING, "hi");
	assert.equal(s.data.idle_timeout_s, 600);
	assert.equal(s.data.labels.role, "crud");

	const g = await c.sandboxes.get(s.id);
	assert.equal(g.id, s.id);
	assert.equal(g.data.tenant, s.data.tenant);

	const all = await c.sandboxes.list();
	assert.ok(all.some((x) => x.id === s.id), "list has it");
	const mine = await c.sandboxes.list({ label: { role: "crud" } });
	assert.deepEqual(mine.map((x) => x.id), [s.id]);
	const byString = await c.sandboxes.list({ label: "role:crud", state: "running" });
	assert.deepEqual(byString.map((x) => x.id), [s.id]);
	assert.deepEqual(await c.sandboxes.list({ label: { role: "crud" }, state: "stopped" }), []);
	assert.equal(JSON.parse(JSON.stringify(s)).id, s.id, "a Sandbox serializes as its object");

	await c.sandboxes.delete(s.id);
	await assert.rejects(c.sandboxes.get(s.id), NotFoundError);
	await assert.rejects(s.delete(), (e) => e instanceof NotFoundError && e.status === 404);
});

dtest("stop and start keep the files; refresh follows the state", async () => {
	const s = await sandbox();
	await s.files.write("kept.txt", "survives a stop\n");
	await s.stop();
	assert.equal(s.state, "stopped");
	assert.equal((await s.refresh()).state, "stopped");
	await s.files.write("written-while-stopped.txt", "yes");
	assert.equal(await s.files.readText("kept.txt"), "survives a stop\n");
	await s.start();
	assert.equal(s.state, "running");
	assert.equal(await s.files.readText("written-while-stopped.txt"), "yes");
	const r = await s.exec(["cat", "/workspace/kept.txt"]);
	assert.equal(r.stdout, "survives a stop\n");
});

dtest("404: an unknown id, and another tenant's sandbox, are NotFoundError", async () => {
	const c = client();
	const err = await c.sandboxes.get(NOBODY).catch((e) => e);
	assert.ok(err instanceof NotFoundError, String(err));
	assert.ok(err instanceof SandboxdError);
	assert.equal(err.status, 404);
	assert.equal(err.code, "not_found");
	assert.equal(typeof err.message, "string");
	assert.ok(err.message.length > 0);
	assert.equal(err.request, `GET /v1/sandboxes/${NOBODY}`);

	if (OTHER_KEY) {
		const s = await sandbox();
		const other = new Sandboxd({ url: URL_, apiKey: OTHER_KEY });
		await assert.rejects(other.sandboxes.get(s.id), (e) => e.code === "not_found" && e.status === 404);
	}
});

dtest("401: a wrong key is UnauthorizedError", async () => {
	const c = new Sandboxd({ url: URL_, apiKey: "wrong-" + KEY });
	const err = await c.sandboxes.list().catch((e) => e);
	assert.ok(err instanceof UnauthorizedError, String(err));
	assert.equal(err.status, 401);
	assert.equal(err.code, "unauthorized");
	const none = await new Sandboxd({ url: URL_ }).sandboxes.list().catch((e) => e);
	assert.equal(none.code, "unauthorized");
	// /metrics needs an admin key.
	await assert.rejects(client().metrics(), UnauthorizedError);
});

dtest("400: bad input is BadRequestError with the server's message", async () => {
	const c = client();
	const e1 = await c.sandboxes.create({ memoryMb: 1 }).catch((e) => e);
	assert.ok(e1 instanceof BadRequestError, String(e1));
	assert.equal(e1.status, 400);
	assert.equal(e1.code, "bad_request");
	assert.match(e1.message, /memory_mb/);
	const e2 = await c.sandboxes.create({ template: "no-such-template" }).catch((e) => e);
	assert.equal(e2.code, "bad_request");
	const e3 = await c.sandboxes.get("NOT-AN-ID").catch((e) => e);
	assert.equal(e3.status, 400);
	assert.equal(e3.code, "bad_request");
});

dtest("409: a conflict is ConflictError", async () => {
	const s = await sandbox();
	await s.stop();
	// The dev server runs only while the sandbox runs.
	const e = await s.restartDev().catch((x) => x);
	assert.ok(e instanceof ConflictError, String(e));
	assert.equal(e.status, 409);
	assert.equal(e.code, "conflict");
});

dtest("no daemon there: NetworkError, with the cause", async () => {
	const srv = net.createServer();
	await new Promise((r) => srv.listen(0, "127.0.0.1", r));
	const port = srv.address().port;
	await new Promise((r) => srv.close(r));	// now nothing listens there
	const c = new Sandboxd({ url: `http://127.0.0.1:${port}`, apiKey: KEY });
	const e = await c.sandboxes.list().catch((x) => x);
	assert.ok(e instanceof NetworkError, String(e));
	assert.equal(e.status, 0);
	assert.equal(e.code, "network_error");
	assert.match(e.message, /ECONNREFUSED/);
});

dtest("timeouts: a per-call timeoutMs and the client's, against a server that never answers", async () => {
	// A listener that takes connections and never says a word.
	const sockets = [];
	const srv = net.createServer((so) => sockets.push(so));
	await new Promise((r) => srv.listen(0, "127.0.0.1", r));
	const url = `http://127.0.0.1:${srv.address().port}`;
	try {
		let t0 = Date.now();
		const e = await new Sandboxd({ url, apiKey: KEY }).sandboxes.list({ timeoutMs: 300 }).catch((x) => x);
		assert.ok(e instanceof TimeoutError, String(e));
		assert.equal(e.code, "timeout");
		assert.equal(e.status, 0);
		assert.match(e.message, /timed out after 300 ms/);
		assert.ok(Date.now() - t0 < 5000);
		t0 = Date.now();
		const e2 = await new Sandboxd({ url, apiKey: KEY, timeoutMs: 250 }).healthz().catch((x) => x);
		assert.ok(e2 instanceof TimeoutError, String(e2));
		assert.ok(Date.now() - t0 < 5000);
	} finally {
		sockets.forEach((so) => so.destroy());
		srv.close();
	}
	// Against the daemon: exec of a long command, cut by the client.
	const s = await sandbox();
	const t0 = Date.now();
	const e3 = await s.exec(["sleep", "5"], { timeoutMs: 400 }).catch((x) => x);
	assert.ok(e3 instanceof TimeoutError, String(e3));
	assert.ok(Date.now() - t0 < 4000, "cut before the command ended");
});

dtest("AbortSignal: aborted mid-call, and already aborted (no request sent)", async () => {
	const s = await sandbox();
	const ac = new AbortController();
	setTimeout(() => ac.abort(new Error("user left")), 300);
	const t0 = Date.now();
	const e = await s.exec(["sleep", "5"], { signal: ac.signal }).catch((x) => x);
	assert.ok(e instanceof AbortError, String(e));
	assert.equal(e.code, "aborted");
	assert.match(e.message, /aborted: user left/);
	assert.ok(Date.now() - t0 < 4000);

	let calls = 0;
	const counting = new Sandboxd({ url: URL_, apiKey: KEY, fetch: (u, i) => (calls++, fetch(u, i)) });
	const e2 = await counting.sandboxes.list({ signal: AbortSignal.abort() }).catch((x) => x);
	assert.ok(e2 instanceof AbortError, String(e2));
	assert.ok(calls <= 1);
	// AbortSignal.timeout works as a signal too, and is an abort, not a timeout of ours.
	const e3 = await s.exec(["sleep", "5"], { signal: AbortSignal.timeout(200) }).catch((x) => x);
	assert.ok(e3 instanceof AbortError, String(e3));
});

dtest("the client refuses a bad url", () => {
	assert.throws(() => new Sandboxd({ url: "localhost:8080" }), TypeError);
});
