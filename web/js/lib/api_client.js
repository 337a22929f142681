// The Memory panel's one API client: it owns the base URL and the live event channel.
// Inside ComfyUI it goes through the frontend's `api` (fetchApi prefixes /api; events arrive on ComfyUI's /ws);
// standalone it uses fetch and a websocket of its own. A library module: importing it does nothing (ComfyUI
// imports every .js under web/ as an extension).

export const EVENTS = Object.freeze([
  "memhooks.status",
  "memhooks.optimization",
  "memhooks.hook",
  "memhooks.prompt",
  "memhooks.manual",
  "memhooks.settings",
]);

/** A request the server refused or could not answer; `field` names the bad field when the server said which. */
export class ApiError extends Error {
  constructor(status, message, field = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.field = field;
  }
}

export class MemhooksClient {
  /**
   * @param {(path: string, init: RequestInit) => Promise<Response>} fetchPath fetches a path such as
   *   "/memhooks/status" from wherever the routes are served.
   */
  constructor(fetchPath) {
    this._fetchPath = fetchPath;
    this._listeners = new Map();
    this.connected = null;
  }

  /** Calls `handler(data)` for each event of that type; returns a function that unsubscribes. */
  on(type, handler) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(handler);
    return () => this._listeners.get(type)?.delete(handler);
  }

  dispatch(type, data) {
    for (const handler of this._listeners.get(type) ?? []) {
      try {
        handler(data);
      } catch (error) {
        console.error(`memhooks: a ${type} handler failed`, error);
      }
    }
  }

  setConnected(connected) {
    if (this.connected === connected) return;
    this.connected = connected;
    this.dispatch("memhooks.connection", { connected });
  }

  status() {
    return this._json("GET", "/memhooks/status");
  }

  history() {
    return this._json("GET", "/memhooks/history");
  }

  processes() {
    return this._json("GET", "/memhooks/processes");
  }

  settings() {
    return this._json("GET", "/memhooks/settings");
  }

  /** The per-node profile of the latest prompt, or of `promptId`. */
  profile(promptId = null) {
    const query = promptId === null ? "" : `?prompt_id=${encodeURIComponent(promptId)}`;
    return this._json("GET", `/memhooks/profile${query}`);
  }

  /** Each node class predictive cleanup learned, with its last predicted and actual peaks. */
  predictions() {
    return this._json("GET", "/memhooks/predictions");
  }

  saveSettings(settings) {
    return this._json("PUT", "/memhooks/settings", settings);
  }

  /** Resolves to the answer: state "performed", "queued" (HTTP 202), "cooldown" or "not performed". */
  optimize(mode) {
    return this._json("POST", "/memhooks/optimize", { mode }, [200, 202]);
  }

  async _json(method, path, body = undefined, accepted = [200]) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await this._fetchPath(path, init);
    } catch (error) {
      throw new ApiError(0, `the server cannot be reached (${error?.message ?? error})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!accepted.includes(response.status)) {
      throw new ApiError(response.status, data?.error ?? `HTTP ${response.status}`, data?.field ?? null);
    }
    return data;
  }
}

/** The client inside ComfyUI, over the frontend's `api` (from scripts/api.js). */
export function comfyClient(api) {
  const client = new MemhooksClient((path, init) => api.fetchApi(path, init));
  // Listeners must exist before the first frame arrives: the frontend rejects message types nobody listens to.
  for (const type of EVENTS) api.addEventListener(type, (event) => client.dispatch(type, event.detail));
  api.addEventListener("reconnecting", () => client.setConnected(false));
  api.addEventListener("reconnected", () => client.setConnected(true));
  client.setConnected(true);
  return client;
}

/**
 * The client of the standalone server (`python -m comfy_memhooks serve`): fetch, and its /memhooks/ws websocket,
 * reconnecting with a growing pause (at most `maxRetrySeconds`) while the server is away.
 */
export function standaloneClient({ baseUrl = "", WebSocketClass = globalThis.WebSocket, maxRetrySeconds = 10 } = {}) {
  // Beyond loopback, changes need the server's token: the page takes it from its address (#token=...), which is
  // never sent to a server, and sends it as a header.
  const token = new URLSearchParams((globalThis.location?.hash ?? "").slice(1)).get("token");
  const withToken = (init = {}) =>
    token ? { ...init, headers: { ...(init.headers ?? {}), "X-Memhooks-Token": token } } : init;
  const client = new MemhooksClient((path, init) => fetch(baseUrl + path, withToken(init)));
  const base = new URL(baseUrl || "/", globalThis.location.href);
  const socketUrl = new URL("memhooks/ws", base);
  socketUrl.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  let retrySeconds = 0.5;

  const connect = () => {
    const socket = new WebSocketClass(socketUrl.href);
    socket.addEventListener("open", () => {
      retrySeconds = 0.5;
      client.setConnected(true);
    });
    socket.addEventListener("message", (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame && EVENTS.includes(frame.type)) client.dispatch(frame.type, frame.data);
    });
    socket.addEventListener("close", () => {
      client.setConnected(false);
      setTimeout(connect, retrySeconds * 1000);
      retrySeconds = Math.min(retrySeconds * 2, maxRetrySeconds);
    });
  };
  connect();
  return client;
}
