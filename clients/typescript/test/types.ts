// Compiled, not run (npm run typecheck): the declarations in dist/ are
// usable by a strict TypeScript project, and the overloads give the types
// a user would expect.
import {
	NotFoundError, Sandboxd, SandboxdError, type ExecEvent, type ExecResult, type FileEntry, type PreviewToken,
	type Sandbox, type Task, type TaskEvent,
} from "../dist/index.js";

async function usage(): Promise<void> {
	const c = new Sandboxd({ url: "http://localhost:8080", apiKey: "k", timeoutMs: 5000 });
	const s: Sandbox = await c.sandboxes.create({ template: "default", memoryMb: 512, visibility: "private", signal: AbortSignal.timeout(1000) });
	const text: string = await s.logs();
	for await (const line of s.logs({ follow: true })) {
		const l: string = line;
		void l;
	}
	const bytes: Uint8Array = await s.files.read("a");
	const entries: FileEntry[] = await s.files.list();
	const r: ExecResult = await s.exec(["true"], { timeoutS: 5 });
	for await (const ev of s.execStream("ls")) {
		const e: ExecEvent = ev;
		if (e.event === "exit")
			void (e.data.exit_code + 1);
	}
	const t: Task = await s.tasks.run({ agent: "claude-code", prompt: "hi", model: "m" });
	await s.tasks.run({ agent: "command", cmd: ["true"] });
	for await (const ev of t.events({ after: 3 })) {
		const e: TaskEvent = ev;
		if (e.event === "output")
			void e.data.text.length;
	}
	const tok: PreviewToken = await s.previewToken({ ttlS: 60 });
	try {
		await c.sandboxes.get("x");
	} catch (e) {
		if (e instanceof NotFoundError || (e instanceof SandboxdError && e.code === "not_found"))
			void e.status;
	}
	void [text, bytes, entries, r, tok];
}
void usage;
