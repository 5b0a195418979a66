// Build your own app builder in ~50 lines: a sandbox per user, the user's
// prompt run by a coding agent in it, the agent's events streamed to the
// browser, and the app it builds live in an iframe. docs/app-builder.md
// walks through it. Run: SANDBOXD_URL=... SANDBOXD_API_KEY=... node app-builder.mjs
import http from "node:http";
import { Sandboxd } from "sandboxd";

const sandboxd = new Sandboxd({ url: process.env.SANDBOXD_URL ?? "http://localhost:8080", apiKey: process.env.SANDBOXD_API_KEY });
const agent = process.env.AGENT ?? "claude-code";		// or "opencode"; "command" runs the prompt with sh -c
const sandboxes = new Map();					// user -> Promise<Sandbox> (your database, in real life)

function sandboxFor(user) {
	if (!sandboxes.has(user))
		sandboxes.set(user, sandboxd.sandboxes.create({ template: process.env.TEMPLATE, labels: { user } }));
	return sandboxes.get(user);
}

const page = (previewUrl) => `<!doctype html><meta charset=utf-8><title>App builder</title>
<form id=f><input name=prompt size=70 placeholder="What should I build?" autofocus> <button>Build</button></form>
<pre id=log style="height:25vh;overflow:auto;background:#111;color:#ddd"></pre>
<iframe id=app src="${previewUrl}" style="width:100%;height:60vh;border:1px solid #ccc"></iframe>
<script>
const q = location.search || "?user=demo";
f.onsubmit = async (e) => {
  e.preventDefault();
  const { task } = await (await fetch("/run" + q, { method: "POST", body: f.prompt.value })).json();
  const es = new EventSource("/events" + q + "&task=" + task);
  const show = (s) => { log.textContent += s; log.scrollTop = log.scrollHeight; };
  es.addEventListener("output", (e) => show(JSON.parse(e.data).text));
  es.addEventListener("agent", (e) => show(JSON.stringify(JSON.parse(e.data)).slice(0, 200) + "\\n"));
  es.addEventListener("exit", (e) => { es.close(); show("[" + JSON.parse(e.data).state + "]\\n"); app.src = app.src; });
};
</script>`;

http.createServer(async (req, res) => {
	const url = new URL(req.url, "http://app");
	const user = url.searchParams.get("user") ?? "demo";	// your own login decides this
	try {
		const sandbox = await sandboxFor(user);
		if (req.method === "GET" && url.pathname === "/") {
			const { url: preview } = await sandbox.previewToken();	// works for private sandboxes too
			res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" }).end(page(preview));
		} else if (req.method === "POST" && url.pathname === "/run") {
			let prompt = "";
			for await (const chunk of req)
				prompt += chunk;
			const task = await sandbox.tasks.run(agent === "command" ? { agent, cmd: prompt } : { agent, prompt });
			res.writeHead(202, { "Content-Type": "application/json" }).end(JSON.stringify({ task: task.id }));
		} else if (req.method === "GET" && url.pathname === "/events") {
			const task = await sandbox.tasks.get(url.searchParams.get("task"));
			const gone = new AbortController();
			req.on("close", () => gone.abort());
			res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-store" });
			for await (const ev of task.events({ after: Number(req.headers["last-event-id"] ?? 0), signal: gone.signal }))
				res.write(`id: ${ev.id}\nevent: ${ev.event}\ndata: ${JSON.stringify(ev.data)}\n\n`);
			res.end();
		} else {
			res.writeHead(404).end();
		}
	} catch (e) {
		if (e.code === "aborted")			// the browser left
			return void res.end();
		if (!res.headersSent)
			res.writeHead(e.status >= 400 ? e.status : 500, { "Content-Type": "text/plain" });
		res.end(`${e.code ?? "error"}: ${e.message}\n`);
	}
}).listen(Number(process.env.PORT ?? 3030), process.env.HOST ?? "127.0.0.1", function () {
	console.log(`app builder on http://${this.address().address}:${this.address().port}/?user=demo`);
});
