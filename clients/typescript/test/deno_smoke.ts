// The SDK under Deno (by hand; the suite runs Node): a sandbox, a file with
// an odd name, exec and its stream, a task's events, a typed 404, the
// terminal over Deno's own WebSocket. Against a daemon (see README, Tests):
//   deno run --allow-net --allow-env --allow-read test/deno_smoke.ts
import { Sandboxd, NotFoundError } from "../dist/index.js";
const c = new Sandboxd({ url: Deno.env.get("SANDBOXD_URL")!, apiKey: Deno.env.get("SANDBOXD_API_KEY") });
console.log("healthz", (await c.healthz()).status);
const s = await c.sandboxes.create();
try {
  await s.files.write("déno dir/a #1.txt", "from deno");
  console.log("read", await s.files.readText("déno dir/a #1.txt"));
  console.log("exec", (await s.exec("echo hi")).stdout.trim());
  for await (const ev of s.execStream(["sh", "-c", "echo x; echo y"])) console.log("stream", ev.event);
  const t = await s.tasks.run({ agent: "command", cmd: "echo task-out" });
  for await (const ev of t.events()) console.log("task", ev.id, ev.event);
  try { await s.files.read("nope"); } catch (e) { console.log("404", e instanceof NotFoundError, (e as any).code); }
  const term = await s.terminal();
  let out = ""; const it = term.output();
  while (!out.includes("$ ")) out += new TextDecoder().decode((await it.next()).value!);
  term.write("echo dd=$((2+3))\n");
  while (!out.includes("dd=5")) out += new TextDecoder().decode((await it.next()).value!);
  term.write("exit 4\n");
  console.log("terminal", await term.closed);
} finally { await s.delete(); }
