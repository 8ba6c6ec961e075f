// The public API, same origin, authenticated with the X-API-Key header. Nothing else is used.

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message || (body && body.error) || `HTTP ${status}`);
    this.status = status; // 0 when the server could not be reached
    this.body = body || {};
  }
}

export class Api {
  constructor(key = null) {
    this.key = key;
    this.onUnauthorized = null; // called on a 401/403 from an authenticated call
  }

  async request(method, path, { json, form, auth = true } = {}) {
    const headers = {};
    if (auth && this.key) headers["X-API-Key"] = this.key;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, {}, "Could not reach the server. Check your connection and try again.");
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { error: text.slice(0, 300) };
      }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (auth && (response.status === 401 || response.status === 403) && this.onUnauthorized) {
        this.onUnauthorized(error);
      }
      throw error;
    }
    return data;
  }

  me() { return this.request("GET", "/v2/me"); }
  models() { return this.request("GET", "/v2/models", { auth: false }); }
  generate(body) { return this.request("POST", "/v2/videos/generate", { json: body }); }
  job(id) { return this.request("GET", `/v2/jobs/${encodeURIComponent(id)}`); }
  cancel(id) { return this.request("POST", `/v2/jobs/${encodeURIComponent(id)}/cancel`); }
  remove(id) { return this.request("DELETE", `/v2/jobs/${encodeURIComponent(id)}`); }

  jobs({ cursor = null, limit = 10 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (cursor) q.set("cursor", cursor);
    return this.request("GET", `/v2/jobs?${q}`);
  }

  upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return this.request("POST", "/v2/uploads", { form });
  }
}
