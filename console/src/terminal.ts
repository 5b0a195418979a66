// xterm.js over the terminal WebSocket (docs/terminal.md): the key goes
// as the subprotocol "bearer.<key>" beside "sandboxd.terminal" (a
// browser's WebSocket cannot send Authorization, and the key never goes
// in the URL); keystrokes go out as binary frames, resizes as the text
// frame {"resize":[cols,rows]}, the PTY's bytes come back binary.
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";

export interface TerminalHandle {
  fit(): void;
  close(): void;
}

export function openTerminal(box: HTMLElement, id: string, key: string,
  status: (s: string) => void, closed: () => void): TerminalHandle {
  const term = new Terminal({
    cursorBlink: true, fontSize: 13, scrollback: 5000,
    fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
    theme: { background: "#0d1117", foreground: "#e6edf3", cursor: "#58a6ff", selectionBackground: "#264f78" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  box.replaceChildren();
  term.open(box);
  try { fit.fit(); } catch { /* not laid out yet */ }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/v1/sandboxes/${id}/terminal?cols=${term.cols}&rows=${term.rows}`;
  const ws = new WebSocket(url, ["sandboxd.terminal", "bearer." + key]);
  ws.binaryType = "arraybuffer";
  const enc = new TextEncoder();
  let open = false, ended = false;

  ws.onopen = () => {
    open = true;
    status("Connected: a shell in /workspace.");
    term.focus();
  };
  ws.onmessage = (ev) => {
    if (ev.data instanceof ArrayBuffer) term.write(new Uint8Array(ev.data));
    else term.write(String(ev.data));
  };
  ws.onclose = (ev) => {
    if (ended) return;
    ended = true;
    status(open ? "Closed" + (ev.reason ? ": " + ev.reason : "") + "."
      : "Could not open the terminal (is the sandbox running?).");
    term.options.disableStdin = true;
    closed();
  };
  const data = term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  const resize = term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [cols, rows] }));
  });
  const onWin = () => { try { fit.fit(); } catch { /* hidden */ } };
  const ro = new ResizeObserver(onWin);
  ro.observe(box);

  return {
    fit: onWin,
    close() {
      ended = true;
      ro.disconnect();
      data.dispose();
      resize.dispose();
      if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
      term.dispose();
      box.replaceChildren();
      status("Closed.");
    },
  };
}
