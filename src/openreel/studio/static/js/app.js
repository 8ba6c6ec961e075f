// The Studio: sign in, the form, the current job and the history, wired to the public API.

import { Api, ApiError } from "./api.js";
import { GenerateForm, FieldError } from "./form.js";
import { History } from "./history.js";
import { JobPanel } from "./job.js";
import { $, setText, ACTIVE, describeError } from "./util.js";

const KEY_STORAGE = "openreel.studio.apiKey";

const api = new Api();
const form = new GenerateForm(api);
const panel = new JobPanel(api, {
  onUpdate: (job) => history.upsert(job),
  onFinished: () => {
    refreshBalance();
    history.reload();
  },
  onUseSeed: (seed) => {
    form.seed.value = String(seed);
    form.clearError("seed");
    form.seed.focus();
  },
  canExtend: (job) => {
    const extending = form.models.filter((m) => m.extends);
    const r = job.result;
    if (!extending.length) return "No model on this server extends clips.";
    if (Math.min(r.width, r.height) !== 720) return "Only 720p clips can be extended.";
    if (r.durationSeconds > extending[0].maxExtendSourceSeconds) {
      return `Only clips up to ${extending[0].maxExtendSourceSeconds} s can be extended.`;
    }
    return null;
  },
  onExtend: (job, video) => {
    form.extend(job, video);
    $("prompt").focus();
    $("generate-form").scrollIntoView({ behavior: "smooth", block: "start" });
  },
});
const history = new History(api, {
  onOpen: (job) => {
    panel.track(job);
    history.render();
    $("job-panel").scrollIntoView({ behavior: "smooth", block: "start" });
  },
  onRerun: (job) => {
    form.fill(job.input, job.id);
    $("prompt").focus();
    $("generate-form").scrollIntoView({ behavior: "smooth", block: "start" });
  },
  onDeleted: (id) => {
    if (panel.jobId === id) panel.clear();
  },
  onSettled: () => refreshBalance(), // a job the panel does not follow ended (refunds change it)
  isTracked: (id) => panel.jobId === id,
  model: (id) => form.byId.get(id),
});

let modelsLoaded = null;

function loadModels() {
  modelsLoaded = api
    .models()
    .then(({ models }) => {
      form.setModels(models);
      const engine = models.length ? models[0].engine : null;
      const notice = $("engine-notice");
      if (engine && (engine.notice || !engine.ready)) {
        notice.textContent = engine.notice || `The ${engine.name} engine is not ready yet.`;
        notice.hidden = false;
      }
      return models;
    })
    .catch((err) => {
      setText($("form-error"), `Could not load the model list: ${describeError(err)}`);
      throw err;
    });
  return modelsLoaded;
}

// ---- account -----------------------------------------------------------------------------------

function showSignIn(message = "") {
  panel.clear();
  history.reset();
  $("account").hidden = true;
  $("studio-view").hidden = true;
  $("signin-view").hidden = false;
  setText($("signin-error"), message);
  const input = $("api-key");
  input.value = "";
  input.focus();
}

function setBalance(credits) {
  $("balance-value").textContent = String(credits);
  $("balance-value").dataset.credits = String(credits);
  form.setBalance(credits);
}

async function refreshBalance() {
  try {
    const me = await api.me();
    setBalance(me.team.credits);
  } catch {
    // a 401 signs out through onUnauthorized; anything else keeps the last known balance
  }
}

async function enter(me) {
  $("signin-view").hidden = true;
  $("studio-view").hidden = false;
  $("account").hidden = false;
  $("key-prefix").textContent = `${me.apiKey.prefix}… · ${me.team.name}`;
  setBalance(me.team.credits);
  form.reset();
  try {
    await modelsLoaded.catch(loadModels); // failed at page load (a restart, a blip): once more now
    form.refresh();
  } catch {
    // loadModels said why where Generate is; the history loads all the same
  }
  await history.reload();
  // Pick up a job that is still running (for instance after a reload of the page).
  const running = history.sorted().find((job) => ACTIVE.has(job.status));
  if (running && !panel.jobId) {
    panel.track(running);
    history.render();
  }
}

function signInMessage(err) {
  if (err.status === 401) {
    return `${err.message}. Check that you pasted the whole key (it starts with afk_).`;
  }
  if (err.status === 403) return `${err.message}. Ask the operator for an active key.`;
  return describeError(err);
}

async function signIn(key) {
  api.key = key;
  const me = await api.me();
  sessionStorage.setItem(KEY_STORAGE, key);
  await enter(me);
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY_STORAGE);
  api.key = null;
  showSignIn(message);
}

api.onUnauthorized = (err) => {
  if (!$("studio-view").hidden) signOut(`You were signed out: ${signInMessage(err)}`);
};

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) {
    setText($("signin-error"), "Enter your API key.");
    return;
  }
  const button = $("signin-submit");
  button.disabled = true;
  button.textContent = "Signing in…";
  setText($("signin-error"), "");
  try {
    await signIn(key);
  } catch (err) {
    api.key = null;
    setText($("signin-error"), signInMessage(err));
    $("api-key").select();
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
});

$("sign-out").addEventListener("click", () => signOut());

// ---- generate ----------------------------------------------------------------------------------

$("generate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  form.clearErrors();
  setText($("form-note"), "");
  if (!form.validate()) {
    form.focusFirstError();
    return;
  }
  form.setBusy(true, "Uploading images…");
  try {
    const body = await form.body();
    form.setBusy(true, "Submitting…");
    const accepted = await api.generate(body);
    form.stopExtending();
    panel.track(accepted.jobId);
    history.reload();
    refreshBalance();
  } catch (err) {
    if (err instanceof FieldError) {
      form.setError(err.field, [err.message]);
      form.setFormError("An image could not be uploaded; remove it or pick another.");
    } else if (err instanceof ApiError && err.status === 400) {
      const details = err.body.details || {};
      const leftover = form.showDetails(details);
      const marked = Object.keys(details).length > leftover.length;
      const what = err.message && err.message !== "Validation error" ? ` (${err.message})` : "";
      const lead = `The server refused the request${what}`;
      form.setFormError(
        [marked ? `${lead}: see the marked fields.` : `${lead}.`, ...leftover].join(" "),
      );
      form.focusFirstError();
    } else if (err instanceof ApiError && err.status === 402) {
      form.setFormError(describeError(err));
      if (err.body.creditsAvailable !== undefined) setBalance(err.body.creditsAvailable);
    } else if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      // handled by onUnauthorized
    } else {
      form.setFormError(describeError(err));
    }
  } finally {
    form.setBusy(false);
  }
});

// ---- start -------------------------------------------------------------------------------------

async function start() {
  loadModels().catch(() => {});
  const saved = sessionStorage.getItem(KEY_STORAGE);
  if (!saved) {
    showSignIn();
    return;
  }
  try {
    await signIn(saved);
  } catch (err) {
    sessionStorage.removeItem(KEY_STORAGE);
    api.key = null;
    showSignIn(err.status === 0 ? describeError(err) : `Your saved key no longer works: ${signInMessage(err)}`);
  }
}

start();
