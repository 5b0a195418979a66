/*
 * sandboxd: a client for the sandboxd API (docs/api.md). No dependencies:
 * the platform's fetch, web streams, AbortSignal and (for terminals)
 * WebSocket, so it runs on Node 20+, Deno, Bun, edge runtimes and browsers.
 */

export { Sandboxd, Sandboxes } from "./client.js";
export type { CreateSandboxOptions, ListSandboxesOptions, SandboxdOptions } from "./client.js";
export { Files, Sandbox, Tasks } from "./sandbox.js";
export type {
	AgentTaskOptions, CommandTaskOptions, ExecOptions, ExecStreamOptions, LogsOptions, PreviewTokenOptions,
	RunTaskOptions, TerminalOptions,
} from "./sandbox.js";
export { Task } from "./task.js";
export type { EventsOptions, WaitOptions } from "./task.js";
export { Terminal } from "./terminal.js";
export type { TerminalClose, WebSocketConstructor, WebSocketLike } from "./terminal.js";
export type { CallOptions, FetchLike } from "./http.js";
export { parseSse } from "./sse.js";
export type { SseMessage } from "./sse.js";
export {
	AbortError, BadRequestError, ConflictError, InternalError, NetworkError, NotFoundError, PayloadTooLargeError,
	QuotaExceededError, SandboxdError, TimeoutError, UnauthorizedError, UnavailableError,
} from "./errors.js";
export type { ApiErrorCode, ClientErrorCode, ErrorCode } from "./errors.js";
export type {
	DevServer, ExecEvent, ExecExitData, ExecResult, FileEntry, Health, OutputData, PreviewToken, SandboxInfo, SandboxState,
	StatusData, TaskAgent, TaskEvent, TaskExitData, TaskInfo, TaskState, Visibility,
} from "./types.js";
