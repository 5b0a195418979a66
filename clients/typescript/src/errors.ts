/*
 * Every failure the SDK reports is a SandboxdError. Answers of the API carry
 * its `code` and HTTP `status`; failures that never got an answer (a
 * timeout, an abort, a refused connection) have status 0 and a code of
 * their own, so one `catch` and a look at `code` tell them all apart.
 */

/** The API's error codes (docs/api.md "Errors"). */
export type ApiErrorCode =
	| "bad_request"
	| "unauthorized"
	| "not_found"
	| "method_not_allowed"
	| "conflict"
	| "payload_too_large"
	| "quota_exceeded"
	| "internal"
	| "bad_gateway"
	| "unavailable"
	| "upgrade_required"
	| "http_version_not_supported"
	| "not_implemented";

/** Codes of failures that got no answer from the API. */
export type ClientErrorCode = "timeout" | "aborted" | "network_error" | "protocol_error";

export type ErrorCode = ApiErrorCode | ClientErrorCode;

export interface SandboxdErrorOptions {
	status: number;
	code: ErrorCode | string;
	message: string;
	cause?: unknown;
	/** What was asked, e.g. "GET /v1/sandboxes/01jd…". */
	request?: string;
}

export class SandboxdError extends Error {
	/** The HTTP status; 0 when no answer came (timeout, abort, network). */
	readonly status: number;
	/** The API's `error.code`, or timeout | aborted | network_error | protocol_error. */
	readonly code: ErrorCode | string;
	/** The method and path of the request that failed, when there was one. */
	readonly request: string | undefined;

	constructor(opts: SandboxdErrorOptions) {
		super(opts.message, opts.cause === undefined ? undefined : { cause: opts.cause });
		this.name = new.target.name;
		this.status = opts.status;
		this.code = opts.code;
		this.request = opts.request;
	}
}

export class BadRequestError extends SandboxdError {}
export class UnauthorizedError extends SandboxdError {}
export class NotFoundError extends SandboxdError {}
export class ConflictError extends SandboxdError {}
export class PayloadTooLargeError extends SandboxdError {}
export class QuotaExceededError extends SandboxdError {}
export class InternalError extends SandboxdError {}
export class UnavailableError extends SandboxdError {}
/** The request took longer than its `timeoutMs`. */
export class TimeoutError extends SandboxdError {}
/** The caller's AbortSignal fired. */
export class AbortError extends SandboxdError {}
/** The daemon could not be reached, or the connection broke. */
export class NetworkError extends SandboxdError {}

const BY_CODE: Record<string, new (o: SandboxdErrorOptions) => SandboxdError> = {
	bad_request: BadRequestError,
	unauthorized: UnauthorizedError,
	not_found: NotFoundError,
	conflict: ConflictError,
	payload_too_large: PayloadTooLargeError,
	quota_exceeded: QuotaExceededError,
	internal: InternalError,
	unavailable: UnavailableError,
	timeout: TimeoutError,
	aborted: AbortError,
	network_error: NetworkError,
};

/* The code a status stands for when the body carries none (a proxy's page). */
const CODE_OF_STATUS: Record<number, ApiErrorCode> = {
	400: "bad_request",
	401: "unauthorized",
	404: "not_found",
	405: "method_not_allowed",
	409: "conflict",
	413: "payload_too_large",
	426: "upgrade_required",
	429: "quota_exceeded",
	500: "internal",
	501: "not_implemented",
	502: "bad_gateway",
	503: "unavailable",
	504: "unavailable",
	505: "http_version_not_supported",
};

/** Makes the error of the class that fits `code`. */
export function makeError(opts: SandboxdErrorOptions): SandboxdError {
	const cls = BY_CODE[opts.code] ?? SandboxdError;
	return new cls(opts);
}

/** The error for a non-2xx answer, from its status and body text. */
export function errorFromResponse(status: number, statusText: string, body: string, request: string): SandboxdError {
	let code: string | undefined;
	let message: string | undefined;
	try {
		const j = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
		if (j && typeof j.error === "object" && j.error) {
			if (typeof j.error.code === "string")
				code = j.error.code;
			if (typeof j.error.message === "string")
				message = j.error.message;
		}
	} catch {
		/* not the API's body: a proxy in between, say */
	}
	code ??= CODE_OF_STATUS[status] ?? (status >= 500 ? "internal" : "bad_request");
	if (message === undefined) {
		const text = body.trim().slice(0, 200);
		message = `${status} ${statusText}${text ? `: ${text}` : ""}`;
	}
	return makeError({ status, code, message, request });
}
