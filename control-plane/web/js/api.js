// The API client. Authentication is the HttpOnly session cookie, which the
// browser sends by itself; the only secret this module holds is the CSRF
// token, in a variable (never in storage), added to every non-GET request.

let csrfToken = null;
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, code, message, field = null, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}

/** Called when any request answers 401 (except while signing in). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

function qs(params) {
  if (!params) return '';
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    sp.set(k, String(v));
  }
  const s = sp.toString();
  return s ? `?${s}` : '';
}

export function enc(id) {
  return encodeURIComponent(String(id));
}

/**
 * request('GET', '/v1/admin/users', {query: {page: 2}})
 * request('POST', '/v1/admin/users', {body: {...}})
 * Resolves to the parsed JSON (or null for 204); rejects with ApiError.
 */
export async function request(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal: opts.signal };
  if (method !== 'GET' && method !== 'HEAD') {
    if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
  }
  let res;
  try {
    res = await fetch(path + qs(opts.query), init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  if (res.status === 204) return null;
  let data = null;
  const type = res.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (res.ok) return data;
  const e = (data && data.error) || {};
  const retry = res.headers.get('Retry-After');
  const error = new ApiError(
    res.status,
    e.code || `http_${res.status}`,
    e.message || `The server answered ${res.status} ${res.statusText || ''}`.trim(),
    e.field || null,
    retry ? Number(retry) : null,
  );
  if (res.status === 401 && !opts.allow401) onUnauthorized(error);
  return Promise.reject(error);
}

export const get = (path, query, opts = {}) => request('GET', path, { ...opts, query });
export const post = (path, body, opts = {}) => request('POST', path, { ...opts, body });
export const put = (path, body, opts = {}) => request('PUT', path, { ...opts, body });
export const patch = (path, body, opts = {}) => request('PATCH', path, { ...opts, body });
export const del = (path, opts = {}) => request('DELETE', path, opts);

// ---- Session ----

export async function currentSession() {
  try {
    return await request('GET', '/v1/auth/session', { allow401: true });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export function signIn(username, password, totpCode) {
  const body = totpCode ? { username, password, totp_code: totpCode } : { username, password };
  return request('POST', '/v1/auth/session', { body, allow401: true });
}

export function signOut() {
  return request('DELETE', '/v1/auth/session', { allow401: true });
}

// ---- Task progress ----

const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
export function taskFinished(task) {
  return !!task && FINAL.has(task.status);
}

/**
 * Follows a task until it finishes: the SSE stream first, polling when the
 * stream cannot be used. onTask(task) is called with each state. Returns a
 * function that stops following.
 */
export function watchTask(scope, taskId, onTask) {
  const base = `/v1/${scope}/tasks/${enc(taskId)}`;
  let stopped = false;
  let source = null;
  let timer = null;
  let last = null;

  const deliver = (task) => {
    if (stopped || !task) return;
    last = task;
    onTask(task);
    if (taskFinished(task)) stop();
  };

  const poll = async () => {
    if (stopped) return;
    try {
      deliver(await get(base));
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 401 || err.status === 403)) {
        stop();
        return;
      }
    }
    if (!stopped) timer = setTimeout(poll, 2000);
  };

  let watchdog = null;
  const stop = () => {
    stopped = true;
    if (source) source.close();
    source = null;
    clearTimeout(timer);
    clearInterval(watchdog);
  };

  if (typeof EventSource === 'function') {
    source = new EventSource(`${base}/events`, { withCredentials: true });
    source.addEventListener('task', (ev) => {
      try {
        deliver(JSON.parse(ev.data));
      } catch {
        /* ignore a malformed event */
      }
    });
    source.addEventListener('error', () => {
      // The stream ended or could not open: poll instead (it also reports
      // the final state if the stream closed right after it).
      if (stopped) return;
      if (source) source.close();
      source = null;
      if (!taskFinished(last)) {
        clearTimeout(timer);
        timer = setTimeout(poll, 500);
      }
    });
    // A safety net: a change the stream does not report (seen with a
    // queued task cancelled) still shows within a few seconds.
    watchdog = setInterval(async () => {
      if (stopped || !source) return;
      try {
        const t = await get(base);
        if (!last || t.status !== last.status || t.progress !== last.progress || t.stage !== last.stage) deliver(t);
      } catch {
        /* the stream or the next check will tell */
      }
    }, 8000);
  } else {
    poll();
  }
  return stop;
}
