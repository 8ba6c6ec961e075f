// The "New video" form: every veoParams field, live price, image uploads and per-field errors.

import { $, el, setText, credits } from "./util.js";

const MAX_SEED = 4294967295;
const MAX_REFERENCES = 3;
const SLOTS = ["image", "last_frame", "reference_images"];
const INPUT_FOR_SLOT = { image: "first-frame", last_frame: "last-frame", reference_images: "reference-images" };
// Re-upload a picked file at submit time when its upload expires within this margin.
const UPLOAD_MARGIN_MS = 120_000;

export class GenerateForm {
  constructor(api) {
    this.api = api;
    this.models = [];
    this.byId = new Map();
    this.balance = null;
    this.slots = { image: [], last_frame: [], reference_images: [] };
    this.form = $("generate-form");
    this.model = $("model");
    this.prompt = $("prompt");
    this.duration = $("duration");
    this.aspect = $("aspect-ratio");
    this.resolution = $("resolution");
    this.seed = $("seed");
    this.audio = $("generate-audio");
    this.negative = $("negative-prompt");
    this.enhance = $("enhance-prompt");
    this.samples = $("sample-count");
    this.button = $("generate");
    this.extending = null; // {jobId, video, seconds}: the clip the next request continues
    $("extend-stop").addEventListener("click", () => this.stopExtending());

    this.model.addEventListener("change", () => this.onModelChange());
    for (const input of [this.duration, this.audio, this.aspect, this.resolution, this.samples]) {
      input.addEventListener("change", () => this.refresh());
    }
    this.prompt.addEventListener("input", () => {
      this.updateCounter();
      this.clearError("prompt");
    });
    this.seed.addEventListener("input", () => this.clearError("seed"));
    this.negative.addEventListener("input", () => this.clearError("negative_prompt"));
    for (const slot of SLOTS) {
      $(INPUT_FOR_SLOT[slot]).addEventListener("change", (event) => this.onPick(slot, event.target));
    }
  }

  // ---- catalog ---------------------------------------------------------------------------------

  setModels(models) {
    this.models = models;
    this.byId = new Map(models.map((m) => [m.id, m]));
    const previous = this.model.value;
    this.model.replaceChildren(
      ...models.map((m) => el("option", { value: m.id }, `${m.label} (${m.id})`)),
    );
    if (previous && this.byId.has(previous)) this.model.value = previous;
    this.onModelChange();
  }

  current() {
    return this.byId.get(this.model.value) || null;
  }

  onModelChange() {
    const model = this.current();
    if (!model) return;
    this.clearError("model");
    const keep = (select, values, fallback, label = (v) => v) => {
      const old = select.value;
      select.replaceChildren(...values.map((v) => el("option", { value: String(v) }, label(v))));
      select.value = values.map(String).includes(old) ? old : String(fallback);
    };
    keep(this.duration, model.durations, model.defaultDuration, (d) => `${d} s`);
    keep(this.aspect, model.aspectRatios, model.aspectRatios[0], (a) => a);
    keep(this.resolution, model.resolutions, model.resolutions[0]);
    keep(this.samples, Array.from({ length: model.maxSampleCount || 1 }, (_, i) => i + 1), 1);
    const help = [model.description];
    if (model.engine && !model.engine.ready) help.push("Its engine is not ready yet.");
    $("model-help").textContent = help.join(" ");
    // Picked reference images stay, but a model that cannot take them says so at once (updateReferenceInput).
    this.clearError("reference_images");
    this.renderThumbs("reference_images");
    this.refresh();
  }

  /** "choice": the user picks; "always": audio is part of the model; "never": silent model. */
  audioMode(model = this.current()) {
    if (!model || !model.audio) return "never";
    return model.acceptsGenerateAudio ? "choice" : "always";
  }

  audioOn() {
    const mode = this.audioMode();
    return mode === "always" || (mode === "choice" && this.audio.checked);
  }

  refresh() {
    const model = this.current();
    if (!model) return;
    const mode = this.audioMode();
    const check = $("audio-check");
    check.hidden = mode !== "choice";
    this.audio.disabled = mode !== "choice";
    $("audio-help").textContent =
      mode === "always"
        ? `${model.label} always generates synchronized audio.`
        : mode === "never"
          ? `${model.label} generates silent video.`
          : "";
    this.updateReferenceInput();
    this.updateEnhanceInput(model);
    for (const name of ["duration", "generate_audio", "aspect_ratio", "resolution"]) this.clearError(name);
    this.updateExtension();
  }

  /** Enhancement off, with the server's reason, where its workers cannot enhance. */
  updateEnhanceInput(model) {
    const why = model.promptEnhancementUnavailable;
    this.enhance.disabled = Boolean(why);
    if (why) this.enhance.checked = false;
    $("enhance-help").textContent =
      why || "The model's own Gemma rewrites the prompt in detail first; the job shows what it rendered.";
  }

  price() {
    const model = this.current();
    if (!model) return null;
    const audio = this.audioOn() ? "-audio" : "";
    const [key, seconds] = this.extending ? [`extend-1s${audio}`, model.extendSeconds] : [`${this.duration.value}s${audio}`, 1];
    return key in model.prices ? model.prices[key] * seconds * Number(this.samples.value) : null;
  }

  // ---- extension -------------------------------------------------------------------------------

  /** The next request continues video ``video`` of a finished ``job``; what it sets itself is locked. */
  extend(job, video) {
    this.clearErrors();
    this.extending = { jobId: job.id, video, seconds: Number(job.result.durationSeconds) };
    if (this.byId.get(job.model)?.extends) this.model.value = job.model;
    else {
      const extending = this.models.find((m) => m.extends);
      if (extending) this.model.value = extending.id;
    }
    this.onModelChange();
    for (const slot of SLOTS) {
      this.releaseAll(slot);
      this.renderThumbs(slot);
    }
    setText($("form-note"), "");
    this.updateExtension();
  }

  stopExtending() {
    this.extending = null;
    this.clearError("extend_job_id");
    this.updateExtension();
  }

  updateExtension() {
    const ext = this.extending;
    const model = this.current();
    $("extend-banner").hidden = !ext;
    for (const input of [this.duration, this.aspect, this.resolution, $("first-frame"), $("last-frame")]) {
      input.disabled = Boolean(ext);
    }
    this.updateReferenceInput();
    if (ext) {
      const added = model?.extendSeconds ?? 7;
      const which = ext.video ? ` (video ${ext.video + 1})` : "";
      const length = ext.seconds === null ? `${added} s more` : `${ext.seconds.toFixed(1)} s → ${(ext.seconds + added).toFixed(1)} s`;
      $("extend-text").textContent =
        `Extending job ${ext.jobId.slice(0, 8)}${which}: ${length}. ` +
        "Describe what happens next; the clip's last frames carry on into it, at its size.";
    }
    this.updatePrice();
  }


  setBalance(balance) {
    this.balance = balance;
    this.updatePrice();
  }

  updatePrice() {
    const price = this.price();
    const value = $("price-value");
    const note = $("price-note");
    value.textContent = price === null ? "–" : credits(price);
    value.dataset.credits = price === null ? "" : String(price);
    const short = price !== null && this.balance !== null && price > this.balance;
    $("price").classList.toggle("short", short);
    note.textContent = short ? `more than your balance of ${this.balance}` : "";
  }

  updateCounter() {
    $("prompt-count").textContent = `${this.prompt.value.length} / 4000`;
  }

  setBusy(busy, label = "Generate") {
    this.button.disabled = busy;
    this.button.textContent = label;
    this.form.setAttribute("aria-busy", busy ? "true" : "false");
  }

  // ---- images ----------------------------------------------------------------------------------

  onPick(slot, input) {
    const files = Array.from(input.files || []);
    input.value = ""; // so picking the same file again fires "change"
    if (!files.length) return;
    this.clearError(slot);
    if (slot === "reference_images") {
      const room = MAX_REFERENCES - this.slots.reference_images.length;
      if (files.length > room) {
        this.setError(slot, [`At most ${MAX_REFERENCES} reference images; ${files.length - Math.max(room, 0)} not added.`]);
      }
      for (const file of files.slice(0, Math.max(room, 0))) this.slots.reference_images.push(this.uploadSlot(slot, file));
    } else {
      this.releaseAll(slot);
      this.slots[slot] = [this.uploadSlot(slot, files[0])];
    }
    this.renderThumbs(slot);
  }

  uploadSlot(slot, file) {
    const entry = { file, name: file.name, preview: URL.createObjectURL(file), url: null, expiresAt: 0 };
    entry.pending = this.upload(slot, entry);
    return entry;
  }

  async upload(slot, entry) {
    entry.state = "uploading";
    entry.error = null;
    this.renderThumbs(slot);
    try {
      const out = await this.api.upload(entry.file);
      entry.url = out.url;
      entry.expiresAt = Date.parse(out.expiresAt) || Date.now() + 3_600_000;
      entry.state = "ready";
    } catch (err) {
      const details = (err.body && err.body.details && err.body.details.file) || [];
      entry.error = `${entry.name}: ${details.join(" ") || err.message}`;
      entry.state = "error";
    }
    this.renderThumbs(slot);
  }

  releaseAll(slot) {
    for (const entry of this.slots[slot]) if (entry.file) URL.revokeObjectURL(entry.preview);
    this.slots[slot] = [];
  }

  removeImage(slot, entry) {
    if (entry.file) URL.revokeObjectURL(entry.preview);
    this.slots[slot] = this.slots[slot].filter((e) => e !== entry);
    this.clearError(slot);
    this.renderThumbs(slot);
  }

  renderThumbs(slot) {
    const box = $(`thumbs-${slot}`);
    const fieldLabel = { image: "first frame", last_frame: "last frame", reference_images: "reference image" }[slot];
    box.replaceChildren(
      ...this.slots[slot].map((entry) => {
        const img = el("img", { src: entry.preview, alt: `${fieldLabel}: ${entry.name}`, loading: "lazy" });
        img.addEventListener("error", () => img.replaceWith(el("span", { class: "thumb-missing" }, "no preview")));
        const state =
          entry.state === "uploading" ? "uploading…" : entry.state === "error" ? "upload failed" : entry.file ? "uploaded" : "from an earlier job";
        return el(
          "div",
          { class: `thumb thumb-${entry.state || "ready"}` },
          img,
          el("div", { class: "thumb-info" }, el("span", { class: "thumb-name", title: entry.name }, entry.name), el("span", { class: "thumb-state" }, state)),
          el("button", { type: "button", class: "btn btn-ghost btn-small", "aria-label": `Remove ${fieldLabel} ${entry.name}`, onclick: () => this.removeImage(slot, entry) }, "Remove"),
        );
      }),
    );
    const errors = this.slots[slot].filter((e) => e.error).map((e) => e.error);
    if (errors.length) this.setError(slot, errors);
    const button = $(INPUT_FOR_SLOT[slot]).parentElement.querySelector(".file-button");
    if (slot === "reference_images") {
      this.updateReferenceInput();
    } else if (button) {
      button.textContent = this.slots[slot].length ? "Replace…" : "Choose…";
    }
  }

  /** Reference images can be added while there is room and the model takes them here; the catalog says why not. */
  updateReferenceInput() {
    const unavailable = this.current()?.referenceImagesUnavailable;
    setText($("reference-help"), unavailable);
    $("reference-images").disabled =
      Boolean(unavailable) || Boolean(this.extending) || this.slots.reference_images.length >= MAX_REFERENCES;
    const conflict = this.referenceConflict();
    if (conflict) this.setError("reference_images", [conflict]);
  }

  /** Why the picked reference images cannot go with the chosen model (picked for another one), or null. */
  referenceConflict() {
    const unavailable = this.current()?.referenceImagesUnavailable;
    if (!unavailable || !this.slots.reference_images.length) return null;
    return `${unavailable} Remove the reference images, or pick a model that takes them.`;
  }

  /** The uploaded URLs of a slot, waiting for uploads in flight and renewing ones about to expire. */
  async urls(slot) {
    const urls = [];
    for (const entry of this.slots[slot]) {
      await entry.pending;
      if (entry.file && entry.url && entry.expiresAt - Date.now() < UPLOAD_MARGIN_MS) {
        entry.pending = this.upload(slot, entry);
        await entry.pending;
      }
      if (entry.error || !entry.url) throw new FieldError(slot, entry.error || `${entry.name} is not uploaded`);
      urls.push(entry.url);
    }
    return urls;
  }

  // ---- request ---------------------------------------------------------------------------------

  /** Client-side checks; returns true when the form may be sent. */
  validate() {
    let ok = true;
    const prompt = this.prompt.value;
    if (!prompt.trim()) {
      this.setError("prompt", ["Describe the video you want."]);
      ok = false;
    } else if (prompt.length > 4000) {
      this.setError("prompt", ["At most 4000 characters."]);
      ok = false;
    }
    const seed = this.seed.value.trim();
    if (this.seed.validity.badInput || (seed && !(/^\d+$/.test(seed) && Number(seed) <= MAX_SEED))) {
      this.setError("seed", [`A whole number from 0 to ${MAX_SEED}, or empty for a random seed.`]);
      ok = false;
    }
    if (!this.current()) {
      this.setError("model", ["Pick a model."]);
      ok = false;
    }
    const conflict = this.referenceConflict();
    if (conflict) {
      this.setError("reference_images", [conflict]);
      ok = false;
    }
    const model = this.current();
    if (this.extending && model && !model.extends) {
      const extending = this.models.filter((m) => m.extends).map((m) => m.label);
      this.setError("model", [`${model.label} does not extend clips; pick ${extending.join(" or ")}.`]);
      ok = false;
    }
    if (!ok) this.setFormError("Please fix the marked fields.");
    return ok;
  }

  /** The POST /v2/videos/generate body. Throws FieldError when an image is not uploaded. */
  async body() {
    const model = this.current();
    const ext = this.extending;
    const params = ext
      ? { extend_job_id: ext.jobId, ...(ext.video ? { extend_video: ext.video } : {}) }
      : { duration: Number(this.duration.value), aspect_ratio: this.aspect.value, resolution: this.resolution.value };
    const seed = this.seed.value.trim();
    if (seed) params.seed = Number(seed);
    if (this.audioMode(model) === "choice") params.generate_audio = this.audio.checked;
    const negative = this.negative.value.trim();
    if (negative) params.negative_prompt = negative;
    if (this.enhance.checked) params.enhance_prompt = true;
    if (Number(this.samples.value) > 1) params.sample_count = Number(this.samples.value);
    const [image] = await this.urls("image");
    const [lastFrame] = await this.urls("last_frame");
    const references = await this.urls("reference_images");
    if (image) params.image = image;
    if (lastFrame) params.last_frame = lastFrame;
    if (references.length) params.reference_images = references;
    return { prompt: this.prompt.value, model: model.id, veoParams: params };
  }

  /** Fill the form from a job's echoed request (``input``). */
  fill(input, jobId) {
    if (!input) return;
    const params = input.veoParams || {};
    this.clearErrors();
    this.extending = null;
    if (this.byId.has(input.model)) this.model.value = input.model;
    this.onModelChange();
    const model = this.current();
    this.prompt.value = input.prompt || "";
    this.updateCounter();
    const duration = params.duration ?? model.defaultDuration;
    this.duration.value = String(duration);
    this.aspect.value = params.aspect_ratio || model.aspectRatios[0];
    this.resolution.value = params.resolution || model.resolutions[0];
    this.seed.value = params.seed ?? "";
    this.audio.checked = params.generate_audio ?? model.audio;
    this.negative.value = params.negative_prompt || "";
    this.enhance.checked = Boolean(params.enhance_prompt) && !this.enhance.disabled;
    this.samples.value = String(params.sample_count || 1);
    if (params.extend_job_id) this.extending = { jobId: params.extend_job_id, video: params.extend_video || 0, seconds: null };
    const short = jobId ? jobId.slice(0, 8) : "an earlier job";
    for (const slot of SLOTS) {
      this.releaseAll(slot);
      const raw = params[slot];
      const urls = Array.isArray(raw) ? raw : raw ? [raw] : [];
      this.slots[slot] = urls.map((url, i) => ({
        url,
        preview: url,
        name: urls.length > 1 ? `job ${short} #${i + 1}` : `job ${short}`,
        state: "remote",
        pending: null,
        expiresAt: Infinity,
      }));
      this.renderThumbs(slot);
    }
    this.refresh();
    setText($("form-note"), `Filled from job ${short}. Change anything you like, then press Generate.`);
  }

  reset() {
    this.clearErrors();
    this.extending = null;
    this.form.reset();
    // reset() picks each select's first option; let the model's own defaults apply instead
    for (const select of [this.duration, this.aspect, this.resolution]) select.value = "";
    for (const slot of SLOTS) {
      this.releaseAll(slot);
      this.renderThumbs(slot);
    }
    setText($("form-note"), "");
    this.updateCounter();
    this.onModelChange();
  }

  // ---- errors ----------------------------------------------------------------------------------

  /** Show a 400's details next to their fields; returns the messages no field took. */
  showDetails(details) {
    const leftover = [];
    for (const [path, messages] of Object.entries(details || {})) {
      const name = path.replace(/^veoParams\./, "").split(".")[0];
      if (!this.setError(name, messages)) leftover.push(`${path}: ${messages.join(" ")}`);
    }
    return leftover;
  }

  setError(name, messages) {
    const node = $(`err-${name}`);
    if (!node) return false;
    setText(node, messages.join(" "));
    node.closest(".field")?.classList.add("invalid");
    return true;
  }

  clearError(name) {
    const node = $(`err-${name}`);
    if (!node) return;
    setText(node, "");
    node.closest(".field")?.classList.remove("invalid");
  }

  setFormError(message) {
    setText($("form-error"), message);
  }

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error")) setText(node, "");
    for (const node of this.form.querySelectorAll(".field.invalid")) node.classList.remove("invalid");
    this.setFormError("");
  }

  focusFirstError() {
    const field = this.form.querySelector(".field.invalid");
    const input = field && field.querySelector("input:not([type=hidden]), select, textarea");
    if (input && !input.disabled) input.focus();
    else if (field) field.scrollIntoView({ block: "center" });
  }
}

export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}
