// The Modelport console: sign-in, then the views the hash names (#view=models, #model=NAME, #view=jobs).
// A key may come in the fragment (#key=mp_...&model=NAME): a fragment never reaches a server or a log;
// it is moved into sessionStorage and taken out of the address bar at once.

import { ApiError, forgetKey, getKey, json, setKey } from "./api.js";
import { clear, errorBox, h, say } from "./dom.js";
import { showJobs } from "./jobs.js";
import { showModel, showModels } from "./models.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOut = document.getElementById("sign-out");
let account = null;

function params() {
  return new URLSearchParams(location.hash.slice(1));
}

// #key=... -> sessionStorage; the rest of the fragment stays (e.g. model=NAME).
function takeKeyFromFragment() {
  const p = params();
  const key = p.get("key");
  if (key === null) return;
  p.delete("key");
  if (key) setKey(key.trim());
  account = null;
  const rest = p.toString();
  history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : ""}`);
}

async function signedIn() {
  if (account) return account;
  if (!getKey()) return null;
  try {
    account = await json("/v1/accounts/me");
  } catch (error) {
    forgetKey();
    throw error;
  }
  return account;
}

function showSignIn(problem) {
  nav.hidden = true;
  signOut.hidden = true;
  who.textContent = "";
  document.title = "Sign in · Modelport console";
  const input = h("input", {
    id: "api-key", name: "api-key", type: "password", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "mp_…", "aria-describedby": "key-help",
  });
  const form = h("form", { class: "card sign-in", "aria-labelledby": "sign-in-title", novalidate: true },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
    h("p", { id: "key-help" }, "Paste an API key (Authorization: Bearer mp_…). It is kept in this tab only (sessionStorage) and sent to this API alone."),
    problem ? errorBox(problem, problem.status === 401 ? "That API key was not accepted" : "Could not sign in") : null,
    h("label", { for: "api-key" }, "API key"),
    input,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      input.focus();
      say("enter an API key");
      return;
    }
    setKey(key);
    account = null;
    route();
  });
  clear(main).append(form);
  input.focus();
}

function markNav(view) {
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  takeKeyFromFragment();
  let me;
  try {
    me = await signedIn();
  } catch (error) {
    showSignIn(error instanceof ApiError ? error : new ApiError(0, { message: String(error) }));
    return;
  }
  if (!me) {
    showSignIn(null);
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  who.textContent = `${me.name}${me.is_admin ? " (admin)" : ""}`;
  const p = params();
  const model = p.get("model");
  const view = model ? "models" : p.get("view") || "models";
  markNav(view);
  clear(main);
  try {
    if (model) await showModel(main, model);
    else if (view === "jobs") await showJobs(main);
    else await showModels(main);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forgetKey();
      account = null;
      showSignIn(error);
      return;
    }
    main.append(errorBox(error));
  }
  const heading = main.querySelector("h1");
  if (heading && document.activeElement === document.body) heading.focus({ preventScroll: true });
}

signOut.addEventListener("click", () => {
  forgetKey();
  account = null;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
  route();
});
window.addEventListener("hashchange", route);
route();
