// The account's jobs, newest first, with "Load more" (nextCursor), Open, Re-run and Delete.

import { $, el, setText, ACTIVE, FINISHED, credits, describeError, statusBadge, when } from "./util.js";

const PAGE = 10;
const REFRESH_MS = 3000;

export class History {
  /** hooks: onOpen(job), onRerun(job), onDeleted(id), onSettled(), isTracked(id), model(id) */
  constructor(api, hooks) {
    this.api = api;
    this.hooks = hooks;
    this.list = $("history-list");
    this.jobs = new Map();
    this.nodes = new Map(); // id -> {sig, node}
    this.cursor = null;
    this.hasMore = false;
    this.paged = false; // "Load more" has run: the cursor is past the first page's
    this.generation = 0; // bumps on reset: a reply to an earlier list (another key's) is dropped
    this.timer = null;
    $("load-more").addEventListener("click", () => this.loadMore());
    $("history-refresh").addEventListener("click", () => {
      this.reset(); // start over: also drops jobs deleted elsewhere
      this.reload();
    });
  }

  reset() {
    this.generation++;
    clearTimeout(this.timer);
    this.timer = null;
    this.jobs.clear();
    this.nodes.clear();
    this.list.replaceChildren();
    this.cursor = null;
    this.hasMore = false;
    this.paged = false;
    this.render();
  }

  /** Fetch the first page and merge it in (pages already loaded with "Load more" stay). */
  async reload() {
    const generation = this.generation;
    try {
      const page = await this.api.jobs({ limit: PAGE });
      if (generation !== this.generation) return;
      setText($("history-error"), "");
      let settled = false;
      for (const job of page.jobs) {
        const old = this.jobs.get(job.id);
        if (old && ACTIVE.has(old.status) && FINISHED.has(job.status)) settled = true;
        this.jobs.set(job.id, job);
      }
      if (settled) this.hooks.onSettled();
      if (!this.paged) {
        this.cursor = page.nextCursor;
        this.hasMore = page.hasMore;
      }
      this.render();
    } catch (err) {
      if (generation !== this.generation) return;
      if (err.status !== 401 && err.status !== 403) setText($("history-error"), `Could not load your jobs: ${describeError(err)}`);
    }
    this.schedule();
  }

  async loadMore() {
    const button = $("load-more");
    button.disabled = true;
    button.textContent = "Loading…";
    const generation = this.generation;
    try {
      const page = await this.api.jobs({ limit: PAGE, cursor: this.cursor });
      if (generation !== this.generation) return;
      for (const job of page.jobs) this.jobs.set(job.id, job);
      this.cursor = page.nextCursor;
      this.hasMore = page.hasMore;
      this.paged = true;
      setText($("history-error"), "");
    } catch (err) {
      if (generation === this.generation) setText($("history-error"), `Could not load more jobs: ${describeError(err)}`);
    } finally {
      button.disabled = false;
      button.textContent = "Load more";
    }
    this.render();
  }

  /** While a job the panel does not poll is still running, refresh the list now and then. */
  schedule() {
    clearTimeout(this.timer);
    const untracked = [...this.jobs.values()].some((j) => ACTIVE.has(j.status) && !this.hooks.isTracked(j.id));
    if (untracked) this.timer = setTimeout(() => this.reload(), REFRESH_MS);
  }

  upsert(job) {
    const old = this.jobs.get(job.id);
    // Keep what the entry already holds and refresh the fields this reply carries.
    this.jobs.set(job.id, { ...(old || {}), ...job });
    this.render();
  }

  remove(id) {
    this.jobs.delete(id);
    this.render();
  }

  sorted() {
    return [...this.jobs.values()].sort((a, b) =>
      a.createdAt === b.createdAt ? (a.id < b.id ? 1 : -1) : a.createdAt < b.createdAt ? 1 : -1,
    );
  }

  /** Keyed update: unchanged entries keep their nodes (and focus, and an armed Delete). */
  render() {
    const jobs = this.sorted();
    const nodes = jobs.map((job) => {
      const sig = JSON.stringify([job.status, job.progress, job.creditCost, job.error, job.expired, this.hooks.isTracked(job.id)]);
      const old = this.nodes.get(job.id);
      if (old && old.sig === sig) return old.node;
      if (old) old.node.remove();
      const node = this.entry(job);
      this.nodes.set(job.id, { sig, node });
      return node;
    });
    const keep = new Set(nodes);
    for (const [id, { node }] of this.nodes) {
      if (!keep.has(node)) {
        node.remove();
        if (!this.jobs.has(id)) this.nodes.delete(id);
      }
    }
    nodes.forEach((node, i) => {
      if (this.list.children[i] !== node) this.list.insertBefore(node, this.list.children[i] || null);
    });
    $("history-empty").hidden = jobs.length > 0;
    $("load-more").hidden = !this.hasMore;
  }

  summary(job) {
    const input = job.input || {};
    const params = input.veoParams || {};
    const model = this.hooks.model(input.model || job.model);
    const extends_ = params.extend_job_id;
    const duration = params.duration ?? (model ? model.defaultDuration : null);
    let audio = params.generate_audio ?? (model ? model.audio : null);
    if (job.result) audio = job.result.hasAudio;
    const shape = extends_
      ? [`+${model ? model.extendSeconds : 7} s to job ${extends_.slice(0, 8)}${params.extend_video ? ` (video ${params.extend_video + 1})` : ""}`]
      : [duration !== null ? `${duration} s` : null, params.aspect_ratio || "16:9", params.resolution || "720p"];
    const bits = [
      input.model || job.model,
      ...shape,
      audio === null ? null : audio ? "audio" : "silent",
      params.seed !== undefined ? `seed ${params.seed}` : job.result ? `seed ${job.result.seed}` : null,
      params.negative_prompt ? "negative prompt" : null,
      params.image ? "first frame" : null,
      params.last_frame ? "last frame" : null,
      params.reference_images ? `${params.reference_images.length} reference image(s)` : null,
      params.sample_count > 1 ? `${params.sample_count} videos` : null,
      params.enhance_prompt ? "enhanced prompt" : null,
    ];
    return bits.filter(Boolean).join(" · ");
  }

  entry(job) {
    const prompt = (job.input && job.input.prompt) || "(no prompt)";
    const finished = FINISHED.has(job.status);
    const progress = ACTIVE.has(job.status) ? ` ${job.progress || 0}%` : "";
    const del = el(
      "button",
      {
        type: "button",
        class: "btn btn-ghost btn-small danger-text",
        disabled: !finished,
        title: finished ? "Delete this job and its video" : "Cancel the job before deleting it",
        onclick: (event) => this.confirmDelete(event.currentTarget, job),
      },
      "Delete",
    );
    return el(
      "li",
      { class: `job-card${this.hooks.isTracked(job.id) ? " current" : ""}`, dataset: { jobId: job.id, status: job.status } },
      el(
        "div",
        { class: "job-card-head" },
        statusBadge(job.status),
        progress ? el("span", { class: "muted small" }, progress) : null,
        el("span", { class: "muted small" }, when(job.createdAt)),
        el("span", { class: "cost" }, credits(job.creditCost ?? 0)),
      ),
      el("p", { class: "job-card-prompt", title: prompt }, prompt),
      el("p", { class: "job-card-params muted small" }, this.summary(job)),
      job.error && job.status !== "COMPLETED" ? el("p", { class: "job-card-error small" }, job.error) : null,
      el(
        "div",
        { class: "job-card-actions" },
        el("button", { type: "button", class: "btn btn-secondary btn-small", onclick: () => this.hooks.onOpen(job) },
          job.status === "COMPLETED" && !job.expired ? "Play" : "Open"),
        el("button", { type: "button", class: "btn btn-secondary btn-small", disabled: !job.input, onclick: () => this.hooks.onRerun(job) }, "Re-run"),
        del,
      ),
    );
  }

  /** Delete asks once more on the same button ("Confirm delete") for a few seconds. */
  async confirmDelete(button, job) {
    if (button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = "Confirm delete";
      button.classList.add("armed");
      setTimeout(() => {
        if (button.isConnected && button.dataset.armed === "1") {
          button.dataset.armed = "";
          button.textContent = "Delete";
          button.classList.remove("armed");
        }
      }, 4000);
      return;
    }
    button.disabled = true;
    button.textContent = "Deleting…";
    try {
      await this.api.remove(job.id);
      this.remove(job.id);
      this.hooks.onDeleted(job.id);
    } catch (err) {
      if (err.status === 404) {
        this.remove(job.id);
        this.hooks.onDeleted(job.id);
        return;
      }
      setText($("history-error"), `Could not delete the job: ${describeError(err)}`);
      button.disabled = false;
      button.dataset.armed = "";
      button.textContent = "Delete";
    }
  }
}
