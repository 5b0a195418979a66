import { BadRequestError } from "./errors.js";

/** A sandbox or task id in a URL path (ids are ULIDs; anything else the server refuses). */
export function seg(id: string): string {
	if (typeof id !== "string" || id === "")
		throw new BadRequestError({ status: 400, code: "bad_request", message: `an id must be a non-empty string, not ${JSON.stringify(id)}` });
	return encodeURIComponent(id);
}

/*
 * A workspace path as the rest of a URL: each component %-encoded on its
 * own (spaces, #, ?, %, unicode as UTF-8), the slashes kept. A "." or ".."
 * component is refused here, with the error the server would give: a URL
 * parser would otherwise fold it away (and "%2e%2e" too) and the request
 * would reach another path than the one asked for.
 */
export function encodeFilePath(path: string): string {
	if (typeof path !== "string")
		throw new BadRequestError({ status: 400, code: "bad_request", message: `a file path must be a string, not ${typeof path}` });
	const parts = path.split("/");
	for (const p of parts) {
		if (p === "." || p === "..") {
			throw new BadRequestError({
				status: 400, code: "bad_request",
				message: `file path ${JSON.stringify(path)} has a "${p}" component; paths are relative to /workspace and may not leave it`,
			});
		}
	}
	try {
		return parts.map(encodeURIComponent).join("/");
	} catch {
		throw new BadRequestError({ status: 400, code: "bad_request", message: `file path ${JSON.stringify(path)} is not valid UTF-16 (a lone surrogate)` });
	}
}
