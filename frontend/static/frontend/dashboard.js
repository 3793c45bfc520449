// The project dashboard: is the data engine working? From GET /api/projects/{id}/dashboard/
// (engine/dashboard.py): the masks per stage (the SA paper's comparison of its three stages),
// masks per image, seconds and clicks per mask day by day, each model version's figures on
// the interactive protocol and the review of its automatic masks, the verification per model
// version and per learned verifier, and the jobs. Admins also change the project's stage and
// launch retraining cycles from here.
//
// Job progress arrives on the project's websocket when the channel layer reaches the worker
// (Redis); the page also reloads the figures every few seconds while a job is active.

import { api, ApiError } from "./annotate/api.js";
import { chart } from "./dashboard/charts.js";

const STAGE_ORDER = ["assisted", "semi", "automatic", "imported"];
const STAGE_COLORS = {
  assisted: "#4f46e5",
  semi: "#d97706",
  automatic: "#059669",
  imported: "#64748b",
};
const METRICS = {
  miou: [
    { key: "miou@1", name: "mIoU@1", color: "#2563eb" },
    { key: "miou@3", name: "mIoU@3", color: "#7c3aed", dash: "6 3" },
    { key: "miou@5", name: "mIoU@5", color: "#db2777", dash: "2 3" },
  ],
  noc: [
    { key: "noc@85", name: "NoC@85", color: "#0891b2" },
    { key: "noc@90", name: "NoC@90", color: "#ea580c", dash: "6 3" },
  ],
};
const JOB_KINDS = {
  retrain: "Retraining cycle",
  automatic: "Automatic masks",
  embed_images: "Embeddings",
  export: "Export",
  import_folder: "Folder import",
  import_dataset: "Dataset import",
  train_verifier: "Verifier training",
};
const ACTIVE = ["queued", "running"];
const MODE_NAMES = { full: "whole model", decoder: "mask decoder", hq: "HQ head" };
// What the SA paper measured on its automatic masks after correction (section 4).
const PAPER_SHARES = { share_iou_above_0_90: 0.94, share_iou_above_0_75: 0.97 };
const POLL_MS = 5000;
const RETRY_SECONDS = [2, 4, 8, 15, 30];

const $ = (id) => document.getElementById(id);
const fmt = (n) => Math.round(n).toLocaleString("en-US");

class Dashboard {
  constructor(config) {
    this.config = config;
    this.api = config.urls.api;
    this.stageNames = new Map(config.sources.map((s) => [s.value, s.label]));
    this.data = null;
    this.loads = 0; // completed loads, for tests
    this.loading = null; // the load in flight
    this.pollTimer = null;
    this.socket = null;
    this.socketAttempt = 0;
    this.busy = false; // an admin action on its way
    this.stopped = false;
  }

  async start() {
    this.bind();
    await this.load();
    this.connect();
  }

  // ---------------------------------------------------------------- data

  /** Fetch the figures and draw everything; one load at a time. */
  load() {
    if (!this.loading && !this.stopped) {
      this.loading = this.fetchAndRender().finally(() => {
        this.loading = null;
      });
    }
    return this.loading;
  }

  async fetchAndRender() {
    window.clearTimeout(this.pollTimer);
    try {
      this.data = await api(`${this.api}dashboard/`);
    } catch (error) {
      this.say(`The figures could not be loaded: ${error.message}`, "error");
      this.schedule(POLL_MS * 3);
      return;
    }
    this.render();
    this.loads += 1;
    $("dashboard").dataset.loaded = "true";
    $("updated").textContent = `Updated ${clock(new Date())}`;
    if (this.data.jobs.some((job) => ACTIVE.includes(job.state))) this.schedule(POLL_MS);
  }

  schedule(ms) {
    window.clearTimeout(this.pollTimer);
    if (this.stopped) return;
    this.pollTimer = window.setTimeout(() => this.load(), ms);
  }

  render() {
    this.renderStage(this.data.stage);
    this.renderStages();
    this.renderTime();
    this.renderVersions();
    this.renderVerification();
    this.renderJobs();
  }

  // ---------------------------------------------------------------- the project's stage

  renderStage(stage) {
    this.config.project.stage = stage;
    const select = $("stage-select");
    if (select && !this.busy) select.value = stage;
    const badge = $("stage-badge");
    if (badge) {
      badge.className = `stage stage-${stage}`;
      badge.textContent = this.stageNames.get(stage) || stage;
    }
  }

  async setStage(stage) {
    const before = this.config.project.stage;
    if (stage === before || this.busy) return;
    this.busy = true;
    $("stage-select").disabled = true;
    const jobs = new Set(this.data ? this.data.jobs.map((job) => job.id) : []);
    try {
      await api(this.api, { method: "PATCH", body: { stage } });
      this.busy = false;
      await this.load();
      const name = this.stageNames.get(stage) || stage;
      const prefill = this.data.jobs.find((job) => !jobs.has(job.id) && job.kind === "automatic");
      this.say(
        prefill
          ? `Stage: ${name}. The model pre-fills the images not opened yet (job #${prefill.id}).`
          : `Stage: ${name}.`,
        "ok",
      );
    } catch (error) {
      this.busy = false;
      $("stage-select").value = before;
      this.say(`The stage was not changed: ${error.message}`, "error");
    } finally {
      $("stage-select").disabled = false;
    }
  }

  // ---------------------------------------------------------------- retraining

  async retrain() {
    const button = $("retrain");
    if (this.busy) return;
    this.busy = true;
    button.disabled = true;
    try {
      const mode = $("retrain-mode").value;
      const job = await api(`${this.api}retrain/`, { method: "POST", body: { params: { mode } } });
      this.say(
        `Retraining cycle started (job #${job.id}), training the ${MODE_NAMES[mode]}; its progress is in the jobs list.`,
        "ok",
      );
    } catch (error) {
      const running = error instanceof ApiError && error.body && error.body.job_id;
      const which = running ? ` (job #${error.body.job_id})` : "";
      const kind = error instanceof ApiError && error.status === 409 ? "warn" : "error";
      this.say(`Not started: ${error.message}${which}.`, kind);
    } finally {
      this.busy = false;
      button.disabled = false;
    }
    await this.load();
  }

  // ---------------------------------------------------------------- per stage

  renderStages() {
    const rows = sortByStage(this.data.per_stage, (row) => row.stage);
    const body = $("stage-rows");
    if (!rows.length) {
      body.replaceChildren(
        emptyRow(
          7,
          "No masks yet. They are counted here as annotators save them and as the model labels images.",
        ),
      );
      return;
    }
    body.replaceChildren(
      ...rows.map((r) => {
        const row = document.createElement("tr");
        row.dataset.stage = r.stage;
        const name = cell("th", "");
        name.scope = "row";
        name.append(stageKey(r.stage), this.stageNames.get(r.stage) || r.stage);
        row.append(
          name,
          numberCell("masks", r.masks, fmt),
          numberCell("images", r.images, fmt),
          numberCell("masks_per_image", r.masks_per_image, (v) => v.toFixed(2)),
          numberCell("seconds_per_mask", r.seconds_per_mask, (v) => `${v.toFixed(1)} s`),
          numberCell("clicks_per_mask", r.clicks_per_mask, (v) => v.toFixed(2)),
          cell("td", this.config.reference[r.stage] || "—", "reference"),
        );
        return row;
      }),
    );
  }

  // ---------------------------------------------------------------- per day

  renderTime() {
    const daily = this.data.daily;
    $("time-empty").hidden = daily.length > 0;
    $("time-charts").hidden = daily.length === 0;
    if (!daily.length) return;
    const days = [...new Set(daily.map((row) => row.day))].sort();
    const stages = sortByStage([...new Set(daily.map((row) => row.stage))], (s) => s);
    const series = (field) =>
      stages.map((stage) => ({
        key: stage,
        name: this.stageNames.get(stage) || stage,
        color: STAGE_COLORS[stage] || "#6b7280",
        points: daily
          .filter((row) => row.stage === stage)
          .map((row) => ({ x: row.day, y: row[field] })),
      }));
    const x = { type: "day", values: days, label: "day" };
    chart($("chart-masks"), {
      kind: "bars",
      title: "Masks made per day",
      x,
      y: { label: "masks", format: fmt, unit: "masks", integer: true },
      series: series("masks"),
    });
    chart($("chart-masks-per-image"), {
      kind: "line",
      title: "Masks per image",
      x,
      y: { label: "masks per image", format: (v) => trim(v, 2) },
      series: series("masks_per_image"),
      note: "Masks of the day divided by the images they are on.",
    });
    chart($("chart-seconds"), {
      kind: "line",
      title: "Seconds per mask",
      x,
      y: { label: "seconds", format: (v) => trim(v, 1), unit: "s" },
      series: series("seconds_per_mask"),
      empty: "No timed masks yet: the annotation page times each mask from its first click.",
      note: "Masks people made; the paper's annotators went from 34 s to 14 s.",
    });
    chart($("chart-clicks"), {
      kind: "line",
      title: "Clicks per mask",
      x,
      y: { label: "clicks", format: (v) => trim(v, 2), unit: "clicks" },
      series: series("clicks_per_mask"),
      empty: "No timed masks yet: clicks are counted on the annotation page.",
      note: "Points and boxes per mask people made.",
    });
  }

  // ---------------------------------------------------------------- model versions

  renderVersions() {
    const versions = this.data.versions;
    const automatic = new Map(this.data.automatic.map((row) => [row.version, row]));
    const body = $("version-rows");
    $("versions-empty").hidden = versions.length > 0;
    $("versions-figures").hidden = versions.length === 0;
    if (!versions.length) {
      body.replaceChildren();
      return;
    }
    const rows = [];
    for (const v of versions) {
      const sets = shippedSets(v.shipped_figures);
      const figures = v.figures || (sets.length ? sets[0][1] : null);
      const row = document.createElement("tr");
      row.dataset.version = String(v.version);
      row.dataset.state = v.state;
      const name = cell("th", `v${v.version}`);
      name.scope = "row";
      const how = [v.config, v.mode ? MODE_NAMES[v.mode] : null].filter(Boolean).join(", ");
      if (v.parent !== null) name.title = `trained from v${v.parent}${how ? ` (${how})` : ""}`;
      else if (how) name.title = how;
      if (v.mode === "hq") name.append(badge("HQ", "trained HQ-SAM's head on the frozen base"));
      const review = v.review;
      const made = automatic.get(v.version);
      const masks = review ? review.masks : made ? made.masks : null;
      const masksCell = numberCell("automatic_masks", masks, fmt);
      if (made) masksCell.title = `on ${plural(made.images, "image")}`;
      row.append(
        name,
        stateCell(v.state),
        ...figureCells(figures),
        comparedCell(v, sets),
        gainCell(v),
        masksCell,
        shareCell("share_iou_above_0_90", review),
        shareCell("share_iou_above_0_75", review),
        shareCell("share_rejected", review),
      );
      if (review) {
        row.lastChild.title = `${review.rejected} of ${plural(review.reviewed, "reviewed mask")}`;
      }
      rows.push(row);
      // Version 0's card may give figures on several held-out sets: one line each.
      for (const [set, more] of sets.slice(1)) {
        const extra = document.createElement("tr");
        extra.className = "subrow";
        extra.dataset.version = String(v.version);
        extra.dataset.set = set;
        extra.append(cell("td", ""), cell("td", ""), ...figureCells(more));
        extra.append(shippedCell(set, ""), emptyCells(5));
        rows.push(extra);
      }
    }
    body.replaceChildren(...rows);
    this.renderVersionCharts(versions);
  }

  // ---------------------------------------------------------------- verification

  /** One row per model version with verified masks, per verifier version, and the
   * verdicts people gave while no verifier was promoted (engine/dashboard.py). */
  renderVerification() {
    const figures = this.data.verification || { model_versions: [], verifiers: [] };
    const percent = (v) => `${trim(v * 100, 1)}%`;
    const seconds = (v) => `${trim(v, 1)} s`;
    const rows = [];
    const add = (key, who, state, r, title) => {
      const row = document.createElement("tr");
      row.dataset.row = key;
      const name = cell("th", who);
      name.scope = "row";
      if (title) name.title = title;
      row.append(
        name,
        state ? stateCell(state) : cell("td", ""),
        numberCell("human_agreement", r.human_agreement, percent),
        numberCell("auto_verified_share", r.auto_verified_share, percent),
        numberCell("seconds_per_mask", r.seconds_per_mask, seconds),
        numberCell("seconds_per_image", r.seconds_per_image, seconds),
        numberCell("masks_sent_back", r.masks_sent_back, fmt),
        numberCell("images_complete", r.images_complete, fmt),
      );
      rows.push(row);
    };
    for (const r of figures.model_versions) {
      add(`model-${r.version}`, `Model v${r.version}`, r.state, r, plural(r.masks, "mask"));
    }
    for (const r of figures.verifiers) {
      if (r.verifier === null) {
        add("people", "People only", "", r, "verdicts while no verifier was promoted");
      } else {
        add(`verifier-${r.verifier}`, `Verifier v${r.verifier}`, r.state, r, r.reason);
      }
    }
    $("verification-empty").hidden = rows.length > 0;
    $("verification-figures").hidden = rows.length === 0;
    $("verification-rows").replaceChildren(...rows);
  }

  renderVersionCharts(versions) {
    // A first cycle compared with GrabCut: GrabCut's figures open the line.
    const points = [];
    const grabcut = versions.find((v) => v.compared_with === "grabcut" && v.baseline_figures);
    if (grabcut) points.push({ x: "GrabCut", figures: grabcut.baseline_figures });
    for (const v of versions) {
      const sets = shippedSets(v.shipped_figures);
      points.push({ x: `v${v.version}`, figures: v.figures || (sets.length ? sets[0][1] : null) });
    }
    const x = { type: "band", values: points.map((p) => p.x), label: "model version" };
    const series = (metrics) =>
      metrics.map((m) => ({
        ...m,
        points: points.map((p) => ({ x: p.x, y: figure(p.figures, m.key) })),
      }));
    const shipped = versions.some((v) => !v.figures && shippedSets(v.shipped_figures).length);
    const note = shipped
      ? "Version 0: its shipped card's first held-out set; later versions: their cycle's validation images."
      : "Each version on its cycle's validation images.";
    const empty = "No figures yet: a retraining cycle measures each version it trains.";
    chart($("chart-miou"), {
      kind: "line",
      title: "Mean IoU after 1, 3 and 5 clicks",
      x,
      y: { label: "mIoU", max: 1, format: (v) => v.toFixed(2) },
      series: series(METRICS.miou),
      empty,
      note,
    });
    chart($("chart-noc"), {
      kind: "line",
      title: "Clicks to reach IoU 0.85 and 0.90 (lower is better)",
      x,
      y: { label: "clicks", format: (v) => trim(v, 1), unit: "clicks" },
      series: series(METRICS.noc),
      empty,
      note,
    });
  }

  // ---------------------------------------------------------------- jobs

  renderJobs() {
    const jobs = this.data.jobs;
    const active = jobs.filter((job) => ACTIVE.includes(job.state)).length;
    $("jobs-active").textContent = active ? `${active} running or queued` : "";
    $("jobs-empty").hidden = jobs.length > 0;
    $("job-list").replaceChildren(...jobs.map((job) => jobItem(job)));
  }

  /** A job event from the websocket: update its line, and reload once it is over. */
  onJob(event) {
    if (!this.data) return;
    const known = this.data.jobs.find((job) => job.id === event.id);
    if (!known) {
      this.load();
      return;
    }
    const wasActive = ACTIVE.includes(known.state);
    Object.assign(known, {
      state: event.state,
      progress: event.progress,
      message: event.message,
    });
    const item = document.querySelector(`#job-list [data-job-id="${event.id}"]`);
    if (item) item.replaceWith(jobItem(known));
    if (wasActive && !ACTIVE.includes(event.state)) this.load(); // new version, new masks
  }

  connect() {
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${window.location.host}${this.config.urls.socket}`);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.socketAttempt = 0;
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.event === "job") this.onJob(message);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4403 || this.stopped) return; // 4403: no access, retrying cannot help
      const wait = RETRY_SECONDS[Math.min(this.socketAttempt, RETRY_SECONDS.length - 1)];
      this.socketAttempt += 1;
      window.setTimeout(() => this.connect(), wait * 1000);
    });
  }

  /** No more reloads or socket; resolves once no request is in flight (tests). */
  async stop() {
    this.stopped = true;
    window.clearTimeout(this.pollTimer);
    if (this.socket) this.socket.close();
    while (this.loading) await this.loading;
  }

  // ---------------------------------------------------------------- page

  say(text, kind = "info") {
    const element = $("dash-status");
    element.textContent = text;
    element.dataset.kind = kind;
  }

  bind() {
    const select = $("stage-select");
    if (select) select.addEventListener("change", () => this.setStage(select.value));
    const retrain = $("retrain");
    if (retrain) retrain.addEventListener("click", () => this.retrain());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.load();
    });
  }

  /** For tests and the browser console. */
  debugHandle() {
    return {
      loads: () => this.loads,
      data: () => this.data,
      reload: () => this.load(),
      stop: () => this.stop(),
    };
  }
}

// ---------------------------------------------------------------- cells

function cell(tag, text, className = "") {
  const node = document.createElement(tag);
  node.textContent = text;
  if (className) node.className = className;
  return node;
}

function numberCell(key, value, format) {
  const node = cell("td", value === null || value === undefined ? "—" : format(value), "num");
  node.dataset.key = key;
  return node;
}

function emptyRow(columns, text) {
  const row = document.createElement("tr");
  const node = cell("td", text, "none");
  node.colSpan = columns;
  row.append(node);
  return row;
}

function emptyCells(count) {
  const fragment = document.createDocumentFragment();
  for (let i = 0; i < count; i += 1) fragment.append(cell("td", ""));
  return fragment;
}

function stageKey(stage) {
  const key = document.createElement("span");
  key.className = "stage-key";
  key.style.background = STAGE_COLORS[stage] || "#6b7280";
  key.setAttribute("aria-hidden", "true");
  return key;
}

function badge(text, title) {
  const node = cell("span", text, "version-badge");
  node.title = title;
  return node;
}

function stateCell(state) {
  const node = cell("td", "");
  node.dataset.key = "state";
  node.append(cell("span", state, `version-state version-${state}`));
  return node;
}

function figureCells(figures) {
  return [...METRICS.miou, ...METRICS.noc].map((m) => {
    const value = figure(figures, m.key);
    return numberCell(m.key, value, (v) =>
      m.key.startsWith("miou") ? v.toFixed(3) : v.toFixed(2),
    );
  });
}

function comparedCell(version, sets) {
  let text = "—";
  let title = "";
  if (version.compared_with) {
    text = version.compared_with === "grabcut" ? "GrabCut" : version.compared_with;
    const base = version.baseline_figures;
    if (base) {
      const parts = [...METRICS.miou, ...METRICS.noc]
        .filter((m) => figure(base, m.key) !== null)
        .map((m) => `${m.name} ${trim(figure(base, m.key), 3)}`);
      title = `${text} on the same validation objects: ${parts.join(", ")}`;
    }
  } else if (sets.length) {
    return shippedCell(sets[0][0], "shipped card");
  }
  const node = cell("td", text);
  node.dataset.key = "compared_with";
  if (title) node.title = title;
  return node;
}

/** Version 0 is not compared with anything: its card's figures on a held-out set. */
function shippedCell(set, label) {
  const node = cell("td", "", "source");
  node.dataset.key = "compared_with";
  node.title = `The starter model's card: its figures on the held-out set ${set}`;
  if (label) node.append(cell("span", label, "source-kind"));
  node.append(cell("span", set, "set"));
  return node;
}

/** The gain on the gate's metric, with its 95% interval; green when the interval clears 0. */
function gainCell(version) {
  const node = cell("td", "", "num gain");
  node.dataset.key = "gain";
  if (version.gain === null || version.gain === undefined) {
    node.textContent = "—";
    return node;
  }
  const metric = metricName(version.metric);
  const digits = String(version.metric || "").startsWith("miou") ? 3 : 2;
  const signed = (v) => `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(v).toFixed(digits)}`;
  const [lo, hi] = version.interval || [null, null];
  node.append(cell("span", `${signed(version.gain)} ${metric}`, "gain-value"));
  if (lo !== null && hi !== null) {
    node.append(cell("span", `[${signed(lo)}, ${signed(hi)}]`, "interval"));
    node.classList.add(lo > 0 ? "good" : "unsure");
    node.title =
      lo > 0
        ? "Better beyond the noise: the 95% interval excludes zero"
        : "Not better beyond the noise: the 95% interval includes zero or less";
  }
  return node;
}

/** A share of the review as a percentage, green at or above the paper's figure. */
function shareCell(key, review) {
  const share = review ? review[key] : null;
  const node = numberCell(key, share, (v) => `${trim(v * 100, 1)}%`);
  const reference = PAPER_SHARES[key];
  if (share !== null && share !== undefined && reference !== undefined) {
    node.classList.add(share >= reference ? "good" : "below");
    node.title = `SA-1B paper: ${reference * 100}% (${review.reviewed} reviewed)`;
  }
  return node;
}

function jobItem(job) {
  const item = document.createElement("li");
  item.className = "job";
  item.dataset.jobId = String(job.id);
  item.dataset.state = job.state;
  const head = document.createElement("div");
  head.className = "job-head";
  const when = document.createElement("time");
  when.dateTime = job.created_at;
  when.textContent = ago(job.created_at);
  when.title = new Date(job.created_at).toLocaleString();
  head.append(
    cell("span", JOB_KINDS[job.kind] || job.kind, "job-kind"),
    cell("span", `#${job.id}`, "job-id"),
    cell("span", job.state, `job-state job-${job.state}`),
    when,
  );
  const percent = Math.round(Math.max(0, Math.min(1, job.progress || 0)) * 100);
  const bar = document.createElement("div");
  bar.className = "progress";
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `${JOB_KINDS[job.kind] || job.kind} #${job.id}`);
  const fill = document.createElement("span");
  fill.style.width = `${percent}%`;
  bar.append(fill);
  const line = document.createElement("div");
  line.className = "job-progress";
  line.append(bar, cell("span", `${percent}%`, "percent"));
  const waiting = job.state === "queued" ? "Waiting for a worker." : "";
  item.append(head, line);
  const message = job.message || waiting;
  if (message) item.append(cell("p", message, "job-message"));
  return item;
}

// ---------------------------------------------------------------- helpers

function sortByStage(items, stageOf) {
  const rank = (stage) => {
    const at = STAGE_ORDER.indexOf(stage);
    return at < 0 ? STAGE_ORDER.length : at;
  };
  return [...items].sort((a, b) => rank(stageOf(a)) - rank(stageOf(b)));
}

/** [[set, figures], ...] of a shipped card's per-set figures ({"davis345": {...}}). */
function shippedSets(shipped) {
  if (!shipped || typeof shipped !== "object") return [];
  return Object.entries(shipped).filter(
    ([, figures]) => figures && typeof figures === "object" && !Array.isArray(figures),
  );
}

/** A figure by key, "noc@85" also found as "noc85"; null when absent. */
function figure(figures, key) {
  if (!figures) return null;
  const value = key in figures ? figures[key] : figures[key.replace("@", "")];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function metricName(metric) {
  const known = [...METRICS.miou, ...METRICS.noc].find((m) => m.key === metric);
  return known ? known.name : metric || "";
}

function trim(value, digits) {
  return String(Number(value.toFixed(digits)));
}

function plural(n, word) {
  return `${fmt(n)} ${word}${n === 1 ? "" : "s"}`;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function ago(iso) {
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString([], { month: "short", day: "numeric" });
}

const dashboard = new Dashboard(JSON.parse($("dashboard-config").textContent));
window.maskloop = dashboard.debugHandle();
dashboard.start();
