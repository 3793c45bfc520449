// The REST API, from the page: session cookie auth, CSRF header on unsafe methods, JSON in
// and out, and errors that carry the server's {error, detail} so the page can say them.

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function cookie(name) {
  const prefix = `${name}=`;
  for (const part of document.cookie.split(";")) {
    const item = part.trim();
    if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
  }
  return "";
}

/** fetch() a JSON endpoint; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(url, { method = "GET", body, keepalive = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) headers["X-CSRFToken"] = cookie("csrftoken");
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      keepalive,
    });
  } catch (error) {
    throw new ApiError(0, null, `the server cannot be reached (${error.message})`);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const detail = data && (data.detail || data.error);
    const message = detail
      ? `${detail}`
      : data
        ? JSON.stringify(data)
        : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, data, message);
  }
  return data;
}

/** Every item of a paginated list ({results, next}). */
export async function listAll(url) {
  const items = [];
  let next = url;
  while (next) {
    const page = await api(next);
    if (Array.isArray(page)) return items.concat(page);
    items.push(...page.results);
    next = page.next;
  }
  return items;
}

/** A random UUID (v4); crypto.randomUUID exists only in secure contexts (https, localhost). */
export function uuid4() {
  if (window.crypto.randomUUID) return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  const parts = [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20)];
  return `${parts.join("-")}-${hex.slice(20)}`;
}
