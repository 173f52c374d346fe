// The console's only way to data: the Modelport API, with the signed-in key in the Authorization header.
// The page decides nothing about access: whatever the API answers for this key is what it shows.

const KEY = "modelport.key";

// The API's root: the console is served at <root>/console/, so this holds under any stage or base path.
const ROOT = new URL("../", import.meta.url);

export class ApiError extends Error {
  constructor(status, doc) {
    super(doc?.message || `the API answered ${status}`);
    this.status = status;
    this.code = doc?.code || null;
    this.hint = doc?.hint || null;
    this.errors = Array.isArray(doc?.errors) ? doc.errors : [];
    this.doc = doc;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

export function url(path) {
  return new URL(path.replace(/^\//, ""), ROOT);
}

// One call: resolves to the Response for a 2xx (and a 202), throws ApiError for anything else.
// `redirect: "manual"`: a 303 to a stored answer (another origin) is handed back unfollowed.
export async function call(path, { method = "GET", body, contentType, accept = "application/json", headers = {}, redirect = "follow" } = {}) {
  const sent = { Accept: accept, ...headers };
  const token = getKey();
  if (token) sent.Authorization = `Bearer ${token}`;
  if (contentType) sent["Content-Type"] = contentType;
  let response;
  try {
    response = await fetch(url(path), {
      method, body, headers: sent, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer", redirect,
    });
  } catch (error) {
    throw new ApiError(0, { code: "NetworkError", message: `the API did not answer: ${error.message}`, hint: "is the API running?" });
  }
  if (response.type === "opaqueredirect") return response;
  if (!response.ok) throw new ApiError(response.status, await errorDoc(response));
  return response;
}

export async function json(path, options) {
  const response = await call(path, options);
  return response.status === 204 ? null : response.json();
}

// The error document of a failed answer: ours ({code, message, hint, errors}), the Open Inference
// Protocol's ({error}), API Gateway's ({message}), or whatever text came.
async function errorDoc(response) {
  const text = await response.text().catch(() => "");
  try {
    const doc = JSON.parse(text);
    if (doc && typeof doc === "object") return doc.message ? doc : { ...doc, message: doc.error || `the API answered ${response.status}` };
  } catch {
    // not JSON
  }
  return { message: text.slice(0, 300) || `the API answered ${response.status} ${response.statusText}` };
}
