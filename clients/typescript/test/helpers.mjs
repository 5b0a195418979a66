// Shared by the tests: the daemon they run against (from the environment
// tests/blackbox/test_sdk_typescript.py sets), a client, sandboxes that are
// deleted after each file, and a preview request with its own Host header
// (*.preview.localhost does not resolve everywhere, and fetch cannot set Host).
import http from "node:http";
import { after, test } from "node:test";
import { Sandboxd } from "../dist/index.js";

export const URL_ = process.env.SANDBOXD_URL;
export const KEY = process.env.SANDBOXD_API_KEY;
export const OTHER_KEY = process.env.SANDBOXD_API_KEY_OTHER;
export const ADMIN_KEY = process.env.SANDBOXD_ADMIN_KEY;
export const BASE_TEMPLATE = process.env.SANDBOXD_BASE_TEMPLATE || "";
const PREVIEW_ADDR = process.env.SANDBOXD_PREVIEW_ADDR || "";

const NO_DAEMON = URL_ && KEY ? false
	: "SANDBOXD_URL and SANDBOXD_API_KEY are not set: run tests/blackbox/test_sdk_typescript.py (or its --serve)";

/** A test that needs the daemon: skipped, saying why, without one. */
export function dtest(name, opts, fn) {
	if (typeof opts === "function") {
		fn = opts;
		opts = {};
	}
	return test(name, { timeout: 60_000, ...opts, skip: opts.skip || NO_DAEMON }, fn);
}

export function client(extra = {}) {
	return new Sandboxd({ url: URL_, apiKey: KEY, ...extra });
}

// A label on every sandbox a test makes, so that they can be told apart.
export const RUN = "sdk-" + Math.random().toString(36).slice(2, 10);
const made = [];

export async function sandbox(opts = {}) {
	const s = await client().sandboxes.create({ labels: { suite: RUN }, ...opts });
	made.push(s);
	return s;
}

after(async () => {
	await Promise.all(made.map((s) => s.delete({ timeoutMs: 60_000 }).catch(() => {})));
});

/** GET a preview URL through the daemon's listener; {status, headers, body}. */
export function previewGet(url, headers = {}) {
	const u = new URL(url);
	const [host, port] = PREVIEW_ADDR.split(":");
	return new Promise((resolve, reject) => {
		const req = http.request({
			host, port: Number(port), method: "GET", path: u.pathname + u.search,
			headers: { Host: u.host, Accept: "text/html", ...headers },
			timeout: 30_000,
		}, (res) => {
			const chunks = [];
			res.on("data", (c) => chunks.push(c));
			res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
		});
		req.on("timeout", () => req.destroy(new Error("preview request timed out")));
		req.on("error", reject);
		req.end();
	});
}

/** Polls fn until it answers truthy, at most `ms`. */
export async function until(fn, ms = 15_000, what = "condition") {
	const end = Date.now() + ms;
	let last;
	while (Date.now() < end) {
		last = await fn();
		if (last)
			return last;
		await new Promise((r) => setTimeout(r, 100));
	}
	throw new Error(`${what}: not true within ${ms} ms (last: ${JSON.stringify(last)})`);
}

/** Collects an async iterator into an array. */
export async function collect(it) {
	const out = [];
	for await (const x of it)
		out.push(x);
	return out;
}
