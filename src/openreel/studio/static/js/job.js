// The "Current job" panel: queue position, progress, Cancel, then the player or the error.

import { $, el, ACTIVE, FINISHED, credits, describeError, statusBadge, when } from "./util.js";

const POLL_MS = 700;

export class JobPanel {
  /**
   * hooks.onUpdate(job): every fresh copy of the job (for the history list)
   * hooks.onFinished(job): once, when a tracked job reaches a final status
   * hooks.onUseSeed(seed): the user wants this seed in the form
   * hooks.canExtend(job): why the job's clip cannot be extended, or null
   * hooks.onExtend(job, video): the user wants to continue video ``video`` of the job
   */
  constructor(api, hooks) {
    this.api = api;
    this.hooks = hooks;
    this.body = $("job-body");
    this.job = null;
    this.token = 0; // bumps whenever another job is shown, to end the old poll loop
    this.timer = null;
    this.rendered = null; // "<id>:<status>" of the last full render
  }

  get jobId() {
    return this.job ? this.job.id : null;
  }

  /** Show a job and, while it is QUEUED or PROCESSING, poll it until it finishes. */
  track(jobOrId) {
    this.stop();
    const token = ++this.token;
    if (typeof jobOrId === "string") {
      this.job = { id: jobOrId, status: "QUEUED", progress: 0, queuePosition: null, model: "", input: null };
    } else {
      this.job = jobOrId;
    }
    this.render();
    this.poll(token, 0);
  }

  stop() {
    this.token++;
    clearTimeout(this.timer);
    this.timer = null;
  }

  clear() {
    this.stop();
    this.job = null;
    this.rendered = null;
    this.body.replaceChildren(
      el("p", { class: "empty muted", id: "job-empty" }, "No job yet. Fill in the form and press Generate."),
    );
  }

  poll(token, delay) {
    this.timer = setTimeout(async () => {
      if (token !== this.token) return;
      let job;
      try {
        job = await this.api.job(this.job.id);
      } catch (err) {
        if (token !== this.token) return;
        if (err.status === 404) {
          this.showWarning("This job no longer exists.");
          return;
        }
        if (err.status === 401 || err.status === 403) return; // signed out by the app
        this.showWarning(`${describeError(err)} Retrying…`);
        this.poll(token, 2000);
        return;
      }
      if (token !== this.token) return;
      const was = this.job.status;
      this.update(job);
      if (ACTIVE.has(job.status)) this.poll(token, POLL_MS);
      else if (ACTIVE.has(was) || was === undefined) this.hooks.onFinished(job);
    }, delay);
  }

  update(job) {
    const warning = $("job-warning");
    if (warning) warning.remove(); // the server answers again
    this.job = job;
    this.render();
    this.hooks.onUpdate(job);
  }

  async cancel() {
    const job = this.job;
    const button = $("job-cancel");
    if (button) {
      button.disabled = true;
      button.textContent = "Cancelling…";
    }
    try {
      const fresh = await this.api.cancel(job.id);
      if (this.jobId !== job.id) return;
      this.stop();
      this.update(fresh);
      this.hooks.onFinished(fresh);
    } catch (err) {
      if (this.jobId !== job.id) return;
      if (err.status === 409) {
        // It finished (or was cancelled elsewhere) just before: show what it is now.
        this.track(job.id);
        return;
      }
      this.showWarning(`Could not cancel: ${describeError(err)}`);
      if (button) {
        button.disabled = false;
        button.textContent = "Cancel";
      }
    }
  }

  showWarning(message) {
    let node = $("job-warning");
    if (!node) {
      node = el("p", { class: "form-error", id: "job-warning", role: "alert" });
      this.body.append(node);
    }
    node.textContent = message;
  }

  render() {
    const job = this.job;
    const key = `${job.id}:${job.status}`;
    if (this.rendered === key && ACTIVE.has(job.status)) {
      this.renderProgress(job);
      return;
    }
    if (this.rendered === key) return;
    this.rendered = key;
    const params = (job.input && job.input.veoParams) || {};
    const head = el(
      "div",
      { class: "job-head" },
      el("span", { id: "job-status" }, statusBadge(job.status)),
      el("code", { class: "job-id", title: job.id }, job.id.slice(0, 8)),
      job.model ? el("span", { class: "muted" }, job.model) : null,
      job.createdAt ? el("span", { class: "muted small" }, when(job.createdAt)) : null,
    );
    const prompt = job.input ? el("p", { class: "job-prompt" }, job.input.prompt) : null;
    const parts = [head, prompt];

    if (ACTIVE.has(job.status)) {
      parts.push(
        el("p", { class: "job-queue", id: "job-queue", "aria-live": "polite" }),
        el(
          "div",
          { class: "progress-row" },
          el("progress", { id: "job-progress", max: "100", value: "0", "aria-label": "Progress" }),
          el("span", { class: "progress-text", id: "job-progress-text" }, "0%"),
        ),
        el("div", { class: "actions" },
          el("button", { type: "button", class: "btn btn-danger", id: "job-cancel", onclick: () => this.cancel() }, "Cancel"),
        ),
      );
    } else if (job.status === "COMPLETED") {
      parts.push(...this.renderResult(job, params));
    } else if (FINISHED.has(job.status)) {
      parts.push(
        el("div", { class: "alert alert-error", id: "job-error", role: "alert" },
          el("strong", {}, job.status === "CANCELLED" ? "Cancelled. " : "Failed. "),
          job.error || "No reason was given.",
          " ",
          el("span", { class: "muted" }, "The credits were refunded."),
        ),
      );
    }
    this.body.replaceChildren(...parts.filter(Boolean));
    if (ACTIVE.has(job.status)) this.renderProgress(job);
  }

  renderProgress(job) {
    const progress = Math.max(0, Math.min(100, job.progress || 0));
    const bar = $("job-progress");
    if (bar) bar.value = progress;
    const text = $("job-progress-text");
    if (text) text.textContent = `${progress}%`;
    const queue = $("job-queue");
    if (queue) {
      const eta = job.etaSeconds === null || job.etaSeconds === undefined ? "" : ` About ${Math.ceil(job.etaSeconds)} s left.`;
      if (job.status === "QUEUED") {
        queue.textContent =
          (job.queuePosition === null || job.queuePosition === undefined
            ? "Queued…"
            : `Queued: position ${job.queuePosition} in line${job.queuePosition <= 1 ? " (next to start)" : ""}.`) + eta;
      } else {
        queue.textContent = (progress >= 90 ? "Rendering: encoding the video…" : "Rendering…") + eta;
      }
    }
  }

  renderResult(job, params) {
    const result = job.result;
    if (!result || job.expired) {
      const why = job.expired ? "The video has expired and was removed from the server." : "No video.";
      return [el("div", { class: "alert alert-info", id: "job-expired" }, why)];
    }
    const video = el("video", {
      id: "job-video",
      controls: true,
      preload: "auto",
      playsinline: true,
      src: result.videoUrl,
      "aria-label": `Generated video: ${job.input ? job.input.prompt : job.id}`,
    });
    if (result.width && result.height) video.style.aspectRatio = `${result.width} / ${result.height}`;
    const meta = el(
      "dl",
      { class: "meta", id: "job-meta" },
      el("dt", {}, "Size"), el("dd", {}, `${result.width} × ${result.height}`),
      el("dt", {}, "Duration"), el("dd", {}, `${Number(result.durationSeconds).toFixed(1)} s at ${result.fps} fps`),
      el("dt", {}, "Audio"), el("dd", {}, result.hasAudio ? "yes" : "no (silent)"),
      el("dt", {}, "Seed"), el("dd", {}, String(result.seed)),
      el("dt", {}, "Cost"), el("dd", {}, credits(job.creditCost ?? 0)),
    );
    if (params.aspect_ratio) meta.append(el("dt", {}, "Aspect"), el("dd", {}, params.aspect_ratio));
    const from = result.extendedFrom;
    if (from) {
      const which = from.video ? ` (video ${from.video + 1})` : "";
      meta.append(el("dt", {}, "Extends"), el("dd", { id: "job-extends" }, `job ${from.jobId.slice(0, 8)}${which}, ${from.secondsAdded} s added`));
    }
    if (result.enhancedPrompt) {
      meta.append(el("dt", {}, "Rendered prompt"), el("dd", { id: "job-enhanced-prompt" }, result.enhancedPrompt));
    }
    const seed = result.seed;
    const videos = result.videos || [];
    // The player starts on the first video made; a sample's Play button makes it the one to extend.
    this.playing = Math.max(0, videos.findIndex((v) => !v.error));
    const cannotExtend = this.hooks.canExtend(job);
    return [
      result.notice ? el("div", { class: "alert alert-warn", id: "job-notice", role: "note" }, result.notice) : null,
      el("div", { class: "player" }, video),
      videos.length > 1 ? this.renderSamples(job, videos, video) : null,
      el(
        "div",
        { class: "actions" },
        el("a", { class: "btn btn-primary", id: "job-download", href: result.videoUrl, download: `openreel-${job.id.slice(0, 8)}.mp4` }, "Download MP4"),
        el("button", { type: "button", class: "btn btn-secondary", onclick: () => this.hooks.onUseSeed(seed) }, "Use this seed"),
        el(
          "button",
          {
            type: "button",
            class: "btn btn-secondary",
            id: "job-extend",
            disabled: Boolean(cannotExtend),
            title: cannotExtend || "Continue this clip by a few seconds",
            onclick: () => this.hooks.onExtend(job, this.playing),
          },
          "Extend",
        ),
      ),
      cannotExtend ? el("p", { class: "help", id: "job-extend-help" }, cannotExtend) : null,
      meta,
    ];
  }

  /** Every video of a request with several samples: play any one in the player, or see why it failed. */
  renderSamples(job, videos, player) {
    return el(
      "ol",
      { class: "samples", id: "job-samples", "aria-label": "Videos of this request" },
      ...videos.map((sample, i) =>
        el(
          "li",
          {},
          sample.error
            ? el("span", { class: "muted" }, `Video ${i + 1} (seed ${sample.seed}) failed and was refunded: ${sample.error}`)
            : el(
                "button",
                {
                  type: "button",
                  class: "btn btn-secondary btn-small",
                  onclick: () => {
                    this.playing = i;
                    player.src = sample.videoUrl;
                    player.play();
                  },
                },
                `Play video ${i + 1} (seed ${sample.seed})`,
              ),
          sample.error ? null : el("a", { class: "btn btn-small", href: sample.videoUrl, download: `openreel-${job.id.slice(0, 8)}-${i + 1}.mp4` }, "Download"),
        ),
      ),
    );
  }
}
