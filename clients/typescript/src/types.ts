/*
 * The API's objects, field for field as the daemon sends them (docs/api.md,
 * docs/openapi.yaml). They keep the API's snake_case names so that the API
 * reference applies to them unchanged; the SDK's own options are camelCase.
 */

export type SandboxState =
	| "creating"
	| "running"
	| "paused"
	| "stopping"
	| "stopped"
	| "starting"
	| "deleting"
	| "error";

export type Visibility = "public" | "private";

export interface DevServer {
	state: "none" | "starting" | "ready" | "crashed" | "restarting";
	restarts?: number;
}

/** The sandbox object (`GET /v1/sandboxes/{id}`). */
export interface SandboxInfo {
	id: string;
	tenant: string;
	template: string;
	state: SandboxState;
	preview_url: string;
	port: number;
	visibility: Visibility;
	memory_mb: number;
	cpus: number;
	idle_timeout_s: number;
	pause_timeout_s: number;
	env: Record<string, string>;
	labels: Record<string, string>;
	created_at: string;
	last_active_at: string;
	error: string | null;
	/** Only while the sandbox runs and once its agentd has told. */
	dev_server?: DevServer;
}

export interface FileEntry {
	name: string;
	type: "file" | "dir" | "symlink" | "other";
	size: number;
	mtime: string;
}

export interface ExecResult {
	exit_code: number;
	stdout: string;
	stderr: string;
	timed_out: boolean;
	truncated: boolean;
}

export type TaskAgent = "command" | "opencode" | "claude-code";
export type TaskState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** The task object (`GET /v1/sandboxes/{id}/tasks/{tid}`). */
export interface TaskInfo {
	id: string;
	sandbox_id: string;
	agent: TaskAgent;
	state: TaskState;
	cmd?: string[];
	prompt?: string;
	model?: string;
	timeout_s: number;
	exit_code: number | null;
	created_at: string;
	started_at: string | null;
	finished_at: string | null;
	timed_out: boolean;
	error: string | null;
	summary: Record<string, unknown> | null;
	changed_files: string[] | null;
	checkpoint: string | null;
}

export interface OutputData {
	stream: "stdout" | "stderr";
	text: string;
}

export interface TaskExitData {
	exit_code: number | null;
	state: TaskState;
	timed_out?: boolean;
	changed_files?: string[] | null;
	summary?: Record<string, unknown> | null;
	error?: string | null;
}

export interface StatusData {
	status: "started" | "cancelling" | "truncated" | string;
	[k: string]: unknown;
}

/**
 * One event of a task's stream. `id` increases by one per event; `agent`
 * events carry the agent CLI's JSON object unchanged.
 */
export type TaskEvent =
	| { id: number; event: "output"; data: OutputData }
	| { id: number; event: "status"; data: StatusData }
	| { id: number; event: "agent"; data: Record<string, unknown> }
	| { id: number; event: "exit"; data: TaskExitData };

export interface ExecExitData {
	exit_code: number;
	signal: number | null;
	timed_out: boolean;
	truncated: boolean;
}

/** One event of a streamed exec: output lines, then the exit. */
export type ExecEvent =
	| { event: "output"; data: OutputData }
	| { event: "exit"; data: ExecExitData };

export interface PreviewToken {
	token: string;
	/** The preview URL carrying the token (a public sandbox's is the plain one). */
	url: string;
	expires_at: string;
}

export interface Health {
	status: "ok";
	version: string;
	store: string;
	docker: string;
	reconciled: boolean;
	sandboxes: number;
	running: number;
	egress: {
		mode: "open" | "public-only" | "none";
		enforced: boolean;
		table: string;
		bridge: string | null;
		error: string | null;
	};
	[k: string]: unknown;
}
