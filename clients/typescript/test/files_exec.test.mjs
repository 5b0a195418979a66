// Files (bytes and text, listings, removal, paths that need encoding) and
// exec (buffered and streamed).
import assert from "node:assert/strict";
import { BadRequestError, ConflictError, NotFoundError } from "../dist/index.js";
import { collect, dtest, sandbox } from "./helpers.mjs";

let shared;
async function sb() {
	shared ??= await sandbox();
	return shared;
}

dtest("write and read bytes, every byte value, exactly", async () => {
	const s = await sb();
	const bytes = new Uint8Array(256 * 4);
	for (let i = 0; i < bytes.length; i++)
		bytes[i] = i % 256;
	assert.deepEqual(await s.files.write("bin/all-bytes.dat", bytes), { created: true });
	const back = await s.files.read("bin/all-bytes.dat");
	assert.ok(back instanceof Uint8Array);
	assert.deepEqual(back, bytes);
	// Replacing answers created: false; an ArrayBuffer and a Blob are bodies too.
	assert.deepEqual(await s.files.write("bin/all-bytes.dat", bytes.buffer.slice(0, 10)), { created: false });
	assert.equal((await s.files.read("bin/all-bytes.dat")).length, 10);
	await s.files.write("bin/blob.txt", new Blob(["from a blob"]));
	assert.equal(await s.files.readText("bin/blob.txt"), "from a blob");
});

dtest("write and read text (UTF-8), and the command sees the same file", async () => {
	const s = await sb();
	const text = "héllo wörld ✓ 日本語\nline two\n";
	await s.files.write("src/App.jsx", text);
	assert.equal(await s.files.readText("src/App.jsx"), text);
	const r = await s.exec(["wc", "-c", "/workspace/src/App.jsx"]);
	assert.equal(parseInt(r.stdout, 10), new TextEncoder().encode(text).length);
});

dtest("paths with spaces, unicode, #, ?, % and + are encoded per segment", async () => {
	const s = await sb();
	const names = ["my notes.txt", "dir with space/ünïcødé 文件.md", "hash#tag.txt", "what?.txt", "100% + more.txt", "a&b=c;d.txt"];
	for (const [i, n] of names.entries())
		await s.files.write("odd/" + n, `content ${i}`);
	for (const [i, n] of names.entries())
		assert.equal(await s.files.readText("odd/" + n), `content ${i}`, n);
	// The names are the names on disk, not their encodings.
	const r = await s.exec(["ls", "-1", "/workspace/odd"]);
	for (const n of ["my notes.txt", "hash#tag.txt", "what?.txt", "100% + more.txt", "a&b=c;d.txt", "dir with space"])
		assert.ok(r.stdout.split("\n").includes(n), `${n} in ${JSON.stringify(r.stdout)}`);
	const sub = await s.files.list("odd/dir with space");
	assert.deepEqual(sub.map((e) => e.name), ["ünïcødé 文件.md"]);
});

dtest("list: /workspace and a directory, entries with name/type/size/mtime", async () => {
	const s = await sb();
	await s.files.write("listing/a.txt", "aaa");
	await s.files.write("listing/sub/b.txt", "b");
	const l = await s.files.list("listing");
	assert.deepEqual(l.map((e) => [e.name, e.type]), [["a.txt", "file"], ["sub", "dir"]]);
	assert.equal(l[0].size, 3);
	assert.match(l[0].mtime, /^\d{4}-\d\d-\d\dT/);
	const top = await s.files.list();
	assert.ok(top.some((e) => e.name === "listing" && e.type === "dir"));
	assert.deepEqual((await s.files.list("listing/")).map((e) => e.name), ["a.txt", "sub"]);
	// read() of a directory and list() of a file say what to use instead.
	await assert.rejects(s.files.read("listing"), ConflictError);
	await assert.rejects(s.files.list("listing/a.txt"), ConflictError);
});

dtest("remove a file and a directory tree; then 404", async () => {
	const s = await sb();
	await s.files.write("gone/x/y.txt", "y");
	await s.files.write("gone/z.txt", "z");
	await s.files.remove("gone/z.txt");
	await assert.rejects(s.files.read("gone/z.txt"), NotFoundError);
	await s.files.remove("gone");
	const e = await s.files.list("gone").catch((x) => x);
	assert.ok(e instanceof NotFoundError, String(e));
	assert.equal(e.status, 404);
});

dtest("refused paths: '..' is stopped in the SDK, the rest by the server; both 400", async () => {
	const s = await sb();
	for (const p of ["../etc/passwd", "a/../../b", "./x", "a/./b"]) {
		const e = await s.files.read(p).catch((x) => x);
		assert.ok(e instanceof BadRequestError, `${p}: ${e}`);
		assert.equal(e.status, 400);
	}
	for (const p of ["/etc/passwd", "a//b", "bad\u0001name"]) {
		const e = await s.files.write(p, "x").catch((x) => x);
		assert.ok(e instanceof BadRequestError, `${p}: ${e}`);
		assert.equal(e.code, "bad_request");
	}
});

dtest("exec buffered: stdout, stderr, exit code, cwd, env, a shell string", async () => {
	const s = await sb();
	const r = await s.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]);
	assert.deepEqual(r, { exit_code: 3, stdout: "out\n", stderr: "err\n", timed_out: false, truncated: false });
	const r2 = await s.exec("pwd; echo $FOO", { cwd: "/tmp", env: { FOO: "bar" } });
	assert.equal(r2.stdout, "/tmp\nbar\n");
	const r3 = await s.exec(["sleep", "5"], { timeoutS: 1 });
	assert.equal(r3.timed_out, true);
	const r4 = await s.exec(["no-such-command"]);
	assert.equal(r4.exit_code, 127);
	await assert.rejects(s.exec([]), BadRequestError);
	await assert.rejects(s.exec(["true"], { cwd: "relative" }), BadRequestError);
});

dtest("exec streamed: output events as the command runs, then exit", async () => {
	const s = await sb();
	const t0 = Date.now();
	const seen = [];
	for await (const ev of s.execStream(["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo bad >&2; exit 4"]))
		seen.push({ ...ev, at: Date.now() - t0 });
	const out = seen.filter((e) => e.event === "output");
	assert.deepEqual(out.map((e) => [e.data.stream, e.data.text]),
		[["stdout", "line 1\n"], ["stdout", "line 2\n"], ["stdout", "line 3\n"], ["stderr", "bad\n"]]);
	assert.ok(out[0].at < out[2].at - 300, "the first line came before the command ended: " + JSON.stringify(seen));
	const last = seen.at(-1);
	assert.equal(last.event, "exit");
	assert.equal(last.data.exit_code, 4);
	assert.equal(last.data.timed_out, false);
	// A bad body is the usual typed error, on the first next().
	await assert.rejects(collect(s.execStream([])), BadRequestError);
});

dtest("exec streamed: leaving the loop early ends the command", async () => {
	const s = await sb();
	for await (const ev of s.execStream(["sh", "-c", "echo started; sleep 30; touch /workspace/should-not-exist"])) {
		assert.equal(ev.data.text, "started\n");
		break;
	}
	await new Promise((r) => setTimeout(r, 500));
	const r = await s.exec(["sh", "-c", "ps | grep -c '[s]leep 30'; ls /workspace/should-not-exist 2>&1"]);
	assert.equal(r.stdout.split("\n")[0], "0", "the command's process group is gone: " + r.stdout);
});
